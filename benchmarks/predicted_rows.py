"""What the predicted-memory benchmarks keep of one prediction, and the table they print of those rows
(``llm_scale_memory.py``, ``llm_memory_goals.py``)."""

from __future__ import annotations

from laddertune.memory.predict import predict_memory

GIB = 1024**3


def predicted_row(backbone_config, **kwargs) -> dict:
    """``predict_memory`` under CUDA semantics, as a JSON row: the peak and its parts in GiB, step TFLOPs."""
    p = predict_memory(backbone_config, device_semantics="cuda", **kwargs)
    return {
        "peak_gib": round(p.peak_bytes / GIB, 3),
        "breakdown_gib": {k: round(v / GIB, 3) for k, v in p.breakdown.items()},
        "step_tflops": round(p.step_flops / 1e12, 2),
        "trainable_params": p.trainable_params,
        "settings": p.settings,
        "dtype": p.dtype,
        "precision": p.precision,
        "trace_seconds": round(p.trace_seconds, 1),
    }


def breakdown_table(rows: dict) -> list[str]:
    """Markdown lines: one row per prediction with its peak, FLOPs and the parts of the peak."""
    lines = [
        "| row | peak GiB | step TFLOPs | frozen | taps | activations | trainable+grad+opt |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        b = r["breakdown_gib"]
        state = round(b["trainable_weights"] + b["gradients"] + b["optimizer_state"], 3)
        lines.append(
            f"| {name} | {r['peak_gib']} | {r['step_tflops']} | {b['frozen_weights']} | {b['ladder_taps']} "
            f"| {b['activations']} | {state} |"
        )
    return lines
