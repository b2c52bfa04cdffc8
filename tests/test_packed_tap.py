"""Packed taps (a tap cache's form: the stored positions' rows only): placed as the padded tap, and a side network
on them gives the losses and gradients it gives on the padded taps, its down-projections fed the rows alone."""

from __future__ import annotations

import pytest
import torch
from conftest import CASES, tiny_backbone, tiny_batch

from laddertune import LadderConfig, get_ladder_model
from laddertune.core.packed_tap import PackedTap
from laddertune.core.taps import collect_taps


@pytest.mark.parametrize(
    "masks",
    [
        [[1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 0, 0, 0, 0]],  # right padding
        [[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]],  # one row full
        [[0, 0, 0, 0, 0], [1, 1, 1, 0, 0]],  # a row with none stored
        [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]],  # left padding
        [[1, 0, 1, 1, 0], [1, 1, 0, 0, 0]],  # scattered positions
    ],
)
def test_a_packed_tap_places_each_examples_rows_at_its_stored_positions(masks):
    mask = torch.tensor(masks, dtype=torch.bool)
    rows = [torch.randn(int(m.sum()), 3) + 1 for m in mask]  # + 1: no stored value is a zero
    want = torch.zeros(*mask.shape, 3)
    for i, row in enumerate(rows):
        want[i, mask[i].nonzero().squeeze(1)] = row
    tap = PackedTap(torch.cat(rows), mask)
    assert torch.equal(tap.padded(), want)
    values = torch.randn(tap.rows.shape[0], 2, requires_grad=True)  # a per-row map's output
    placed = tap.unpack(values)
    grad = torch.randn(placed.shape)
    placed.backward(grad)
    assert torch.equal(values.grad, grad[mask])  # each row's gradient from its own position


def test_moving_and_bad_rows():
    mask = torch.tensor([[1, 1, 0]], dtype=torch.bool)
    tap = PackedTap(torch.randn(2, 4), mask)
    assert tap.to(torch.float32) is tap
    half = tap.to(torch.bfloat16)
    assert half.rows.dtype == torch.bfloat16 and half.index is tap.index and half.rows.shape == (2, 4)
    double = tap.to("cpu", torch.float64)  # a device and a dtype, as the side network moves its taps
    assert (
        double.rows.dtype == torch.float64
        and double.rows.device.type == "cpu"
        and torch.equal(double.padded(), tap.padded().double())
    )
    with pytest.raises(ValueError, match="one row per stored position"):
        PackedTap(torch.randn(3, 4), mask)


def stored(batch: dict, stack: str) -> torch.Tensor:
    """The positions a tap cache stores (:func:`laddertune.taps.store._masks`)."""
    return batch["labels"] != -100 if stack == "decoder" else batch["attention_mask"].bool()


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "side-checkpointing"])
@pytest.mark.parametrize(("family", "head"), CASES)
def test_a_side_network_on_packed_taps_gives_the_padded_taps_loss_and_gradients(family, head, checkpointing):
    model = get_ladder_model(
        tiny_backbone(family, head), LadderConfig(reduction_factor=4, side_checkpointing=checkpointing)
    )
    with torch.no_grad():  # as after some training: the side's output reaches the loss
        model.side.up.weight.normal_(std=0.1)
    batch = tiny_batch(family, head)
    taps = collect_taps(model, **batch)
    padded, packed = {}, {}
    for stack, stack_taps in taps.items():
        mask = stored(batch, stack)
        padded[stack] = {t: v * mask[..., None] for t, v in stack_taps.items()}  # zeros where not stored
        packed[stack] = {t: PackedTap(v[mask], mask) for t, v in stack_taps.items()}
    fed = []
    for stack in model.side.stacks.values():
        for down in (stack.embed_down, *stack.downs):
            down.register_forward_pre_hook(lambda module, args: fed.append(args[0].shape))

    def loss_and_grads(given):
        model.zero_grad(set_to_none=True)
        loss = model(**batch, taps=given).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    torch.manual_seed(0)
    want, want_grads = loss_and_grads(padded)
    fed.clear()
    torch.manual_seed(0)
    got, got_grads = loss_and_grads(packed)
    torch.testing.assert_close(got, want)
    assert got_grads.keys() == want_grads.keys() and got_grads
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    rows = {int(stored(batch, s).sum()) for s in taps}
    assert fed and all(len(shape) == 2 and shape[0] in rows for shape in fed)  # the rows alone
