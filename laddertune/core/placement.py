"""A frozen backbone larger than one device: accelerate's big-model placement, the side network on one device.

:func:`place_backbone` asks accelerate where each backbone block fits (``infer_auto_device_map``, never splitting
a module the model lists in ``_no_split_modules``) and dispatches it there (``dispatch_model``: hooks move each
block's inputs to its device; blocks may also be offloaded to the CPU or disk). LST suits this: the backbone only
runs forward, so no gradient crosses devices. The side network stays whole on one device and
:meth:`LadderModel.run_stack` brings the taps to it.

Written with accelerate's own functions rather than ``from_pretrained(device_map=...)`` so that a LadderModel built
around any backbone (already loaded, or from a checkpoint) can be placed the same way.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


def plan_placement(backbone, max_memory: dict | None = None) -> dict[str, str | int]:
    """accelerate's device map for ``backbone``: module name -> device (GPU index, ``"cpu"`` or ``"disk"``)."""
    from accelerate import infer_auto_device_map  # heavy; only needed when placing

    no_split = list(getattr(backbone, "_no_split_modules", None) or [])
    return infer_auto_device_map(backbone, max_memory=max_memory, no_split_module_classes=no_split)


def place_backbone(
    model,
    device_map: str | dict = "auto",
    *,
    max_memory: dict | None = None,
    side_device: str | torch.device | None = None,
    offload_dir: str | None = None,
) -> dict:
    """Spread ``model.backbone`` over the visible devices; put the side network on ``side_device``.

    Args:
        model: a LadderModel (its side weights already loaded: offloaded backbone weights cannot be fingerprinted).
        device_map: ``"auto"`` (accelerate decides, within ``max_memory``) or an explicit map.
        max_memory: per-device budgets, e.g. ``{0: "10GiB", 1: "10GiB", "cpu": "30GiB"}``.
        side_device: default: the first GPU the map uses, else the CPU.
        offload_dir: where ``"disk"`` entries of the map are written.

    Returns:
        The device map used.
    """
    from accelerate import dispatch_model  # heavy; only needed when placing

    backbone = model.backbone
    if device_map == "auto":
        device_map = plan_placement(backbone, max_memory)
    if side_device is None:
        gpus = sorted(d for d in device_map.values() if isinstance(d, int))
        side_device = torch.device("cuda", gpus[0]) if gpus else torch.device("cpu")
    main = next((d for d in device_map.values() if d not in ("disk", "meta")), "cpu")
    dispatch_model(backbone, device_map=device_map, main_device=main, offload_dir=offload_dir)
    model.side.to(side_device)
    logger.info(
        "backbone placed over %s; side network on %s", sorted(set(map(str, device_map.values()))), side_device
    )
    return device_map
