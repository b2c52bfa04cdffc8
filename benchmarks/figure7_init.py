"""The paper's Figure 7 (side-network initialisation: random vs weight magnitude vs Fisher), small and real, on CPU.

    nice -n 10 python benchmarks/figure7_init.py --out-dir /tmp/fig7 --data-dir ../shared/data/glue
    python benchmarks/figure7_init.py --from-json          # rewrite the .md from the saved JSON only

Offline MiniLM backbone (BERT, 6 layers, 384 wide, classification head), GLUE RTE and MRPC, protocol ``dev``
(train on train, score on the official dev set). Per task, five configurations with the same budget:
``random``, and ``magnitude`` / ``fisher`` each with the ``residual`` and the ``authors`` pruning chain. Every run is
one ``laddertune.training.train(TrainConfig.from_flat(...))`` call, so all share the loop, the data order and the seed; only the
side network's starting weights differ. Writes benchmarks/results/figure7_init.json (after every run, so a cut-off
sweep keeps what finished) and figure7_init.md.

``TrainConfig`` has no field for the pruning chain or the number of Fisher examples (``LadderConfig`` has both), so
this script wraps ``laddertune.get_ladder_model`` — which ``trainer.build_model`` calls — to set them, and to time the
initialisation (Fisher included). The side network's saved ``ladder_config.json`` is read back after every run to
check which chain and Fisher count were actually used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch

import laddertune
from laddertune.training import train
from laddertune.training.config import TrainConfig

RESULTS = Path(__file__).parent / "results"
CONFIGS = [("random", None), ("magnitude", "residual"), ("magnitude", "authors"), ("fisher", "residual"),
           ("fisher", "authors")]  # fmt: skip
_HOOK: dict = {}  # what the wrapped get_ladder_model applies to the next run, and what it measured


def _install_hook() -> None:
    """Route ``pruning_chain`` and ``fisher_samples`` into the LadderConfig that ``trainer.build_model`` builds."""
    original = laddertune.get_ladder_model

    def get_ladder_model(backbone, config, calibration_data=None):
        config = dataclasses.replace(config, **_HOOK["ladder"])
        t0 = time.perf_counter()
        model = original(backbone, config, calibration_data=calibration_data)
        _HOOK["init_seconds"] = time.perf_counter() - t0
        return model

    laddertune.get_ladder_model = get_ladder_model


class _FisherLog(logging.Handler):
    """Keeps the importance module's own summary line ("Fisher importance: N examples (M vmapped) in Xs")."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Fisher importance"):
            _HOOK.setdefault("fisher_log", []).append(record.getMessage())


def run_one(args, task: str, init: str, chain: str | None, r: int) -> dict:
    name = f"{task}-r{r}-{init}" + (f"-{chain}" if chain else "")
    ladder = {"fisher_samples": args.fisher_samples}
    if chain:
        ladder["pruning_chain"] = chain
    _HOOK.clear()
    _HOOK["ladder"] = ladder
    config = TrainConfig.from_flat(
        task=task,
        backbone="minilm",
        reduction_factor=r,
        init=init,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_length=args.max_length,
        max_train_samples=args.max_train_samples.get(task),
        max_eval_samples=args.max_eval_samples,
        data_dir=args.data_dir,
        output_dir=str(Path(args.out_dir) / name),
        memory_steps=args.memory_steps,
        log_every=1,
        overwrite=True,
    )
    losses: list[tuple[int, float]] = []  # (epoch, loss) per step

    def on_record(record: dict) -> None:
        if record.get("type") == "train":
            losses.append((record["epoch"], record["loss"]))
        elif record.get("type") == "eval":
            print(f"  {name} epoch {record['epoch']}: {record['metrics']}", flush=True)

    print(f"[{time.strftime('%H:%M:%S')}] {name}", flush=True)
    t0 = time.perf_counter()
    results = train(config, on_record=on_record)
    wall = time.perf_counter() - t0
    saved = json.loads((Path(config.run.output_dir) / "checkpoint-best" / "ladder_config.json").read_text())
    validation = results["metrics"]["validation"]
    per_epoch = [
        sum(loss for e, loss in losses if e == epoch) / max(1, sum(1 for e, _ in losses if e == epoch))
        for epoch in range(1, results["effective"]["epochs"] + 1)
    ]
    row = {
        "name": name,
        "task": task,
        "r": r,
        "init": init,
        "chain": chain,
        "used": {k: saved[k] for k in ("init", "pruning_chain", "fisher_samples", "reduction_factor")},
        "best_validation": results["metrics"]["best_validation"],
        "best_epoch": results["metrics"]["best_epoch"],
        "final_validation": validation[-1]["metrics"],
        "validation_per_epoch": [v["metrics"]["score"] for v in validation],
        "train_loss": {
            "first_step": losses[0][1] if losses else None,
            "per_epoch_mean": per_epoch,
            "last_10_steps_mean": sum(x for _, x in losses[-10:]) / max(1, len(losses[-10:])),
        },
        "trainable_parameters": results["parameters"]["trainable"],
        "trainable_percent": results["parameters"]["trainable_percent"],
        "init_seconds": _HOOK.get("init_seconds"),
        "fisher_log": _HOOK.get("fisher_log"),
        "memory": results["memory"],
        "timing": {**results["timing"], "run_wall_seconds": wall},
        "effective": results["effective"],
        "data": results["data"],
    }
    print(
        f"  -> best {row['best_validation']['score']:.2f} (epoch {row['best_epoch']}), final "
        f"{row['final_validation']['score']:.2f}, init {row['init_seconds']:.1f}s, run {wall:.0f}s",
        flush=True,
    )
    return row


