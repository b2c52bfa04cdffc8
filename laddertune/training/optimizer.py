"""The optimizer of a run: ``--optimizer adamw|adamw8bit``.

``adamw`` is torch's AdamW: two float32 moments, 8 bytes of state per trainable parameter. ``adamw8bit`` is
bitsandbytes' ``AdamW8bit`` (Dettmers et al., 2022): both moments block-wise quantized to 8 bits, about 2 bytes per
parameter (plus one float32 absmax per 256 values of each moment); tensors under 4,096 values (biases, gates) keep float32 state,
as the library decides. For the 7B side network at r=8 (172.5M trainable parameters) that is 1.29 GiB of AdamW
state down to about 0.32 GiB.

Why bitsandbytes and not torchao's ``AdamW8bit``: measured on this project's CPU with the pinned torch (2.13),
bitsandbytes 0.50 runs its 8-bit AdamW on CPU and CUDA with plain tensors as state (saved like any other; 20 steps
of a 1M-parameter MLP: 0.61 s against torch AdamW's 0.49 s), while torchao 0.18 compiles its update with
``torch.compile`` (the same 20 steps: 28 s on a CPU, compilation included) and keeps the state as a tensor
subclass that safetensors cannot write; installing torchao also makes every ``import peft`` import it.

bitsandbytes is optional (``pip install bitsandbytes``): without it, or on a device where its 8-bit optimizer cannot
run, the run stops before anything is written, with a one-line error. Once installed, it is imported by
``laddertune.training``'s imports of peft/transformers too (a few seconds, and on CPU one warning line about a 4-bit
matmul kernel it cannot fetch, which the optimizer does not use).
"""

from __future__ import annotations

import logging

import torch

from ..core.compute import FUSED_ADAMW, OPTIMIZERS
from ..errors import ConfigError

logger = logging.getLogger(__name__)


def make_optimizer(
    params: list[torch.nn.Parameter], name: str, *, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` (betas 0.9/0.999, eps 1e-8, as the paper's AdamW)."""
    kwargs = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=weight_decay)
    if name == "adamw":
        # torch's fused kernel where it has one (CUDA, CPU): one call over every tensor and no parameter-sized
        # temporaries (foreach, CUDA's default, keeps a few alive at the step: the peak of a small side network's
        # step; benchmarks/results/llm_scale_memory.md); CPU's default, a Python loop of a dozen ops per tensor,
        # took 3.7 ms of a MiniLM side step against the fused kernel's 1.1
        # (benchmarks/results/side_step_profile.md)
        return torch.optim.AdamW(params, **kwargs, fused=device.type in FUSED_ADAMW or None)
    if name == "adamw8bit":
        return adamw8bit_class(device)(params, **kwargs)
    raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def adamw8bit_class(device: torch.device):
    """bitsandbytes' ``AdamW8bit``, after one probe step on ``device``; ConfigError when it is missing or
    cannot run there."""
    try:
        # Deferred: bitsandbytes is an optional dependency with native kernels (and slow to import).
        import bitsandbytes
    except ImportError:
        raise ConfigError(
            "--optimizer adamw8bit needs bitsandbytes: pip install bitsandbytes (or use --optimizer adamw)"
        ) from None
    cls = bitsandbytes.optim.AdamW8bit
    probe = torch.nn.Parameter(torch.zeros(4096, device=device))  # 4,096 values: the 8-bit path, not float32
    probe.grad = torch.ones_like(probe)
    try:
        cls([probe], lr=1e-3).step()
    except Exception as e:  # whatever the backend raises on a device it has no kernel for
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(
            f"bitsandbytes {bitsandbytes.__version__} AdamW8bit cannot run on {device}: {first}"
        ) from None
    logger.info("optimizer: bitsandbytes %s AdamW8bit on %s", bitsandbytes.__version__, device)
    return cls


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the optimizer's tensor state (moments, quantization maps and scales; step counters included)."""
    return sum(
        t.numel() * t.element_size()
        for s in optimizer.state.values()
        for t in s.values()
        if torch.is_tensor(t)
    )
