"""The paper's tables and figures, one command each, every run through ``laddertune train``.

    python benchmarks/suite.py table1 [--tasks cola sst2 mrpc stsb rte] [--methods full adapter lora bitfit prompt lst]
        [--seeds 0 1 2] [--steps 150] [--epochs 1] [--batch-size 32] [--max-length 128] [--device cpu|cuda]
    python benchmarks/suite.py table1 --backbone smollm2 --format causal --methods lst lora full --tasks sst2 rte
    python benchmarks/suite.py figure5   # LST r 32/16/8/4 against LoRA rank 4..32 and adapter reduction 64..8
    python benchmarks/suite.py figure6   # LST dropping N side layers against adapter/LoRA freezing the first N
    python benchmarks/suite.py figure7   # side init random / magnitude / Fisher, both pruning chains
    python benchmarks/suite.py figure8   # ladders (lst, random and magnitude init) / side-tuning / pruned alone
    python benchmarks/suite.py table1 --smoke --tasks sst2 --methods lst   # 3 steps: checks the plumbing only

Each run is ``python -m laddertune.cli train`` in a fresh process (so every method shares the data loading, the loop,
the memory meter and the timer; fresh memory and timing per run) with protocol ``dev`` (score: the best epoch on the
official GLUE dev set), the same budget for every method (steps, batch, max length, seed; the training examples are
a seeded subsample of ``ceil(steps / epochs) * batch`` examples) and each method's paper learning rate. The run
folder goes to ``runs/suite/<command>_<backbone>/<run>/``; one JSON per run to ``--output`` (default
``benchmarks/results/<command>_<backbone>/<run>.json``): the report's row (task, method, seed, score,
peak_train_gib, seconds_per_step, steps, batch_size, trainable_percent, and figure/variant/sweep/value) plus the
command line and its budget. A run whose JSON is present is skipped, so a cut-off sweep resumes where it stopped
(a finished run folder without its JSON is read back, not retrained). At the end the suite writes the combined
rows (``benchmarks/results/<command>_<backbone>.json``, a list of rows) and calls ``laddertune report`` on them
(``<output>/report/``: markdown tables with mean ± std over seeds, the PNG figures and training curves).
LST runs (``lst``, ``side-tuning``) share one tap cache (``runs/suite/tap_cache``; float32, exact): the backbone
runs once per training example of a task, and every later seed, r, kept-layer subset and epoch reads its taps.

Budgets (2 shared CPU cores, 1 thread per run, MiniLM, batch 32, length 128; step times measured in
``benchmarks/results/glue_minilm_sst2.md`` on SST-2: full 1.65 s, LoRA 1.15 s, LST 0.63 s without the tap cache):
the default 150 steps should cost about 2-5 minutes per run with its evaluation and the model load (an estimate
from those step times, not a measured sweep), so Table 1's default grid (5 tasks x 6 methods x 3 seeds = 90 runs)
is about 3-7.5 hours on CPU, Figure 5 (12 settings x 2 tasks x 3 seeds = 72 runs) and Figure 6 (lst, adapter,
lora x 4 drop counts x 2 x 3 = 72) about 2.5-6 hours each, Figure 7 (5 x 2 x 3 = 30 runs; Fisher over 256
examples took 32-69 s in ``figure7_init.md``) about 1-3 hours, Figure 8 (4 x 2 x 3 = 24) about 1-2 hours. A
``--smoke`` run (3 steps, MiniLM) took 15 s per run here. Measured at the budget the README's results use
(``--steps 96 --epochs 3 --batch-size 16 --max-length 64 --max-eval-samples 256``, two suite processes side by side):
Table 1's 90 runs took about 1 h 45 min of wall time, Figure 7's 30 about 25 min. 150 steps are far below the
paper's 10-20 epochs: the CPU numbers rank costs (memory, time) reliably and scores only where the methods leave
the majority floor. On a GPU (``--device cuda``) use the paper's budget, e.g. ``--steps 2000 --epochs 5 --batch-size 100``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's laddertune, also when it is not installed

from laddertune.errors import LadderTuneError  # noqa: E402
from laddertune.report import load_rows, write_report  # noqa: E402
from laddertune.report.rows import row_from_run  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
COMMANDS = ("table1", "figure5", "figure6", "figure7", "figure8")
TABLE1_TASKS = ("cola", "sst2", "mrpc", "stsb", "rte")
FIGURE_TASKS = ("sst2", "mrpc")
TABLE1_METHODS = ("full", "adapter", "lora", "bitfit", "prompt", "lst")
TAP_METHODS = ("lst", "side-tuning")  # the pruned side network runs no backbone: nothing to cache


@dataclass(frozen=True)
class Setting:
    """One column of a sweep: a method and its extra ``laddertune train`` flags, and how the report labels it."""

    method: str
    flags: tuple[str, ...] = ()
    variant: str | None = None
    sweep: str | None = None
    value: float | None = None

    @property
    def name(self) -> str:
        """The run's name part: ``lst``, ``lst-r16``, ``lora-lora_rank8``, ``lst-fisher-authors``..."""
        if self.sweep is not None:
            return f"{self.method}-{self.sweep}{self.value:g}"
        return self.variant or self.method


