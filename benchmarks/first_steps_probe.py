"""Why does a randomly initialised side network stall? One factor at a time, measured.

    python benchmarks/first_steps_probe.py --task sst2 --steps 100

Budget: about 30 s per variant on 2 CPU cores for SST-2 at batch 32 (MiniLM, lengths padded to the batch's longest).
The same batches, in the same order, for every variant; only the one named factor differs from the authors' setting.
Prints, per variant, the mean training loss over steps 1-20, 21-40, ... and the scales seen at step 0 (the side
output, the up-projection's output, the pooled logits) and the gradient norms of the parts, so the cause is read off
the numbers. Writes benchmarks/results/first_steps_probe_<task>.json (probe set r1:
one factor at a time) or first_steps_probe_<set>_<task>.json. The probe sets r2 (structure and step size) and
r3 (the final shortcut over more seeds) also score the dev set after --eval-at steps and at the end, over --seeds:

    python benchmarks/first_steps_probe.py --task sst2 --steps 100 --probe-set r2 \
        --only authors "final shortcut" "head+up" LayerNorm "lr 1e-2"
    python benchmarks/first_steps_probe.py --task sst2 --steps 100 --probe-set r3 \
        --seeds 1 2 --only authors "final shortcut (" "final shortcut, lr 1e-3"
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import get_linear_schedule_with_warmup

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.backbones import load_backbone, load_tokenizer

RESULTS = Path(__file__).parent / "results"
TEXT = {"sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"), "rte": ("sentence1", "sentence2")}


def batches(
    task: str, data_dir: Path, tok, steps: int, batch: int, seed: int, max_length: int, split="train"
):
    """``steps`` shuffled training batches (``split="train"``), or the whole dev set in order (``steps=None``)."""
    rows = [json.loads(line) for line in (data_dir / task / f"{split}.jsonl").read_text().splitlines()]
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(rows), generator=g).tolist() if steps else list(range(len(rows)))
    a, b = TEXT[task]
    out = []
    for s in range(steps or math.ceil(len(rows) / batch)):
        chunk = [
            rows[order[(s * batch + k) % len(rows)]]
            for k in range(batch)
            if steps or s * batch + k < len(rows)
        ]
        enc = tok(
            [r[a] for r in chunk],
            [r[b] for r in chunk] if b else None,
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="pt",
        )
        enc["labels"] = torch.tensor([r["label"] for r in chunk])
        out.append(dict(enc))
    return out


def rescale_trunk(model, factor: float) -> None:
    """Multiply every side-trunk matrix weight by ``factor`` (the authors' full-width scale is a smaller std)."""
    for stack in model.side.stacks.values():
        for name, p in stack.trunk.named_parameters():
            if p.dim() == 2 and "LayerNorm" not in name:
                p.data.mul_(factor)


AUTHORS = {"final_shortcut": False}
SHORTCUT = {"final_shortcut": True}
VARIANTS = {
    # name: (LadderConfig overrides, lr, warmup, post-init edit[, lr of the head and up-projection])
    "authors (gate 0, T 0.1, N(0,0.01) projections)": (AUTHORS, 3e-3, 10, None),
    "no warm-up": (AUTHORS, 3e-3, 0, None),
    "lr 1e-3": (AUTHORS, 1e-3, 10, None),
    "up-projection default init": (AUTHORS, 3e-3, 10, "up"),
    "down-projections default init": (AUTHORS, 3e-3, 10, "downs"),
    "both projections default init": (AUTHORS, 3e-3, 10, "both"),
    "fresh head (no pretrained pooler)": (AUTHORS, 3e-3, 10, "head"),
    "gate_init -0.1 (mu 0.27)": ({**AUTHORS, "gate_init": -0.1}, 3e-3, 10, None),
    "gate T 1.0": ({**AUTHORS, "gate_temperature": 1.0}, 3e-3, 10, None),
    "trunk x0.125 (full-width scale)": (AUTHORS, 3e-3, 10, "trunk"),
    # probe sets r2/r3: structure and the step size of what matters
    "final shortcut (head reads backbone final + Up(side), Up=0)": (SHORTCUT, 3e-3, 10, None),
    "final shortcut, lr 1e-3": (SHORTCUT, 1e-3, 10, None),
    "final shortcut, head+up lr 3e-4": (SHORTCUT, 3e-3, 10, None, 3e-4),
    "head+up lr 3e-2": (AUTHORS, 3e-3, 10, None, 3e-2),
    "LayerNorm after up-projection": (AUTHORS, 3e-3, 10, "up_ln"),
    "lr 1e-2, no warm-up": (AUTHORS, 1e-2, 0, None),
}


def edit(model, what):
    side = model.side
    if what in ("up", "both"):
        side.up.reset_parameters()
    if what in ("downs", "both"):
        for stack in side.stacks.values():
            for proj in (stack.embed_down, *stack.downs):
                proj.reset_parameters()
    if what == "head":
        for m in side.head.modules():
            if isinstance(m, torch.nn.Linear):
                m.reset_parameters()
    if what == "trunk":
        rescale_trunk(model, 0.125)
    if what == "up_ln":  # the pooler then sees unit-scale inputs from step 0
        side.up = torch.nn.Sequential(side.up, torch.nn.LayerNorm(side.up.out_features))


def cache_taps(backbone, data):
    """Run the frozen backbone once per batch and keep what the side network reads (its taps).

    The backbone is frozen and in eval mode, so its outputs are the same in every variant: computing them once
    makes a variant cost only the side network's steps (the probe's budget on a shared 2-core machine).
    """
    model = get_ladder_model(backbone, LadderConfig())
    cached = []
    for batch in data:
        kwargs = {k: v for k, v in batch.items() if k != "labels"}
        taps = model.backbone_taps(**kwargs)["body"]
        cached.append({k: v.to(torch.bfloat16) for k, v in taps.items()})  # half the memory (RTE is long)
    return cached


def accuracy(model, step_taps, dev, dev_cached) -> float:
    """Dev accuracy (%) of the side network on the cached dev taps."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch, taps in zip(dev, dev_cached, strict=True):
            step_taps[0] = {k: v.float() for k, v in taps.items()}
            pred = model(**{k: v for k, v in batch.items() if k != "labels"}, taps={"body": step_taps[0]})
            pred = pred.logits.argmax(-1)
            right += int((pred == batch["labels"]).sum())
            total += len(pred)
    model.train()
    return 100 * right / total


def probe(backbone, data, overrides, lr, warmup, what, seed, cached, variant_edit=edit, fast_lr=None, dev=None,
          eval_at=()):  # fmt: skip
    torch.manual_seed(seed)
    model = get_ladder_model(backbone, LadderConfig(**overrides))
    if what:
        variant_edit(model, what)
    step_taps: list = [None]  # the taps of the batch being run (the backbone does not run)
    model.train()
    params = [p for p in model.side.parameters() if p.requires_grad]
    fast = {id(p) for p in (*model.side.up.parameters(), *model.side.head.parameters())} if fast_lr else set()
    groups = [{"params": [p for p in params if id(p) not in fast], "lr": lr}]
    if fast:
        groups.append({"params": [p for p in params if id(p) in fast], "lr": fast_lr})
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, warmup, len(data))
    losses, scales = [], {}
    for step, batch in enumerate(data):
        if step in eval_at and dev:
            scales[f"acc@{step}"] = accuracy(model, step_taps, *dev)
        step_taps[0] = {k: v.float() for k, v in cached[step].items()}
        out = model(**batch, taps={"body": step_taps[0]})
        if step == 0:
            scales["logit_std"] = float(out.logits.detach().std())
        out.loss.backward()
        if step == 0:
            side = model.side
            up = side.up[0] if isinstance(side.up, torch.nn.Sequential) else side.up
            scales["grad_up"] = float(up.weight.grad.norm())
            scales["grad_downs"] = float(
                sum(d.weight.grad.norm() ** 2 for s in side.stacks.values() for d in s.downs) ** 0.5
            )
            scales["grad_head"] = float(sum(p.grad.norm() ** 2 for p in side.head.parameters()) ** 0.5)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(float(out.loss))
    if dev and len(data) in eval_at:
        scales[f"acc@{len(data)}"] = accuracy(model, step_taps, *dev)
    return losses, scales


def _save(args, rows: list) -> Path:
    RESULTS.mkdir(exist_ok=True)
    name = args.task if args.round == "r1" else f"{args.round}_{args.task}"
    out = RESULTS / f"first_steps_probe_{name}.json"
    payload = {"task": args.task, "round": args.round, "steps": args.steps, "seeds": args.seeds,
               "chance_loss": math.log(2), "rows": rows}  # fmt: skip
    out.write_text(json.dumps(payload, indent=1))
    return out


def write_summary() -> None:
    """Combine every ``first_steps_probe_<task>.json`` into first_steps.json and a table in first_steps.md."""
    probes = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("first_steps_probe_*.json"))]
    (RESULTS / "first_steps.json").write_text(json.dumps(probes, indent=1))
    lines = [
        "# First steps of a random side network, one factor at a time (MiniLM, batch 32)",
        "",
        "`python benchmarks/first_steps_probe.py --task TASK --steps N` (backbone taps cached once per batch; "
        "every variant sees the same batches in the same order; AdamW, linear decay, clip 1.0, seed 0).",
        "Mean training loss per block of 20 steps (chance: ln 2 = 0.693); step-0 logit std and gradient norms.",
        "",
    ]
    for probe_ in probes:
        n = probe_["steps"]
        blocks = [f"{i + 1}-{min(i + 20, n)}" for i in range(0, n, 20)]
        accs = sorted(
            {k for r in probe_["rows"] for k in r if k.startswith("acc@")}, key=lambda k: int(k[4:])
        )
        title = f"{probe_['task']} ({n} steps" + (
            f", probe set {probe_['round']})" if "round" in probe_ else ")"
        )
        lines += [f"## {title}", "", "| variant | seed | " + " | ".join(blocks + [f"dev {a}" for a in accs])
                  + " | logit std | grad up | grad downs | grad head |",
                  "|---" * (len(blocks) + len(accs) + 6) + "|"]  # fmt: skip
        for r in probe_["rows"]:
            cells = " | ".join(
                [f"{c:.3f}" for c in r["chunk_means"]] + [f"{r[a]:.1f}" for a in accs if a in r]
            )
            lines.append(
                f"| {r['variant']} | {r.get('seed', 0)} | {cells} | {r['logit_std']:.1e} | {r['grad_up']:.1e} | "
                f"{r['grad_downs']:.1e} | {r['grad_head']:.1e} |"
            )
        lines.append("")
        if len(probe_.get("seeds", [0])) > 1:
            lines += [f"Mean over seeds {probe_['seeds']}:", "", "| variant | " + " | ".join(
                [f"dev {a}" for a in accs]) + " | loss, last block |", "|---" * (len(accs) + 2) + "|"]  # fmt: skip
            for name in dict.fromkeys(r["variant"] for r in probe_["rows"]):
                mine = [r for r in probe_["rows"] if r["variant"] == name]
                means = [sum(r[a] for r in mine) / len(mine) for a in accs]
                last = sum(r["chunk_means"][-1] for r in mine) / len(mine)
                lines.append(f"| {name} | " + " | ".join(f"{m:.1f}" for m in means) + f" | {last:.3f} |")
            lines.append("")
    (RESULTS / "first_steps.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sst2", choices=sorted(TEXT))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument(
        "--eval-at", type=int, nargs="*", default=[50], help="steps after which to score the dev set"
    )
    ap.add_argument("--data-dir", type=Path, default=Path("/work/shared/data/glue"))
    ap.add_argument("--only", nargs="*", help="variant names (prefixes) to run")
    ap.add_argument(
        "--probe-set",
        "--round",
        dest="round",
        default="r1",
        help="the probe set: r1 writes first_steps_probe_<task>.json, r2/r3 first_steps_probe_<set>_<task>.json",
    )
    ap.add_argument(
        "--from-json", action="store_true", help="only rewrite first_steps.json/.md from the probes"
    )
    args = ap.parse_args()
    if args.from_json:
        write_summary()
        return
    tok = load_tokenizer("minilm")
    backbone = load_backbone("minilm", "sequence_classification", num_labels=2)
    eval_at = {*args.eval_at, args.steps}
    t0 = time.perf_counter()
    dev = batches(args.task, args.data_dir, tok, None, 64, 0, args.max_length, split="validation")
    dev_cached = cache_taps(backbone, dev)
    rows = []
    for seed in args.seeds:
        data = batches(args.task, args.data_dir, tok, args.steps, args.batch_size, seed, args.max_length)
        cached = cache_taps(backbone, data)
        print(f"seed {seed}: backbone taps cached in {time.perf_counter() - t0:.0f}s", flush=True)
        for name, (overrides, lr, warmup, what, *fast) in VARIANTS.items():
            if args.only and not any(name.startswith(o) for o in args.only):
                continue
            t0 = time.perf_counter()
            losses, scales = probe(
                backbone, data, overrides, lr, warmup, what, seed, cached, fast_lr=fast[0] if fast else None,
                dev=(dev, dev_cached), eval_at=eval_at,
            )  # fmt: skip
            chunks = [sum(losses[i : i + 20]) / len(losses[i : i + 20]) for i in range(0, len(losses), 20)]
            rows.append({"variant": name, "seed": seed, "losses": losses, "chunk_means": chunks, **scales})
            _save(args, rows)
            accs = " ".join(f"{k} {v:.1f}" for k, v in scales.items() if k.startswith("acc@"))
            print(
                f"s{seed} {name:48s} " + " ".join(f"{c:.3f}" for c in chunks) + f" | {accs} | logit_std "
                f"{scales['logit_std']:.2e} grad up {scales['grad_up']:.2e} downs {scales['grad_downs']:.2e} "
                f"head {scales['grad_head']:.2e} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
        del cached
    out = _save(args, rows)
    write_summary()
    print("wrote", out, "and first_steps.json/.md")


if __name__ == "__main__":
    main()