def fmt_score(row: dict | None) -> str:
    if row is None:
        return "not run"
    best, final = row["best_validation"], row["final_validation"]
    return f"{best['score']:.1f} (ep {row['best_epoch']}) / {final['score']:.1f}"


def write_markdown(out: dict) -> Path:
    rows = out["rows"]
    by = {(x["task"], x["r"], x["init"], x["chain"]): x for x in rows}
    s = out["setting"]
    lines = [
        "# Figure 7, small: side-network initialisation on MiniLM (RTE, MRPC)",
        "",
        "Reproduce: " + ", then ".join(f"`{c}`" for c in out["commands"]) + " (then `python "
        "benchmarks/figure7_init.py --from-json` rewrites this file).",
        "",
        "MiniLM (BERT, 6 layers, d=384) with a classification head; protocol `dev` (train on a seeded subsample of "
        "GLUE train, score on the official dev set: "
        + (
            "RTE 277, MRPC 408 examples"
            if s["max_eval_samples"] is None
            else f"first {s['max_eval_samples']}"
        )
        + "). Every run: "
        f"{s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, max_length {s['max_length']}, seed "
        f"{s['seed']}, linear warm-up (10% of steps) and decay, training examples "
        + ", ".join(f"{t.upper()} {n}" for t, n in s["max_train_samples"].items())
        + f" (of RTE 2,490 / MRPC 3,668: the CPU budget), Fisher over {s['fisher_samples']} training examples "
        "(the paper uses 1,024), torch on 1 thread. One seed.",
        "",
        "Cells: best dev score over the epochs (its epoch) / last-epoch dev score. RTE: accuracy. MRPC: mean of "
        "F1 and accuracy. Time: training run wall time, initialisation (Fisher) included, RTE + MRPC.",
        "",
    ]
    for r in sorted({x["r"] for x in rows}):
        lines += [
            f"**r = {r}** (trainable parameters: "
            + ", ".join(sorted({f"{x['trainable_parameters']:,}" for x in rows if x["r"] == r}))
            + ")",
            "",
            "| configuration | RTE acc | MRPC F1/acc mean | MRPC F1 / acc (best epoch) | init s | time s |",
            "|---|---|---|---|---|---|",
        ]
        for init, chain in CONFIGS:
            rte, mrpc = by.get(("rte", r, init, chain)), by.get(("mrpc", r, init, chain))
            if rte is None and mrpc is None:
                continue
            label = init + (f", {chain} chain" if chain else "")
            detail = (
                f"{mrpc['best_validation']['f1']:.1f} / {mrpc['best_validation']['accuracy']:.1f}"
                if mrpc
                else "—"
            )
            inits = " + ".join(f"{x['init_seconds']:.0f}" for x in (rte, mrpc) if x)
            times = " + ".join(f"{x['timing']['run_wall_seconds']:.0f}" for x in (rte, mrpc) if x)
            lines.append(
                f"| {label} | {fmt_score(rte)} | {fmt_score(mrpc) if mrpc else 'not run'} | {detail} | {inits} "
                f"| {times} |"
            )
        lines.append("")
    lines += [
        "Train loss (mean per epoch):",
        "",
        "| run | " + " | ".join(f"epoch {i + 1}" for i in range(out["setting"]["epochs"])) + " |",
        "|---|" + "---|" * out["setting"]["epochs"],
    ]
    for x in rows:
        lines.append(
            f"| {x['name']} | " + " | ".join(f"{v:.3f}" for v in x["train_loss"]["per_epoch_mean"]) + " |"
        )
    lines += ["", f"Total sweep wall time: {out['total_wall_seconds'] / 60:.1f} min.", ""]
    for x in out.get("skipped", []):
        lines.append(f"Not run: {x['task']} r={x['r']} {x['init']} {x['chain'] or ''} ({x['why']}).")
    lines.append("")
    if out.get("reading"):
        lines += ["## Reading", "", out["reading"], ""]
    md_path = Path(out["results_dir"]) / "figure7_init.md"
    md_path.write_text("\n".join(lines))
    return md_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-json", action="store_true", help="only rewrite the .md from the saved JSON")
    parser.add_argument("--data-dir", default="../shared/data/glue")
    parser.add_argument("--out-dir", default="/tmp/fig7", help="run folders (checkpoints); not in the repo")
    parser.add_argument("--tasks", default="rte,mrpc")
    parser.add_argument("--r", type=int, default=8)
    parser.add_argument("--extra-r", type=int, default=None, help="also run this r, RTE only, if time allows")
    parser.add_argument("--budget-min", type=float, default=35.0, help="skip --extra-r runs past this")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fisher-samples", type=int, default=256)
    parser.add_argument("--max-train-samples", default="rte=320,mrpc=896", help="task=N,... (empty: all)")
    parser.add_argument(
        "--memory-steps", type=int, default=0, help="trainer's memory meter (0: off, the default)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--append", action="store_true", help="add rows to the saved JSON (other tasks)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="smoke tests only")
    parser.add_argument("--results-dir", default=str(RESULTS), help="where the .json and .md go")
    args = parser.parse_args()
    json_path = Path(args.results_dir) / "figure7_init.json"
    if args.from_json:
        out = json.loads(json_path.read_text())
        out["results_dir"] = args.results_dir
        out.setdefault("commands", [out.pop("command", "")])
        print(f"wrote {write_markdown(out)}")
        return 0

    # On this shared 2-core machine two OpenMP threads stall each other: a MiniLM LST step was 4-5x slower
    # with 2 threads than with 1 (measured 5.5-11 s vs 1.2-2.3 s for a batch of 32 MRPC pairs).
    torch.set_num_threads(args.threads)
    logging.getLogger("laddertune.pruning.importance").addHandler(_FisherLog())
    logging.getLogger("laddertune.pruning.importance").setLevel(logging.INFO)
    args.max_train_samples = {
        k: int(v) for k, v in (kv.split("=") for kv in args.max_train_samples.split(",") if kv)
    }
    _install_hook()
    tasks = args.tasks.split(",")
    plan = [(t, init, chain, args.r) for t in tasks for init, chain in CONFIGS]
    if args.extra_r:
        plan += [("rte", init, chain, args.extra_r) for init, chain in CONFIGS]
    out = {
        "commands": ["nice -n 10 python benchmarks/figure7_init.py " + " ".join(sys.argv[1:])],
        "setting": {
            "backbone": "minilm",
            "protocol": "dev",
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_length": args.max_length,
            "seed": args.seed,
            "fisher_samples": args.fisher_samples,
            "max_train_samples": args.max_train_samples,
            "memory_steps": args.memory_steps,
            "threads": args.threads,
            "max_eval_samples": args.max_eval_samples,
            "torch": torch.__version__,
        },
        "results_dir": args.results_dir,
        "rows": [],
        "skipped": [],
        "total_wall_seconds": 0.0,
    }
    if args.append and json_path.exists():  # a second invocation (other tasks) adds to the first one's rows
        previous = json.loads(json_path.read_text())
        for key in ("epochs", "batch_size", "lr", "max_length", "seed", "fisher_samples", "threads"):
            if previous["setting"][key] != out["setting"][key]:
                raise SystemExit(f"--append: {key} differs from the saved sweep's")
        previous["setting"]["max_train_samples"].update(args.max_train_samples)
        previous.setdefault("commands", [previous.pop("command", "")])  # an older file: one command
        previous["commands"].append(out["commands"][0])
        out = previous
    done_before = out["total_wall_seconds"]
    start = time.perf_counter()
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    for task, init, chain, r in plan:
        elapsed = (done_before + time.perf_counter() - start) / 60
        if r != args.r and elapsed > args.budget_min:
            out["skipped"].append({"task": task, "r": r, "init": init, "chain": chain, "why": "time budget"})
            continue
        try:
            out["rows"].append(run_one(args, task, init, chain, r))
        except Exception as e:  # keep the sweep going; the failure is recorded with its message
            logging.exception("run failed")
            out["skipped"].append({"task": task, "r": r, "init": init, "chain": chain, "why": repr(e)})
        out["total_wall_seconds"] = done_before + time.perf_counter() - start
        json_path.write_text(json.dumps(out, indent=2) + "\n")
        write_markdown(out)
    out["total_wall_seconds"] = done_before + time.perf_counter() - start
    json_path.write_text(json.dumps(out, indent=2) + "\n")
    write_markdown(out)
    print(f"done in {out['total_wall_seconds'] / 60:.1f} min; wrote {json_path} and the .md beside it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
