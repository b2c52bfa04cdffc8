"""Which backbone a side network was trained on, recognised in any dtype: float32, bf16, fp16, int8 or nf4.

A side checkpoint records two things about its backbone (in ``ladder_config.json``):

- ``backbone_fingerprint``: a hash of the backbone's config (less its dtype and quantization settings) and of its
  parameter names. It does not depend on the dtype; it tells architectures apart.
- ``backbone_signature``: for every parameter that is not quantized, a few evenly strided values (as float32).
  Loading compares each parameter the two backbones share unquantized by relative L2 distance: the same weights in
  bf16 differ by about 2**-9 (0.2%), so :data:`TOLERANCE` of 2% accepts any float dtype, while a different
  backbone (another seed, another fine-tune) is off by order one in its embeddings. Quantized weights (int8, nf4)
  cannot be compared value for value with their float originals and are left out on the side that has them; the
  embeddings, norms and biases they leave are enough to tell backbones apart.

An exact hash of rounded values would not do: the same weight rounded to bf16 directly, or through fp16 first,
differs in the last bit now and then, so the comparison has to be a tolerance.
"""

from __future__ import annotations

import hashlib
import json

import torch

from .quantization import is_quantized_weight

SAMPLES = 16  # values kept per parameter: a 7B Llama's 291 parameters make about 5k numbers in the JSON
TOLERANCE = 0.02  # largest relative L2 distance between the samples of the same parameter in two dtypes
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


def value_signature(model) -> dict[str, list[float]]:
    """``{parameter name: SAMPLES evenly strided values}`` of every unquantized backbone parameter."""
    signature = {}
    for name, p in _parameters(model):
        if is_quantized_weight(p) or not p.is_floating_point():
            continue
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // SAMPLES)
        signature[name] = [float(f"{v:.6g}") for v in flat[::step][:SAMPLES].float().cpu().tolist()]
    return signature


def signature_mismatch(saved: dict[str, list[float]], actual: dict[str, list[float]]) -> str | None:
    """None when the two signatures are of the same weights, else why not (the worst parameter)."""
    common = sorted(set(saved) & set(actual))
    if not common:
        return "no unquantized parameter in common to compare"
    worst, worst_name = 0.0, None
    for name in common:
        a, b = torch.tensor(saved[name]), torch.tensor(actual[name])
        if a.shape != b.shape:
            return f"parameter {name} has another size"
        distance = float((a - b).norm() / a.norm().clamp_min(1e-12)) if a.norm() > 0 else float(b.norm() > 0)
        if not distance <= worst:  # NaN counts as a mismatch
            worst, worst_name = distance, name
    if worst_name is not None and not worst <= TOLERANCE:
        return f"parameter {worst_name} differs by {worst:.1%} (relative)"
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
