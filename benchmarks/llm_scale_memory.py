"""LLM-scale memory goals, predicted (``laddertune memory``'s predictor, CUDA semantics, SDPA, nf4 backbone, bf16
autocast): no GPU needed.

Every LST row uses the defaults a user who types no extra flag gets (r=8, a side layer on every other backbone
layer for these 32- and 80-layer stacks, projected taps, side heads 64 wide, side checkpointing and the chunked LM
loss for LM heads); ``-all-layers`` rows keep a side layer on every backbone layer, and ``-authors`` rows turn
every new default off (all layers, full-width taps, the backbone's heads, no side checkpointing, the plain loss)
to show what they buy. QLoRA is
r=16 on all linears with gradient checkpointing. Goals:

- Llama-3-8B LST, batch 1: 32,768 tokens <= 11.5 GiB; 2,048 tokens <= 7 GiB; ``--fit 24GiB`` >= 100,000 tokens
  (unsloth's QLoRA: 21,848 tokens in 12 GB, 78,475 in 24 GB);
- Llama-2-70B LST, batch 1 x 2048 <= 46 GiB;
- step FLOPs at 8B x 2k <= 0.4 x QLoRA with gradient checkpointing.

Each row is one trace (seconds to minutes on one core); a ``fit-`` row is one ``--fit`` search (4 to 8 traces).
``--only NAME`` runs one row and merges it into the JSON. Writes benchmarks/results/llm_scale_memory.json and .md.

Usage::

    python benchmarks/llm_scale_memory.py                     # every row (tens of minutes on one core)
    python benchmarks/llm_scale_memory.py --only l3-lst-32k
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from predicted_rows import GIB, breakdown_table, predicted_row

from laddertune.memory.fit import fit_sizes

RESULTS = Path(__file__).parent / "results"
L3 = dict(backbone_config="llama-3-8b", batch_size=1, target_length=1, precision="bf16", backbone_dtype="nf4")
L70 = dict(L3, backbone_config="llama-2-70b")
AUTHORS = dict(
    tap_projection="none",
    side_attention_heads=0,
    side_checkpointing=False,
    loss_chunk_size=0,
    side_layer_stride=1,
)
ROWS = {
    "l3-lst-2k": dict(L3, method="lst", source_length=2048),
    "l3-lst-32k": dict(L3, method="lst", source_length=32768),
    "l3-lst-2k-all-layers": dict(L3, method="lst", source_length=2048, side_layer_stride=1),
    "l3-lst-2k-authors": dict(L3, method="lst", source_length=2048, **AUTHORS),
    "l3-lst-2k-nf4-embeddings": dict(L3, method="lst", source_length=2048, quantize_embeddings=True),
    "l3-lst-32k-nf4-embeddings": dict(L3, method="lst", source_length=32768, quantize_embeddings=True),
    "l3-qlora-2k-gc": dict(L3, method="qlora", source_length=2048),
    "l3-qlora-32k-gc": dict(L3, method="qlora", source_length=32768),
    "l70-lst-2k": dict(L70, method="lst", source_length=2048),
    "l70-lst-2k-all-layers": dict(L70, method="lst", source_length=2048, side_layer_stride=1),
    "l70-lst-2k-r16": dict(L70, method="lst", source_length=2048, reduction_factor=16),
    "l70-lst-2k-8bit": dict(L70, method="lst", source_length=2048, optimizer="adamw8bit"),
}
FITS = {  # (budget GiB, method): the longest context at batch 1
    "fit-l3-lst-12GiB": (12, "lst"),
    "fit-l3-qlora-12GiB": (12, "qlora"),
    "fit-l3-lst-24GiB": (24, "lst"),
    "fit-l3-qlora-24GiB": (24, "qlora"),
}

NOTE = """Reading (by hand, from the rows above; predicted on CPU, not measured on a GPU). Llama-3-8B at 2k: the fixed
cost is 6.06 GiB (the nf4 backbone 5.38 of it, 2 GiB of that the 16-bit embeddings and LM head of the 128k
vocabulary; the side's 16 layers, 60M float32 parameters with AdamW, 0.68), so the 7 GiB goal is met by the
defaults (6.48 GiB) and missed with a side layer on every one of the 32 backbone layers (7.37 GiB: 120M parameters,
1.34 GiB); `quantize_embeddings` takes another 0.57 GiB off. At 32k the taps are 0.5 GiB (projected to 512 wide,
bf16; at full width, on every layer, they would be 8.3 GiB) and the peak sits inside the backbone's forward (its MLP's transients
at 32k tokens). The authors' side (every side layer, full-width Down, the backbone's heads, no side checkpointing,
the plain loss) needs 12.94 GiB at 2k. Step FLOPs: the chunked loss takes the frozen LM head's input gradient in
the forward pass, so the 128k-vocabulary head's matmul runs twice per step (2 x 2.15 TFLOPs), as in the plain loss
(three times if each chunk were recomputed in the backward pass), and 16 side layers instead of 32 take off another 1.6:
36.8 TFLOPs, 0.365x QLoRA's. Llama-2-70B: the default side has 40 layers,
586M parameters (8.7 GiB with gradients and AdamW) on a 34.5 GiB nf4 backbone: 43.38 GiB; with a side layer on each
of the 80 backbone layers 52.60 GiB."""


def run_row(name: str) -> dict:
    if name in FITS:
        budget, method = FITS[name]
        kwargs = {k: v for k, v in L3.items() if k not in ("backbone_config", "batch_size")}
        t0 = time.perf_counter()
        # rotary positions have no table: the search's upper limit is 2^20 tokens
        r = fit_sizes("llama-3-8b", method, budget * GIB, batch_size=1, source_length=2048, **kwargs)
        return {**r.to_dict(), "seconds": round(time.perf_counter() - t0, 1)}
    kwargs = dict(ROWS[name])
    return predicted_row(kwargs.pop("backbone_config"), **kwargs)


def goals(rows: dict) -> dict:
    g = {}
    if "l3-lst-32k" in rows:
        v = rows["l3-lst-32k"]["peak_gib"]
        g["llama-3-8b lst 1 x 32,768 <= 11.5 GiB"] = [v, v <= 11.5]
    if "l3-lst-2k" in rows:
        v = rows["l3-lst-2k"]["peak_gib"]
        g["llama-3-8b lst 1 x 2,048 <= 7 GiB"] = [v, v <= 7]
    if "l3-lst-2k-nf4-embeddings" in rows:
        v = rows["l3-lst-2k-nf4-embeddings"]["peak_gib"]
        g["llama-3-8b lst 1 x 2,048, nf4 embeddings and LM head <= 7 GiB"] = [v, v <= 7]
    if "fit-l3-lst-24GiB" in rows:
        v = rows["fit-l3-lst-24GiB"]["value"]
        g["llama-3-8b lst --fit 24GiB >= 100,000 tokens"] = [v, v >= 100_000]
    for name, what in [
        ("l70-lst-2k", ""),
        ("l70-lst-2k-r16", ", r=16"),
        ("l70-lst-2k-8bit", ", 8-bit AdamW"),
    ]:
        if name in rows:
            v = rows[name]["peak_gib"]
            g[f"llama-2-70b lst 1 x 2,048{what} <= 46 GiB"] = [v, v <= 46]
    if {"l3-lst-2k", "l3-qlora-2k-gc"} <= set(rows):
        ratio = rows["l3-lst-2k"]["step_tflops"] / rows["l3-qlora-2k-gc"]["step_tflops"]
        g["llama-3-8b step FLOPs at 1 x 2,048 <= 0.4 x qlora with GC"] = [round(ratio, 3), ratio <= 0.4]
    return g


def write(rows: dict) -> dict:
    out = {"rows": rows, "goals": goals(rows), "semantics": "cuda, sdpa; predicted (no GPU)"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "llm_scale_memory.json").write_text(json.dumps(out, indent=2) + "\n")
    lines = [
        "# LLM-scale memory goals (predicted: `benchmarks/llm_scale_memory.py`, CUDA semantics, SDPA, nf4, bf16)",
        "",
        *breakdown_table({n: r for n, r in rows.items() if n not in FITS}),
    ]
    fits = [(n, r) for n, r in rows.items() if n in FITS]
    if fits:
        lines += ["", "| --fit (batch 1) | longest context | its peak GiB | traces |", "|---|---|---|---|"]
        for name, r in fits:
            cap = " (search limit)" if r["capped"] else ""
            lines.append(f"| {name} | {r['value']:,d}{cap} | {r['peak_gib']} | {len(r['probes'])} |")
    lines += ["", "| goal | value | met |", "|---|---|---|"]
    lines += [f"| {k} | {v} | {'yes' if ok else 'NO'} |" for k, (v, ok) in out["goals"].items()]
    lines += ["", NOTE]
    (RESULTS / "llm_scale_memory.md").write_text("\n".join(lines) + "\n")
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*ROWS, *FITS], default=None)
    args = parser.parse_args(argv)
    path = RESULTS / "llm_scale_memory.json"
    rows = json.loads(path.read_text())["rows"] if args.only and path.exists() else {}
    for name in [args.only] if args.only else [*ROWS, *FITS]:
        rows[name] = run_row(name)
        print(name, json.dumps({k: v for k, v in rows[name].items() if k != "settings"}))
    rows = {k: rows[k] for k in [*ROWS, *FITS] if k in rows}
    out = write(rows)
    for k, v in out["goals"].items():
        print(k, v)
    return out


if __name__ == "__main__":
    main()
