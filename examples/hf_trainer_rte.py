"""Train LST with a plain ``transformers.Trainer``: side-only checkpoints, resumable.

    python examples/hf_trainer_rte.py --data-dir /work/shared/data/glue --output-dir /tmp/lst-trainer --max-steps 50
    python examples/hf_trainer_rte.py ... --resume      # continues from the newest checkpoint-N

Every ``checkpoint-N`` (and ``final/``) holds ``ladder_model.safetensors`` + ``ladder_config.json``: the side
network, never the frozen MiniLM backbone. ``LadderModel.from_pretrained(output_dir + "/final")`` loads it back
together with its recorded backbone.
"""

from __future__ import annotations

import argparse

import datasets
import numpy as np
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with rte/train.jsonl and rte/validation.jsonl")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args()

    tokenizer = load_tokenizer("minilm")
    model = get_ladder_model(load_backbone("minilm", "sequence_classification", num_labels=2), LadderConfig())
    files = {s: f"{args.data_dir}/rte/{s}.jsonl" for s in ("train", "validation")}
    data = datasets.load_dataset("json", data_files=files)
    data = data.map(
        lambda b: tokenizer(b["sentence1"], b["sentence2"], truncation=True, max_length=128),
        batched=True,
        remove_columns=["sentence1", "sentence2", "idx"],
    ).rename_column("label", "labels")

    def accuracy(pred):
        return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        warmup_steps=max(1, args.max_steps // 10),
        save_steps=max(1, args.max_steps // 4),
        eval_strategy="steps",
        eval_steps=max(1, args.max_steps // 4),
        logging_steps=10,
        report_to=[],
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    trainer.train(resume_from_checkpoint=get_last_checkpoint(args.output_dir) if args.resume else None)
    trainer.save_model(f"{args.output_dir}/final")
    print(trainer.evaluate())


if __name__ == "__main__":
    main()
