"""Where the backbone signature's tolerance belongs: the same weights in another dtype vs other weights.

A side checkpoint records, per unquantized backbone parameter, ``samples`` evenly strided values
(:func:`laddertune.core.fingerprint.value_signature`); loading refuses the backbone when, for some parameter, the
relative L2 distance between the saved and the present samples exceeds the tolerance. This measures that distance
(the maximum over parameters: the statistic the check uses), for several numbers of samples, on two backbones:

- MiniLM (alias ``minilm``, BERT 6x384, pretrained) and a tiny random BERT (2x32, vocabulary of MiniLM's size);
- perturbations that keep the weights: casts to bf16 and fp16, fp16 then bf16, fp16 next to bf16; and, for the
  ``nn.Linear`` weights only, emulated int8 (row-wise absmax, as bitsandbytes' LLM.int8 stores them) and nf4
  (blocks of 64, absmax, the 16 NF4 levels of QLoRA) rounding: torchao is not installed here, so both are emulated
  in float32. Quantized weights are left out of the signature (they cannot be compared value for value), so these
  two show why: their rounding is far above any usable tolerance;
- perturbations that change them: full fine-tuning (AdamW, lr 2e-5, weight decay 0.01, batch 8, SST-2 sample
  sentences of up to 64 tokens) for 8, 32 and 128 steps; relative Gaussian noise on every weight (0.1% to 1%);
  for the tiny model, another seed.

Each row gives the maximum over parameters and the parameter where it is reached; "all" uses every value of a
parameter (what an unbounded signature would see). Also measured: the same with the Linear weights left out (what
the check compares when one side is int8/nf4 quantized). Then, for 16 and :data:`SAMPLES` samples, whether
:data:`TOLERANCE` lies between the largest same-weights distance and the smallest one that must be refused
(fine-tunes, noise of 0.5% and more, another seed). Prints a table and writes
``benchmarks/results/fingerprint_tolerance.json``. Budget: about 20 minutes on 2 shared CPU cores (most of it the
128 fine-tuning steps of MiniLM)::

    python benchmarks/fingerprint_tolerance.py
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import transformers as T

from laddertune.core.backbones import load_backbone, load_tokenizer
from laddertune.core.discovery import discover_family
from laddertune.core.fingerprint import SAMPLES, TOLERANCE, signature_distances, value_signature

RESULTS = Path(__file__).parent / "results"
SST2 = Path(__file__).resolve().parents[1] / "laddertune" / "data" / "sample" / "sst2" / "train.jsonl"
SAMPLE_COUNTS = (16, 64, 256)
FINETUNE_STEPS = (8, 32, 128)
NOISE = (0.001, 0.0025, 0.005, 0.01)
# the 16 NF4 levels (Dettmers et al. 2023, QLoRA; bitsandbytes' nf4 code book)
NF4 = torch.tensor(
    [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
     -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
     0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
     0.7229568362236023, 1.0]
)  # fmt: skip


def _view(backbone) -> SimpleNamespace:
    """What value_signature reads of a LadderModel: its backbone and family (no side network needed)."""
    return SimpleNamespace(backbone=backbone, family=discover_family(backbone, "sequence_classification"))


def _linear_weights(backbone) -> set[str]:
    names = {f"{n}.weight" for n, m in backbone.named_modules() if isinstance(m, torch.nn.Linear)}
    head = tuple(f"{p}." for p in discover_family(backbone, "sequence_classification").cls_head)
    return {n for n in names if not n.startswith(head)}


def _all_distances(a, b) -> dict[str, float]:
    """Every value of every parameter (what an unbounded signature would see), as tensors."""
    head = tuple(f"{p}." for p in _view(a).family.cls_head)
    other = dict(b.named_parameters())
    out = {}
    for name, p in a.named_parameters():
        if name.startswith(head):
            continue
        x, y = p.detach().double(), other[name].detach().double()
        out[name] = float((x - y).norm() / x.norm()) if x.norm() > 0 else float(y.norm() > 0)
    return out


def _cast(backbone, *dtypes):
    out = copy.deepcopy(backbone)
    for dtype in dtypes:
        out = out.to(dtype)
    return out


def _int8_rowwise(w: torch.Tensor) -> torch.Tensor:
    scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
    return (w / scale).round().clamp(-127, 127) * scale


def _nf4(w: torch.Tensor, block: int = 64) -> torch.Tensor:
    flat = w.reshape(-1, block)  # (blocks, 64)
    scale = flat.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    index = ((flat / scale).unsqueeze(-1) - NF4).abs().argmin(dim=-1)
    return (NF4[index] * scale).reshape(w.shape)


def _quantize(backbone, fn):
    out = copy.deepcopy(backbone)
    linear = _linear_weights(out)
    with torch.no_grad():
        for name, p in out.named_parameters():
            if name in linear:
                p.copy_(fn(p))
    return out


def _noise(backbone, sigma: float, seed: int = 0):
    out = copy.deepcopy(backbone)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.mul_(1 + sigma * torch.randn(p.shape, generator=g))
    return out


def _finetune(backbone, tokenizer, steps: tuple[int, ...]) -> dict[int, torch.nn.Module]:
    """Full fine-tuning on SST-2 sentences; a copy of the backbone after each number of ``steps``."""
    rows = [json.loads(line) for line in SST2.read_text().splitlines()]
    model = copy.deepcopy(backbone).train()
    torch.manual_seed(0)  # dropout masks: the same fine-tune at every run
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    snapshots = {}
    for step in range(1, max(steps) + 1):
        idx = torch.randint(len(rows), (8,), generator=g).tolist()
        batch = tokenizer(
            [rows[i]["sentence"] for i in idx],
            truncation=True,
            max_length=64,
            padding=True,
            return_tensors="pt",
        )
        loss = model(**batch, labels=torch.tensor([rows[i]["label"] for i in idx])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step in steps:
            snapshots[step] = copy.deepcopy(model).eval()
    return snapshots


def _measure(reference, other, linear: set[str]) -> dict:
    """For each sample count: the max over parameters of the relative L2 distance, and where it is reached; the
    same over the parameters a quantized backbone still compares (no Linear weights)."""
    row = {}
    for samples in (*SAMPLE_COUNTS, None):
        if samples is None:
            d = _all_distances(reference, other)
        else:
            d = signature_distances(
                value_signature(_view(reference), samples), value_signature(_view(other), samples)
            )
        kept = {n: v for n, v in d.items() if n not in linear}
        worst, worst_kept = max(d, key=d.get), max(kept, key=kept.get)
        row["all" if samples is None else str(samples)] = {
            "max": d[worst],
            "at": worst,
            "max_without_linear": kept[worst_kept],
            "at_without_linear": worst_kept,
        }
    return row


def _tiny(vocab: int, seed: int):
    torch.manual_seed(seed)
    config = T.BertConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        num_labels=2,
    )  # fmt: skip
    return T.BertForSequenceClassification(config).eval()


def measure_backbone(name: str, backbone, tokenizer, other_seed=None) -> dict:
    linear = _linear_weights(backbone)
    same = {
        "bf16": _cast(backbone, torch.bfloat16),
        "fp16": _cast(backbone, torch.float16),
        "fp16 then bf16": _cast(backbone, torch.float16, torch.bfloat16),
        "int8 (Linear weights, emulated)": _quantize(backbone, _int8_rowwise),
        "nf4 (Linear weights, emulated)": _quantize(backbone, _nf4),
    }
    rows = {k: _measure(backbone, v, linear) for k, v in same.items()}
    # saved from a bf16 backbone, loaded in fp16: both sides rounded
    rows["bf16 vs fp16"] = _measure(same["bf16"], same["fp16"], linear)
    t0 = time.perf_counter()
    for steps, tuned in _finetune(backbone, tokenizer, FINETUNE_STEPS).items():
        rows[f"fine-tuned {steps} steps"] = _measure(backbone, tuned, linear)
        rows[f"fine-tuned {steps} steps, loaded in bf16"] = _measure(
            backbone, _cast(tuned, torch.bfloat16), linear
        )
    finetune_seconds = time.perf_counter() - t0
    for sigma in NOISE:
        rows[f"noise {sigma:.2%}"] = _measure(backbone, _noise(backbone, sigma), linear)
    if other_seed is not None:
        rows["another seed"] = _measure(backbone, other_seed, linear)
    return {
        "rows": rows,
        "parameters": len(value_signature(_view(backbone))),
        "finetune_seconds": finetune_seconds,
    }


SAME = ("bf16", "fp16", "fp16 then bf16", "bf16 vs fp16")  # must pass
REFUSED_PREFIXES = ("fine-tuned", "noise 0.50%", "noise 1.00%", "another seed")  # must be refused


def decision(results: dict, samples: int) -> dict:
    """The largest same-weights distance and the smallest must-refuse one over both backbones, at ``samples``,
    against :data:`TOLERANCE`."""
    key = str(samples)
    same = [(r["rows"][w][key]["max"], f"{b}: {w}") for b, r in results.items() for w in SAME]
    refused = [
        (row[key]["max"], f"{b}: {w}")
        for b, r in results.items()
        for w, row in r["rows"].items()
        if w.startswith(REFUSED_PREFIXES)
    ]
    (hi, hi_at), (lo, lo_at) = max(same), min(refused)
    return {
        "largest_same_weights": hi,
        "at": hi_at,
        "smallest_refused": lo,
        "refused_at": lo_at,
        "tolerance": TOLERANCE,
        "separates": hi < TOLERANCE < lo,
        "margin_above_same": TOLERANCE / hi,
        "margin_below_refused": lo / TOLERANCE,
    }


def main() -> None:
    torch.set_num_threads(2)
    tokenizer = load_tokenizer("minilm")
    minilm = load_backbone("minilm", "sequence_classification", num_labels=2).eval()
    vocab = minilm.config.vocab_size
    results = {
        "minilm": measure_backbone("minilm", minilm, tokenizer),
        "tiny": measure_backbone("tiny", _tiny(vocab, 0), tokenizer, other_seed=_tiny(vocab, 1)),
    }
    out = {
        "torch": torch.__version__,
        "transformers": T.__version__,
        "samples": SAMPLES,
        "tolerance": TOLERANCE,
        "decision": {str(k): decision(results, k) for k in (16, SAMPLES)},
        "results": results,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fingerprint_tolerance.json").write_text(json.dumps(out, indent=2) + "\n")
    for name, r in results.items():
        print(f"\n{name} ({r['parameters']} parameters; max over parameters of the relative L2 distance)")
        print(
            f"{'perturbation':42s}"
            + "".join(f"{k:>10s}" for k in (*map(str, SAMPLE_COUNTS), "all"))
            + f"   no Linear ({SAMPLES})"
        )
        for what, row in r["rows"].items():
            cells = "".join(f"{row[k]['max']:10.3%}" for k in (*map(str, SAMPLE_COUNTS), "all"))
            kept = row[str(SAMPLES)]
            print(f"{what:42s}{cells}   {kept['max_without_linear']:8.3%}  (largest at {kept['at']})")
    for samples, d in out["decision"].items():
        print(
            f"\n{samples} samples: same weights at most {d['largest_same_weights']:.3%} ({d['at']}); must-refuse at "
            f"least {d['smallest_refused']:.3%} ({d['refused_at']}); tolerance {d['tolerance']:.2%} separates them: "
            f"{d['separates']} (x{d['margin_above_same']:.2f} above, x{d['margin_below_refused']:.2f} below)"
        )


if __name__ == "__main__":
    main()