def settings(command: str, args: argparse.Namespace) -> list[Setting]:
    """The settings of ``command`` (each is run per task and seed)."""
    if command == "table1":
        return [Setting(m) for m in args.methods or TABLE1_METHODS]
    if command == "figure5":
        return (
            [Setting("lst", ("--reduction-factor", str(r)), sweep="r", value=r) for r in args.lst_r]
            + [Setting("lora", ("--lora-rank", str(r)), sweep="lora_rank", value=r) for r in args.lora_ranks]
            + [
                Setting("adapter", ("--adapter-reduction", str(r)), sweep="adapter_reduction", value=r)
                for r in args.adapter_reductions
            ]
        )
    if command == "figure6":
        out = []
        for method in args.methods or ("lst", "adapter", "lora"):
            for n in args.drop:
                if method == "lst":
                    flags = ("--side-layers", ",".join(map(str, kept_layers(args.layers, n)))) if n else ()
                    out.append(Setting("lst", flags, sweep="dropped_side_layers", value=n))
                else:
                    out.append(Setting(method, ("--freeze-layers", str(n)), sweep="frozen_layers", value=n))
        return out
    fisher = ("--fisher-samples", str(args.fisher_samples))
    if command == "figure7":
        out = [Setting("lst", variant="random")]
        for init in ("magnitude", "fisher"):
            for chain in ("residual", "authors"):
                flags = ("--init", init, "--pruning-chain", chain, *(fisher if init == "fisher" else ()))
                out.append(Setting("lst", flags, variant=f"{init}-{chain}"))
        return out
    if command == "figure8":
        return [
            Setting("lst", variant="ladders"),
            Setting("lst", ("--init", "magnitude"), variant="ladders-magnitude"),
            Setting("side-tuning", variant="side-tuning"),
            Setting("pruned", ("--init", "magnitude"), variant="pruned-magnitude"),
        ]
    raise ValueError(command)


def kept_layers(layers: int, drop: int) -> list[int]:
    """The side layers kept when ``drop`` of ``layers`` are dropped, spread evenly from layer 0 (the paper drops
    0, 4, 8 of t5-base's 12; of MiniLM's 6, dropping 2 keeps 1, 2, 4, 5 and dropping 3 keeps 1, 3, 5)."""
    if not 0 <= drop < layers:
        raise SystemExit(
            f"error: cannot drop {drop} of {layers} side layers (pass --layers for the backbone)"
        )
    dropped = {round(i * layers / drop) for i in range(drop)} if drop else set()
    return [i for i in range(layers) if i not in dropped]


def train_argv(setting: Setting, task: str, seed: int, run_dir: Path, args: argparse.Namespace) -> list[str]:
    """The ``laddertune train`` command line of one run."""
    samples = math.ceil(args.steps / args.epochs) * args.batch_size
    argv = [
        "train",
        "--task",
        task,
        "--method",
        setting.method,
        "--backbone",
        args.backbone,
        "--seed",
        str(seed),
    ]
    argv += ["--protocol", "dev", "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    argv += [
        "--max-length",
        str(args.max_length),
        "--max-train-samples",
        str(samples),
        "--device",
        args.device,
    ]
    argv += ["--memory-steps", str(args.memory_steps), "--log-every", str(args.log_every), "--no-progress"]
    argv += ["--output-dir", str(run_dir), *setting.flags]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.format:
        argv += ["--format", args.format]
    if args.max_eval_samples:
        argv += ["--max-eval-samples", str(args.max_eval_samples)]
    if args.threads and not args.device.startswith("cuda"):
        argv += ["--threads", str(args.threads)]
    if args.tap_cache and setting.method in TAP_METHODS:
        argv += ["--tap-cache", args.tap_cache]
    return argv + shlex.split(args.train_args)


