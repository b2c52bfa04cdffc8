"""Where LST and LoRA part on the instruction sample: exact match per kind of question, and how far the frozen
backbone is from each answer before any training.

    python benchmarks/instruction_per_kind.py [--name instruction_tuning_smollm2_defaults] [--out NAME] [--threads 2]

Two measurements:

1. **The backbone at step 0.** For every validation question, rendered exactly as training renders it (SmolLM2's
   chat template, ``laddertune.training.generative.prepare_generative``), the rank of the answer's first token in
   the frozen backbone's next-token distribution at the answer's first position (0: its top guess). An LST model
   with the final shortcut starts as this distribution and can only add ``Up(side)`` to the state it comes from;
   where the backbone ranks the answer far down, the side network has to compute the answer itself from the
   taps, while LoRA and full fine-tuning change the backbone's own computation.
2. **Each trained run, per kind.** For every run folder that ``benchmarks/instruction_tuning.py --name NAME`` left
   under ``runs/NAME/<method>-s<seed>``, ``laddertune predict`` generates the answers of the validation questions
   with the run's best checkpoint (greedy, the run's recorded generation settings), and exact match is counted per
   kind of question, after the normalisation the training score uses
   (:func:`laddertune.data.generation_metrics.normalize_answer`). A wrong answer counts as *copied* when it is made
   only of words of the question (e.g. "lady" for the plural of "lady", "six" for "six plus eight").

Writes ``benchmarks/results/instruction_per_kind_smollm2.json`` and ``.md`` (``--out``: another name). Run folders
are not committed (the ``runs/`` folder is ignored): run ``benchmarks/instruction_tuning.py`` first.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from laddertune.data.generation_metrics import normalize_answer  # noqa: E402

DATA = ROOT / "laddertune" / "data" / "sample" / "instructions"
RESULTS = ROOT / "benchmarks" / "results"
OUT = "instruction_per_kind_smollm2"


def backbone_ranks(threads: int, max_length: int) -> list[int]:
    """Per validation row: the frozen backbone's rank of the answer's first token at the answer's first position."""
    import torch

    from laddertune.core.backbones import load_backbone, load_tokenizer
    from laddertune.data import IGNORE_INDEX
    from laddertune.data.generative_task import GenerativeTask, load_generative_splits
    from laddertune.training.generative import prepare_generative

    torch.set_num_threads(threads)
    tokenizer = load_tokenizer("smollm2")
    task = GenerativeTask("prompt_completion")
    splits = load_generative_splits(
        task, train_file=DATA / "train.jsonl", validation_file=DATA / "validation.jsonl"
    )
    data = prepare_generative(
        task, splits, tokenizer, "causal_lm", max_length=max_length, max_new_tokens=8, packing=False
    )
    model = load_backbone("smollm2", "causal_lm").eval()
    ranks = []
    with torch.inference_mode():
        for row in data.validation:
            ids = torch.tensor(row["input_ids"])
            labels = torch.tensor(row["labels"])
            first = int((labels != IGNORE_INDEX).nonzero()[0])  # the answer's first token
            logits = model(ids[None, :first]).logits[0, -1]
            ranks.append(int((logits > logits[ids[first]]).sum()))
    return ranks


def predictions(run: Path, threads: int) -> list[str]:
    """``laddertune predict`` with the run's best checkpoint on the validation questions: one answer per row."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pred.jsonl"
        argv = ["predict", "--checkpoint", str(run / "checkpoint-best"), "--input", str(DATA / "validation.jsonl"),
                "--output", str(out), "--no-progress", "--threads", str(threads)]  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "laddertune.cli", *argv], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"laddertune predict failed on {run}: {done.stderr.strip().splitlines()[-1:]}")
        return [json.loads(line)["generated"] for line in out.read_text().splitlines()]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--name", default="instruction_tuning_smollm2_defaults", help="the instruction benchmark's --name"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--out", default=OUT, help="the results' file name under benchmarks/results (.json and .md)"
    )
    p.add_argument("--max-length", type=int, default=96)
    args = p.parse_args(argv)
    rows = [json.loads(line) for line in (DATA / "validation.jsonl").read_text().splitlines()]
    kinds = list(dict.fromkeys(r["task"] for r in rows))
    runs = sorted(p for p in (ROOT / "runs" / args.name).glob("*-s*") if (p / "checkpoint-best").is_dir())
    if not runs:
        raise SystemExit(f"no run folder under runs/{args.name}: run benchmarks/instruction_tuning.py first")

    ranks = backbone_ranks(args.threads, args.max_length)
    result = {
        "name": args.name,
        "kinds": kinds,
        "count": {k: sum(r["task"] == k for r in rows) for k in kinds},
    }
    result["backbone_rank"] = {
        k: {"median": statistics.median(x := [r for r, row in zip(ranks, rows, strict=True) if row["task"] == k]),
            "top10": sum(r < 10 for r in x)}
        for k in kinds
    }  # fmt: skip
    per_run = {}
    for run in runs:
        answers = predictions(run, args.threads)
        right, copied = defaultdict(int), defaultdict(int)
        for row, answer in zip(rows, answers, strict=True):
            exact = normalize_answer(answer) == normalize_answer(row["completion"])
            right[row["task"]] += exact
            copied[row["task"]] += not exact and bool(words(answer)) and words(answer) <= words(row["prompt"])
        per_run[run.name] = {"exact": dict(right), "copied": dict(copied), "answers": answers}
        print(f"[done] {run.name}: {sum(right.values())}/{len(rows)}", flush=True)
    result["runs"] = per_run
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")

    methods = sorted({name.rsplit("-s", 1)[0] for name in per_run})

    def mean_pct(method: str, key: str, kind: str) -> str:
        values = [100 * r[key].get(kind, 0) / result["count"][kind]
                  for name, r in per_run.items() if name.rsplit("-s", 1)[0] == method]  # fmt: skip
        return f"{statistics.mean(values):.0f}"

    seeds = {m: sorted(n.rsplit("-s", 1)[1] for n in per_run if n.rsplit("-s", 1)[0] == m) for m in methods}
    lines = [
        "# The instruction sample per kind of question (SmolLM2-135M)",
        "",
        f"Command: `python benchmarks/instruction_per_kind.py --name {args.name}"
        + ("" if args.out == OUT else f" --out {args.out}")
        + "`, on the run folders of "
        f"`python benchmarks/instruction_tuning.py --name {args.name}` "
        f"({'; '.join(m + ': seeds ' + ', '.join(s) for m, s in seeds.items())}).",
        "",
        "Backbone rank: the frozen backbone's rank of the answer's first token at the answer's first position "
        "(0: its top guess), the median over the kind's questions, and how many it ranks in its top 10. Exact "
        "match and copied: % of the kind's validation questions, the mean over seeds; copied: a wrong answer made "
        "only of words of the question.",
        "",
        "| kind | questions | backbone rank (median) | in top 10 | "
        + " | ".join(f"{m} exact %" for m in methods)
        + " | "
        + " | ".join(f"{m} copied %" for m in methods)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * (2 * len(methods)),
    ]
    for k in kinds:
        rank = result["backbone_rank"][k]
        lines.append(
            f"| {k} | {result['count'][k]} | {rank['median']:g} | {rank['top10']} | "
            + " | ".join(mean_pct(m, "exact", k) for m in methods)
            + " | "
            + " | ".join(mean_pct(m, "copied", k) for m in methods)
            + " |"
        )
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
