"""Which backbone a side network was trained on, recognised in any dtype: float32, bf16, fp16, int8 or nf4.

A side checkpoint records two things about its backbone (in ``ladder_config.json``):

- ``backbone_fingerprint``: a hash of the backbone's config (less its dtype and quantization settings) and of its
  parameter names. It does not depend on the dtype; it tells architectures apart.
- ``backbone_signature``: for every parameter that is not quantized, :data:`SAMPLES` evenly strided values (as
  float32). Loading compares each parameter the two backbones share unquantized by the relative L2 distance of its
  samples and refuses when the largest over the parameters exceeds :data:`TOLERANCE`. Quantized weights (int8, nf4)
  cannot be compared value for value with their float originals (emulated int8 rounding moves them by 0.6-4.2%,
  nf4 by 9.7-17%) and are left out on the side that has them; the embeddings, norms and biases they leave still tell
  backbones apart.

Where the tolerance sits was measured (``benchmarks/fingerprint_tolerance.py``, results in
``benchmarks/results/fingerprint_tolerance.json``), on MiniLM and a tiny random BERT, with 256 samples a parameter:
the same weights after a bf16 or fp16 cast, fp16 then bf16, or saved in bf16 and loaded in fp16, differ by at most
0.26% (the largest parameter; bf16 rounds to 2**-9 relative); full fine-tuning (AdamW, lr 2e-5) for 8 steps moves
MiniLM's signature by 0.59% (32 steps: 0.95%, 128 steps: 3.4%), 0.5% relative noise on every weight by 0.57-0.67%,
another seed by order one. :data:`TOLERANCE` = 0.4% lies between (1.56x the largest cast, 1.42x under the smallest
must-refuse distance measured). What it cannot see: a change smaller than a bf16 rounding (noise of 0.25%, a
fine-tune of a few steps at a small learning rate), and, when one side is quantized, a change confined to the
``nn.Linear`` weights (a merged LoRA): those are not compared then. Checkpoints written with 16 samples a parameter
(before this was measured) are compared at their own 16 positions, with the same tolerance (at 16 samples: same
weights at most 0.26%, must-refuse at least 0.58%).

An exact hash of rounded values would not do: the same weight rounded to bf16 directly, or through fp16 first,
differs in the last bit now and then, so the comparison has to be a tolerance.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .quantization import is_quantized_weight

# values kept per parameter: MiniLM's ladder_config.json holds 26k of them (0.46 MB), a 7B Llama's about 75k
SAMPLES = 256
# the largest relative L2 distance of a parameter's samples that still counts as the same weights (measured: above)
TOLERANCE = 0.004
# fp16's subnormal spacing: values under 6.1e-5 round by up to half of it, whatever their size (a relative error
# that grows without bound as they shrink); allowed per value, absolute, so that tiny parameters pass in fp16
_SUBNORMAL = 2.0**-24
_DROPPED_KEYS = (
    "_name_or_path",
    "transformers_version",
    "id2label",
    "label2id",
    "num_labels",
    "problem_type",
    "architectures",
    "torch_dtype",
    "dtype",
    "_commit_hash",
    "quantization_config",
)


# Runtime switches, not properties of the weights: transformers.Trainer sets ``config.use_cache = False``.
_RUNTIME_KEYS = ("use_cache",)


def _config_json(backbone, legacy: bool = False) -> str:
    cfg = backbone.config.to_dict()
    for key in _DROPPED_KEYS + (() if legacy else _RUNTIME_KEYS):
        cfg.pop(key, None)
    return json.dumps(cfg, sort_keys=True, default=str)


def _parameters(model):
    """The backbone's parameters by name, without its new task head (which LST never uses)."""
    head_prefixes = tuple(f"{path}." for path in model.family.cls_head)
    return [(n, p) for n, p in sorted(model.backbone.named_parameters()) if not n.startswith(head_prefixes)]


def structure_fingerprint(model) -> str:
    """A dtype-free hash of the backbone's config and parameter names (16 hex digits)."""
    h = hashlib.sha256(_config_json(model.backbone).encode())
    for name, _ in _parameters(model):
        h.update(name.encode())
    return h.hexdigest()[:16]


def value_signature(model, samples: int = SAMPLES) -> dict[str, list[float]]:
    """``{parameter name: samples evenly strided values}`` of every unquantized backbone parameter."""
    signature = {}
    for name, p in _parameters(model):
        if is_quantized_weight(p) or not p.is_floating_point():
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        signature[name] = [float(f"{v:.6g}") for v in flat[::step][:samples].float().cpu().tolist()]
    return signature


def signature_samples(signature: dict[str, list[float]]) -> int:
    """How many values per parameter a saved signature holds (16 before the tolerance was measured)."""
    return max(1, max((len(v) for v in signature.values() if isinstance(v, list)), default=SAMPLES))


def signature_distances(saved: dict[str, list[float]], actual: dict[str, list[float]]) -> dict[str, float]:
    """Per parameter both signatures hold: the relative L2 distance of the samples (``inf`` for another size,
    NaN when a value is NaN)."""
    distances = {}
    for name in sorted(set(saved) & set(actual)):
        a = torch.tensor(saved[name], dtype=torch.float64)
        b = torch.tensor(actual[name], dtype=torch.float64)
        if a.shape != b.shape:
            distances[name] = float("inf")
            continue
        if a.norm() > 0:
            excess = max(0.0, float((a - b).norm()) - _SUBNORMAL * len(a) ** 0.5)
            distances[name] = excess / float(a.norm())
        else:  # an all-zero sample: equal only to zeros
            distances[name] = 0.0 if b.norm() == 0 else float("inf")
    return distances


def signature_mismatch(
    saved: dict[str, list[float]], actual: dict[str, list[float]], tolerance: float = TOLERANCE
) -> str | None:
    """None when the two signatures are of the same weights, else why not (the worst parameter)."""
    distances = signature_distances(saved, actual)
    if not distances:
        return "no unquantized parameter in common to compare"
    resized = next((n for n in distances if len(saved[n]) != len(actual[n])), None)
    if resized is not None:
        return f"parameter {resized} has another size"
    worst_name = max(distances, key=lambda n: (distances[n] != distances[n], distances[n]))  # NaN first
    worst = distances[worst_name]
    if not worst <= tolerance:  # NaN counts as a mismatch
        return f"parameter {worst_name} differs by {worst:.2%} (relative)"
    return None


def legacy_fingerprint(model) -> str:
    """The fingerprint of laddertune 0.1 checkpoints (dtype-dependent), still checked when loading those."""
    h = hashlib.sha256(_config_json(model.backbone, legacy=True).encode())
    backbone, family = model.backbone, model.family
    head_prefixes = tuple(f"{path}." for path in family.cls_head)
    for name, tensor in sorted(backbone.state_dict().items()):
        if name.startswith(head_prefixes):
            continue
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // 4096)
        sample = flat[::step][:4096].to(torch.float32).cpu()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]