def run_one(command: str, setting: Setting, task: str, seed: int, args: argparse.Namespace) -> dict | None:
    """Train one run (or read its finished folder) and write its JSON; None when it failed."""
    name = f"{task}-{setting.name}-s{seed}"
    out_json, run_dir = Path(args.output) / f"{name}.json", Path(args.runs_dir) / name
    if out_json.is_file():
        print(f"[skip] {name}: {out_json} exists", flush=True)
        return json.loads(out_json.read_text())
    argv = train_argv(setting, task, seed, run_dir, args)
    t0, trained = time.perf_counter(), not (run_dir / "results.json").is_file()
    if trained:
        if (run_dir / "train_config.json").is_file():  # an unfinished run of an earlier sweep: start it over
            argv.append("--overwrite")
        print(f"[run ] {name}: laddertune {' '.join(argv)}", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "laddertune.cli", *argv], cwd=ROOT, capture_output=True, text=True
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            print(f"[fail] {name}: exit {done.returncode}: {' / '.join(tail)}", flush=True)
            return None
    row = dataclasses.replace(
        row_from_run(run_dir),
        figure=command,
        variant=setting.variant,
        sweep=setting.sweep,
        value=setting.value,
    )
    results = json.loads((run_dir / "results.json").read_text())
    record = row.to_dict()
    if row.metrics_path is not None:  # relative to the results folder, so the folder can move with runs/
        record["metrics_path"] = os.path.relpath(row.metrics_path, args.output)
    record.update(
        backbone=args.backbone,
        epochs=results["effective"]["epochs"],
        lr=results["effective"]["lr"],
        max_length=args.max_length,
        train_examples=results["data"]["sizes"]["train"],
        eval_examples=results["data"]["sizes"]["validation"],
        device=results["compute"]["device"],
        tap_cache=bool(args.tap_cache and setting.method in TAP_METHODS),
        tap_cache_built=_cache_built(run_dir / "metrics.jsonl"),
        wall_seconds=results["timing"]["wall_seconds"],
        run_dir=_shown(run_dir),
        command=["laddertune", *argv],
    )
    Path(args.output).mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=2) + "\n")
    cost = f"peak {_num(row.peak_train_gib, 3)} GiB, {_num(row.seconds_per_step, 3)} s/step"
    print(f"[{'done' if trained else 'read'}] {name}: score {row.score:.2f}, {cost} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
    return record


def _cache_built(metrics: Path) -> bool | None:
    """Whether this run built its tap cache entry (True: its wall time includes the backbone pass that filled it),
    reused one (False), or used none (None), from its ``metrics.jsonl``."""
    if not metrics.is_file():
        return None
    for line in metrics.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("type") == "tap_cache" and "built" in record:
            return bool(record["built"])
    return None


def _num(v: float | None, digits: int) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _shown(path: Path) -> str:
    """``path`` relative to the checkout when it lies inside it (results stay valid in another clone)."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("command", choices=COMMANDS)
    p.add_argument("--tasks", nargs="+", default=None, help="default: Table 1's five, the figures' sst2 mrpc")
    p.add_argument("--methods", nargs="+", default=None, help="table1 and figure6: the methods to run")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=150, help="training steps per run (the budget)")
    p.add_argument(
        "--epochs", type=int, default=1, help="the steps over this many epochs (LST's tap cache pays later)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--max-eval-samples", type=int, default=None, help="default: the whole dev set")
    p.add_argument("--memory-steps", type=int, default=3, help="measured steps of the peak-memory meter")
    p.add_argument("--log-every", type=int, default=5, help="metrics.jsonl loss records (training curves)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run (the machine is shared)")
    p.add_argument(
        "--train-args",
        default="",
        help="more laddertune train flags for every run, e.g. '--side-attention-heads 3'",
    )
    p.add_argument("--backbone", default="minilm", help="alias (minilm, smollm2) or a local folder")
    p.add_argument("--format", default=None, help="classification, text2text or causal (SmolLM2's text form)")
    p.add_argument(
        "--data-dir", default=os.environ.get("LADDERTUNE_DATA_DIR", str(ROOT.parent / "shared/data/glue"))
    )
    p.add_argument("--tap-cache", default=str(ROOT / "runs" / "suite" / "tap_cache"), help="'' turns it off")
    p.add_argument(
        "--lst-r", nargs="+", type=int, default=[32, 16, 8, 4], help="figure5: LST reduction factors"
    )
    p.add_argument("--lora-ranks", nargs="+", type=int, default=[4, 8, 16, 32], help="figure5")
    p.add_argument("--adapter-reductions", nargs="+", type=int, default=[64, 32, 16, 8], help="figure5")
    p.add_argument("--layers", type=int, default=6, help="figure6: the backbone's layers (MiniLM 6)")
    p.add_argument("--drop", nargs="+", type=int, default=[0, 2, 3, 4], help="figure6: layers dropped/frozen")
    p.add_argument("--fisher-samples", type=int, default=256, help="figure7/8: examples of the Fisher init")
    p.add_argument(
        "--output", default=None, help="per-run JSONs; default benchmarks/results/<command>_<backbone>/"
    )
    p.add_argument(
        "--rows-file",
        default=None,
        help="combined rows; default benchmarks/results/<command>_<backbone>.json",
    )
    p.add_argument("--runs-dir", default=None, help="run folders; default runs/suite/<command>_<backbone>/")
    p.add_argument("--smoke", action="store_true", help="3 steps, batch 4, length 32, 16 dev rows, 1 seed")
    args = p.parse_args(argv)
    if args.smoke:
        # 3 steps: a warm-up, a measured and a timed one, so that every field of a row is filled
        args.steps, args.epochs, args.batch_size, args.max_length, args.memory_steps = 3, 1, 4, 32, 1
        args.max_eval_samples, args.seeds, args.log_every = 16, args.seeds[:1], 1
    tag = f"{args.command}_{Path(args.backbone).name}" + ("_smoke" if args.smoke else "")
    args.tasks = args.tasks or list(TABLE1_TASKS if args.command == "table1" else FIGURE_TASKS)
    args.output = args.output or str(RESULTS / tag)
    args.rows_file = args.rows_file or str(RESULTS / f"{tag}.json")
    args.runs_dir = args.runs_dir or str(ROOT / "runs" / "suite" / tag)
    for name in ("output", "rows_file", "runs_dir", "tap_cache"):  # the runs start in ROOT
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.data_dir and not Path(args.data_dir).is_dir():
        args.data_dir = None  # then laddertune train takes the hub, or its embedded SST-2 sample
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    grid = [(s, t, seed) for t in args.tasks for s in settings(args.command, args) for seed in args.seeds]
    print(f"{args.command}: {len(grid)} runs ({args.steps} steps, batch {args.batch_size}, length "
          f"{args.max_length}, {args.device}) -> {args.output}", flush=True)  # fmt: skip
    records, failed = [], 0
    for setting, task, seed in grid:
        record = run_one(args.command, setting, task, seed, args)
        failed += record is None
        if record is not None:
            records.append(record)
    if not records:
        print("no run finished: no rows, no report", file=sys.stderr)
        return 1
    rows_dir = Path(args.rows_file).parent
    for record in records:  # the curves' paths relative to the rows file, as they were to the per-run JSONs
        if "metrics_path" in record:
            where = os.path.normpath(Path(args.output) / record["metrics_path"])
            record["metrics_path"] = os.path.relpath(where, rows_dir)
    Path(args.rows_file).write_text(json.dumps(records, indent=2) + "\n")
    try:
        written = write_report(load_rows([args.rows_file]), Path(args.output) / "report")
    except LadderTuneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"rows: {args.rows_file} ({len(records)} runs, {failed} failed); report: {len(written)} files in "
          f"{Path(args.output) / 'report'}", flush=True)  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
