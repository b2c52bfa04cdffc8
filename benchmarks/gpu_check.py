"""GPU check: measured peak memory and step time of LST on CUDA, next to the FakeTensor prediction.

One script for a machine with one GPU (budget: under 6 minutes on one H100/H200). For each setting it builds the
model on the device from a config (random weights: no downloads), runs warm-up steps, then measures K training
steps with :class:`laddertune.memory.PeakMemoryMeter` (``max_memory_allocated``, reset per phase) and times them
with CUDA synchronisation, and puts ``predict_memory``'s number for the same setting next to the measurement. Settings:

- T5-base, Table 1 shape (batch 100, 128 -> 8 tokens): full fine-tuning, LoRA r=32 and LST (all side layers and
  the paper's Table 1 layers) in fp32; LST with a bf16 backbone + bf16 autocast; LST on T5-large and T5-3B with
  their Table 1 layers;
- Llama-7B (config only, random weights), 4 x 2048 tokens: LST with an nf4 backbone (bitsandbytes) and bf16
  autocast, loss chunked over the sequence; the same with a bf16 backbone, and with side checkpointing (the
  memory target's row, benchmarks/llm_memory_goals.py); QLoRA r=16 (all linears, bitsandbytes nf4, gradient
  checkpointing) at the same shape;
- Llama-3-8B (config only, random weights), batch 1 at 8,192 and 32,768 tokens: LST on an nf4 backbone with bf16
  autocast and every other setting at LadderConfig's defaults (projected taps, side heads 64 wide, side
  checkpointing and the chunked LM loss): the long-context rows of ``benchmarks/llm_scale_memory.py``; and at 8,192
  tokens, on a bf16 backbone (it needs no bitsandbytes), ``reentry_layers=16``: the top 16 of 32 layers re-run on
  the side's output, recomputed in the backward by side checkpointing;
- every setting that cannot run (no bitsandbytes, out of memory) is recorded with its reason, not dropped.

``--tiny`` runs the same code paths on CPU with tiny configs (seconds; the test suite runs it): the int8/nf4
settings then use torchao when it is installed and are skipped with their reason otherwise.

Usage::

    python benchmarks/gpu_check.py                 # on the GPU machine: writes benchmarks/results/gpu_check.json
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu_check_tiny.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import transformers as T

from laddertune import LadderConfig, get_ladder_model
from laddertune.baselines import QLoraOptions, prepare_baseline
from laddertune.core.quantization import convert_backbone
from laddertune.errors import LadderTuneError
from laddertune.memory import PeakMemoryMeter, predict_memory
from laddertune.memory.model_configs import PAPER_SIDE_LAYERS, load_config
from laddertune.memory.predict import make_batch
from laddertune.methods import get_method, prepare_qlora
from laddertune.training.device import move_batch, resolve_device
from laddertune.training.precision import Precision
from laddertune.training.step import train_step

RESULTS = Path(__file__).parent / "results"
GIB = 1024**3


def tiny_configs() -> dict:
    t5 = T.T5Config(
        vocab_size=128, d_model=32, d_ff=64, d_kv=8, num_heads=4, num_layers=2, decoder_start_token_id=0
    )
    llama = T.LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        pad_token_id=0,
    )
    return {"t5-base": t5, "t5-large": t5, "t5-3b": t5, "llama-7b": llama, "llama-3-8b": llama}


def settings(tiny: bool) -> list[dict]:
    """(name, config name, method, head, batch, source, target, backbone dtype, precision, loss chunk, side layers,
    side checkpointing); tiny configs keep all their side layers."""
    t5_shape = dict(batch=4, source=16, target=4) if tiny else dict(batch=100, source=128, target=8)
    llama_shape = dict(batch=2, source=32, target=0) if tiny else dict(batch=4, source=2048, target=0)
    chunk = 8 if tiny else 512

    def paper_layers(name: str) -> list[int] | None:
        return None if tiny else PAPER_SIDE_LAYERS[name]

    t5 = dict(
        config="t5-base",
        head="seq2seq_lm",
        **t5_shape,
        backbone_dtype="float32",
        precision="fp32",
        loss_chunk=None,
    )
    llama = dict(config="llama-7b", head="causal_lm", **llama_shape, precision="bf16", loss_chunk=chunk)
    # LadderConfig's defaults for everything but the backbone's storage (no loss_chunk: the default's)
    long = dict(config="llama-3-8b", head="causal_lm", batch=1, target=0, precision="bf16", method="lst",
                backbone_dtype="nf4", loss_chunk=None, defaults=True)  # fmt: skip
    return [
        dict(t5, name="t5-base full fp32", method="full"),
        dict(t5, name="t5-base lora r=32 fp32", method="lora"),
        dict(t5, name="t5-base lst fp32", method="lst"),
        dict(t5, name="t5-base lst fp32, Table 1 side layers", method="lst", side_layers=paper_layers("t5-base")),
        dict(t5, name="t5-base lst bf16 backbone + bf16 autocast", method="lst", backbone_dtype="bfloat16",
             precision="bf16"),
        dict(t5, name="t5-large lst fp32, Table 1 side layers", method="lst", config="t5-large",
             side_layers=paper_layers("t5-large")),
        dict(t5, name="t5-3b lst fp32, Table 1 side layers", method="lst", config="t5-3b",
             side_layers=paper_layers("t5-3b")),
        dict(llama, name="llama-7b lst bf16 backbone + bf16 autocast, chunked loss", method="lst",
             backbone_dtype="bfloat16"),
        dict(llama, name="llama-7b lst nf4 backbone + bf16 autocast, chunked loss", method="lst",
             backbone_dtype="nf4"),
        dict(llama, name="llama-7b lst nf4 backbone + bf16 autocast, chunked loss, side checkpointing",
             method="lst", backbone_dtype="nf4", side_checkpointing=True),
        dict(llama, name="llama-7b qlora r=16 nf4 + bf16 autocast, gradient checkpointing", method="qlora",
             backbone_dtype="nf4", loss_chunk=None),
        dict(long, name="llama-3-8b lst nf4 + bf16 autocast, defaults, 1 x 8k", source=64 if tiny else 8192),
        dict(long, name="llama-3-8b lst nf4 + bf16 autocast, defaults, 1 x 32k", source=128 if tiny else 32768),
        dict(long, name="llama-3-8b lst bf16 backbone + bf16 autocast, defaults, reentry_layers=16, 1 x 8k",
             backbone_dtype="bfloat16", source=64 if tiny else 8192, reentry=1 if tiny else 16),
    ]  # fmt: skip


def build(config, setting: dict, device: torch.device):
    """A random-weight backbone of ``config`` on ``device`` (in the backbone dtype when it is a float one, so a 7B
    model never exists in float32), and the method around it: LST, a baseline, or QLoRA (bitsandbytes, CUDA)."""
    if setting["method"] == "qlora":
        get_method("qlora").require(
            device
        )  # one line on a CPU or without bitsandbytes, before anything is built
    cls = T.T5ForConditionalGeneration if setting["head"] == "seq2seq_lm" else T.LlamaForCausalLM
    float_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    init_dtype = float_dtype.get(setting["backbone_dtype"], torch.bfloat16)
    default = torch.get_default_dtype()
    torch.set_default_dtype(init_dtype)
    try:
        with device:
            backbone = cls(config)
    finally:
        torch.set_default_dtype(default)
    if setting["method"] == "qlora":
        convert_backbone(backbone, "nf4")
        return prepare_qlora(backbone, QLoraOptions())  # r=16, alpha 32, dropout 0.05, gradient checkpointing
    if setting["method"] != "lst":
        return prepare_baseline(backbone, setting["method"])  # LoRA: the authors' r=32, alpha 32
    # An LM head's taps projected as `laddertune train` projects them (pca) and as the predictor traces them: the
    # basis is left unfitted (no calibration data here), which costs the same memory and time as a fitted one
    if setting.get("defaults"):
        with device:
            return get_ladder_model(
                backbone,
                LadderConfig(
                    reduction_factor=8,
                    backbone_dtype=setting["backbone_dtype"],
                    reentry_layers=setting.get("reentry", 0),
                ),
                fit_projection=False,
            )
    ladder = LadderConfig(
        reduction_factor=8,
        side_layers=setting.get("side_layers"),
        backbone_dtype=setting["backbone_dtype"],
        loss_chunk_size=setting["loss_chunk"],
        side_checkpointing=setting.get("side_checkpointing", False),
    )
    with device:
        return get_ladder_model(backbone, ladder, fit_projection=False)


def measure(setting: dict, config, device: torch.device, steps: int) -> dict:
    model = build(config, setting, device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    precision = Precision(setting["precision"], device)
    batch = move_batch(
        make_batch(config, setting["head"], setting["batch"], setting["source"], setting["target"]), device
    )
    train_step(model, batch, optimizer, scheduler, 1.0, precision)  # warm-up: optimizer state, kernels
    meter = PeakMemoryMeter(model, optimizer, device=device)
    with meter.phase("train"):
        train_step(model, batch, optimizer, scheduler, 1.0, precision)
    seconds = []
    for _ in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        train_step(model, batch, optimizer, scheduler, 1.0, precision)
        _sync(device)
        seconds.append(time.perf_counter() - t0)
    report = meter.report()
    return {
        "peak_train_bytes": report.peak("train"),
        "peak_train_gib": round(report.peak("train") / GIB, 4),
        "reserved_gib": None if report.phases["train"].reserved_bytes is None else round(
            report.phases["train"].reserved_bytes / GIB, 4
        ),
        "method": report.method,
        "seconds_per_step": sorted(seconds)[len(seconds) // 2],
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }  # fmt: skip


def predicted(setting: dict, config, device: torch.device) -> dict | None:
    """The predictor's peak for the same setting (method, backbone storage, precision, chunked loss, side layers,
    checkpointing and re-entry); None for an nf4 backbone on CPU (the predictor models bitsandbytes' CUDA storage,
    the tiny CPU run torchao's)."""
    if setting["backbone_dtype"] in ("int8", "nf4") and device.type != "cuda":
        return None
    options = {}  # the LadderConfig fields the setting sets (a baseline's: none)
    if setting["method"] == "lst" and setting.get("defaults"):
        options = {"reentry_layers": setting.get("reentry", 0)}
    elif setting["method"] == "lst":
        options = {
            "side_layers": setting.get("side_layers"),
            "loss_chunk_size": setting["loss_chunk"],
            "side_checkpointing": setting.get("side_checkpointing", False),
        }
    p = predict_memory(
        config,
        setting["method"],
        batch_size=setting["batch"],
        source_length=setting["source"],
        target_length=max(1, setting["target"]),
        backbone_dtype=setting["backbone_dtype"] if setting["method"] != "qlora" else None,
        precision=setting["precision"],
        head=setting["head"],
        **options,
        device_semantics="cuda" if device.type == "cuda" else "cpu",
    )
    return {"peak_bytes": p.peak_bytes, "peak_gib": round(p.peak_bytes / GIB, 4)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tiny", action="store_true", help="tiny configs on CPU: the same code paths, seconds"
    )
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per setting (default 5, tiny 2)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_check.json)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device or ("cpu" if args.tiny else "cuda"))
    steps = args.steps or (2 if args.tiny else 5)
    configs = tiny_configs() if args.tiny else {}
    rows = []
    t_start = time.perf_counter()
    for setting in settings(args.tiny):
        config = configs.get(setting["config"]) or load_config(setting["config"])
        row = {**setting, "device": str(device)}
        try:
            row["measured"] = measure(setting, config, device, steps)
            row["predicted"] = predicted(setting, config, device)
        except (LadderTuneError, torch.OutOfMemoryError) as e:  # recorded, not dropped
            row["skipped"] = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps({k: row.get(k) for k in ("name", "measured", "predicted", "skipped")}))
    result = {
        "tiny": args.tiny,
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seconds": time.perf_counter() - t_start,
        "rows": rows,
    }
    out = Path(args.out) if args.out else RESULTS / ("gpu_check_tiny.json" if args.tiny else "gpu_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} ({result['seconds']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
