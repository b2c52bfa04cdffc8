"""A LadderModel inside the Hugging Face ecosystem: what a plain ``Trainer`` saves, and greedy generation speed.

    python benchmarks/hf_model.py save-size
    python benchmarks/hf_model.py generation [--baseline-src /tmp/lt-6149ce4]

``save-size``: an LST MiniLM-L6 classifier (r=8, 2 labels) trained for 2 steps by a plain ``transformers.Trainer``,
then ``trainer.save_model(dir)``; reports the bytes of the weight files and of the whole folder.

``generation``: greedy tokens/s of a SmolLM2-135M LadderModel (r=8, every layer, fresh side network) on 4 fixed
chat prompts, left-padded, exactly ``--new-tokens`` new tokens each (``min_new_tokens`` = ``max_new_tokens``), one
torch thread: ``model.generate()`` (transformers'), the backbone's own ``generate`` as a reference, and with
``--baseline-src`` (a source tree of laddertune before the move: ``git archive 6149ce4 | tar -x -C DIR``) that
tree's hand-written decoding loop, run over the same model object. One process: each runs once to warm up, then
they take turns for ``--rounds`` rounds, so the load of a shared machine falls on all of them; medians and bests
per implementation. Writes ``results/hf_model_<part>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PROMPTS = [
    "Write a haiku about autumn leaves.",
    "What is the capital of France? Answer in one sentence.",
    "Explain gradient descent to a ten-year-old.",
    "List three uses of a paperclip.",
]


def _folder_bytes(folder: Path) -> dict:
    files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
    weights = {n: s for n, s in files.items() if n.endswith((".safetensors", ".bin", ".pt", ".pth"))}
    return {"files": files, "weight_bytes": sum(weights.values()), "folder_bytes": sum(files.values())}


def save_size() -> dict:
    import torch
    from transformers import Trainer, TrainingArguments

    from laddertune import LadderConfig, get_ladder_model
    from laddertune.core.backbones import load_backbone, load_tokenizer

    torch.manual_seed(0)
    tokenizer = load_tokenizer("minilm")
    model = get_ladder_model(load_backbone("minilm", "sequence_classification", num_labels=2), LadderConfig())
    enc = tokenizer(["a good film", "a bad film"] * 4, padding=True, return_tensors="pt")
    data = [
        {"input_ids": i, "attention_mask": m, "labels": torch.tensor(k % 2)}
        for k, (i, m) in enumerate(zip(enc["input_ids"], enc["attention_mask"], strict=True))
    ]
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True,
            save_strategy="no", disable_tqdm=True,
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=data)
        trainer.train()
        trainer.save_model(f"{tmp}/final")
        sizes = _folder_bytes(Path(tmp) / "final")
    side = sum(p.numel() for p in model.side.parameters())
    return {
        "backbone": "minilm (all-MiniLM-L6-v2), sequence_classification, 2 labels",
        "ladder": "LadderConfig() defaults (r=8, every layer)",
        "side_parameters": side,
        **sizes,
        "weight_mb": sizes["weight_bytes"] / 1e6,
        "folder_mb": sizes["folder_bytes"] / 1e6,
    }


def _old_loop(baseline_src: Path):
    """The hand-written decoding loop of ``baseline_src`` (laddertune before ``generate()`` was transformers'), as a
    function over today's LadderModel: its two modules are loaded as a package whose ``LadderCache`` is today's (the
    old loop only sets and reorders ``cache.backbone`` / ``cache.side``, which today's cache still has)."""
    package = Path(tempfile.mkdtemp()) / "old_loop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cache.py").write_text("from laddertune.core.cache import LadderCache  # noqa: F401\n")
    for name in ("generation.py", "generation_options.py"):
        (package / name).write_text((baseline_src / "laddertune" / "core" / name).read_text())
    sys.path.insert(0, str(package.parent))
    from old_loop.generation import generate

    return generate


def generation(args) -> dict:
    """Every implementation on the same model and prompts, in one process, timed in turn round after round."""
    import torch

    torch.set_num_threads(1)
    from laddertune import LadderConfig, get_ladder_model
    from laddertune.core.backbones import load_backbone, load_tokenizer

    tokenizer = load_tokenizer("smollm2")
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in PROMPTS
    ]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    backbone = load_backbone("smollm2", "causal_lm").eval()
    torch.manual_seed(0)
    model = get_ladder_model(
        backbone, LadderConfig(side_layer_stride=1)
    ).eval()  # a side layer on each of the 30
    kw = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    runs = {
        "ladder_generate": lambda: model.generate(input_ids=ids, attention_mask=mask, **kw),
        "backbone_generate": lambda: backbone.generate(input_ids=ids, attention_mask=mask, **kw),
    }
    if args.baseline_src:
        loop = _old_loop(Path(args.baseline_src))
        runs["hand_written_loop"] = lambda: loop(model, ids, mask, **kw)
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    tokens = {}
    with torch.no_grad():
        for name, run in runs.items():  # warm-up, and the tokens each returns
            tokens[name] = run()[:, ids.shape[1] :].tolist()
        for _ in range(args.rounds):  # in turn: slow phases of a shared machine hit every implementation
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - start)
    new_tokens = len(PROMPTS) * args.new_tokens
    summary = {
        name: {
            "seconds": secs,
            "tokens_per_second_median": new_tokens / statistics.median(secs),
            "tokens_per_second_best": new_tokens / min(secs),
        }
        for name, secs in seconds.items()
    }
    result = {
        "backbone": "smollm2 (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised to float32), causal_lm",
        "ladder": "LadderConfig() defaults (r=8, every layer, final shortcut), fresh side network",
        "prompts": PROMPTS,
        "prompt_tokens": int(mask.sum()),
        "padded_length": ids.shape[1],
        "new_tokens_per_prompt": args.new_tokens,
        "threads": 1,
        "rounds": args.rounds,
        "runs": summary,
        "same_tokens_as_backbone": tokens["ladder_generate"] == tokens["backbone_generate"],
    }
    if args.baseline_src:
        new, old = summary["ladder_generate"], summary["hand_written_loop"]
        result["baseline_src"] = str(args.baseline_src)
        result["speed_ratio_generate_over_loop"] = {
            "median": new["tokens_per_second_median"] / old["tokens_per_second_median"],
            "best": new["tokens_per_second_best"] / old["tokens_per_second_best"],
        }
        result["same_tokens_as_loop"] = tokens["ladder_generate"] == tokens["hand_written_loop"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["save-size", "generation"])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--baseline-src", help="a laddertune source tree with the hand-written decoding loop")
    args = parser.parse_args()
    result = save_size() if args.part == "save-size" else generation(args)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"hf_model_{args.part.replace('-', '_')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    shown = {k: v for k, v in result.items() if k not in ("runs", "files", "prompts")}
    if "runs" in result:
        shown["tokens_per_second_median"] = {
            k: v["tokens_per_second_median"] for k, v in result["runs"].items()
        }
    print(json.dumps(shown, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
