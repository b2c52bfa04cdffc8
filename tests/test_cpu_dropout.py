"""The side network's CPU dropout (:mod:`laddertune.core.cpu_dropout`): the masks' statistics and backward, the
attention it computes against torch's SDPA, what it intercepts and what it leaves to torch, and the switch back to
torch's own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from laddertune.core import cpu_dropout
from laddertune.core.cpu_dropout import attention, dropout, fast_cpu_dropout


def _ops(fn) -> dict[str, int]:
    """aten op -> calls while ``fn`` runs."""
    with torch.profiler.profile() as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_masks_keep_one_minus_p_and_keep_the_expectation(p):
    torch.manual_seed(0)
    x = torch.ones(1_000_000, requires_grad=True)
    y = dropout(x, p)
    kept = (y > 0).float().mean().item()
    assert abs(kept - (1 - p)) < 0.002
    assert abs(y.mean().item() - 1) < 0.005
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(1 / (1 - p)), rtol=1e-4))
    y.backward(torch.full_like(y, 2.0))
    torch.testing.assert_close(x.grad, 2 * y.detach())  # the same mask and scale in the backward


def test_masks_follow_torch_seed_and_differ_between_draws():
    torch.manual_seed(5)
    a, b = dropout(torch.ones(4096), 0.3), dropout(torch.ones(4096), 0.3)
    torch.manual_seed(5)
    assert torch.equal(dropout(torch.ones(4096), 0.3), a)
    assert not torch.equal(a, b)


def test_p_within_half_a_level_of_one_keeps_one_level():
    torch.manual_seed(0)
    y = dropout(torch.ones(1_000_000), 1 - 1e-6)
    assert torch.isfinite(y).all() and set(y.unique().tolist()) <= {0.0, 65536.0}


def test_odd_sizes_and_shapes():
    torch.manual_seed(0)
    for shape in [(1,), (3,), (5, 7), (2, 3, 5, 1)]:
        y = dropout(torch.ones(shape), 0.5)
        assert y.shape == shape and set(y.unique().tolist()) <= {0.0, 2.0}


@pytest.mark.parametrize(
    "case", ["none", "bool_mask", "float_mask", "causal", "gqa", "scale"], ids=lambda c: c
)
def test_attention_at_p_zero_is_torchs_sdpa(case):
    """At p = 0 every element is kept with scale 1: what remains is the attention itself, equal to torch's, and
    so are the gradients of the queries, keys, values and a float mask (a trained bias), though a bool or causal
    mask is applied outside autograd."""
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 6, 8), torch.randn(2, 4, 6, 8)
    kwargs = {}
    if case == "bool_mask":
        kwargs["attn_mask"] = torch.rand(2, 1, 5, 6) > 0.3
        kwargs["attn_mask"][..., 0] = True  # no row fully masked
    elif case == "float_mask":
        kwargs["attn_mask"] = torch.randn(2, 4, 5, 6, requires_grad=True)
    elif case == "causal":
        k, v = k[:, :, :5], v[:, :, :5]
        kwargs["is_causal"] = True
    elif case == "gqa":
        k, v = k[:, :2], v[:, :2]
        kwargs["enable_gqa"] = True
    elif case == "scale":
        kwargs["scale"] = 0.3
    leaves = [t.requires_grad_() for t in (q, k, v)] + [t for t in kwargs.values() if torch.is_tensor(t)]
    leaves = [t for t in leaves if t.requires_grad]
    ours = attention(q, k, v, dropout_p=0.0, **kwargs)
    theirs = F.scaled_dot_product_attention(q, k, v, **kwargs)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn_like(ours)
    for a, b in zip(
        torch.autograd.grad(ours, leaves, grad), torch.autograd.grad(theirs, leaves, grad), strict=True
    ):
        torch.testing.assert_close(a, b)


def test_attention_drops_probabilities():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 1, 64, 8), torch.randn(1, 1, 64, 8), torch.eye(64)[None, None]
    probs = attention(q, k, v, dropout_p=0.5)  # v = identity: the output is the dropped probabilities
    kept = (probs > 0).float().mean().item()
    assert abs(kept - 0.5) < 0.05
    reference = torch.softmax(q @ k.transpose(-2, -1) / 8**0.5, -1)
    torch.testing.assert_close(probs[probs > 0], 2 * reference[probs > 0])


def test_the_context_routes_cpu_training_dropout_and_nothing_else():
    x = torch.randn(64, 32)
    with fast_cpu_dropout(True, x.device):
        torch.manual_seed(1)
        routed = F.dropout(x, 0.2)
        torch.manual_seed(1)
        module = torch.nn.Dropout(0.2)(x)
        assert torch.equal(F.dropout(x, 0.2, training=False), x)
        assert torch.equal(F.dropout(x, 0.0), x)
        assert torch.equal(F.dropout(x, 1.0), torch.zeros_like(x))
        assert "aten::bernoulli_" in _ops(lambda: F.dropout(x.clone(), 0.2, inplace=True))  # torch's own
        assert "aten::bernoulli_" not in _ops(lambda: F.dropout(x, 0.2))
    torch.manual_seed(1)
    assert torch.equal(routed, dropout(x, 0.2)) and torch.equal(module, routed)
    torch.manual_seed(1)
    assert not torch.equal(F.dropout(x, 0.2), routed)  # outside the context: torch's bernoulli_ draws
    for args in ((False, x.device), (True, torch.device("meta"))):  # not training, or not on the CPU: a no-op
        with fast_cpu_dropout(*args):
            torch.manual_seed(1)
            assert not torch.equal(F.dropout(x, 0.2), routed)


def test_the_environment_variable_keeps_torchs_dropout():
    """``LADDERTUNE_CPU_DROPOUT=torch`` is read at import. That every family's side trunk draws its masks here, and
    with the switch off from torch, is the family matrix's test
    (``tests/test_families.py::test_family_side_trunk_dropouts_draw_laddertunes_cpu_masks``)."""
    code = "from laddertune.core import cpu_dropout; print(cpu_dropout.ENABLED)"
    for value, enabled in (("torch", "False"), ("", "True")):
        env = {**os.environ, cpu_dropout.ENV: value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == enabled


def test_attention_under_bf16_autocast_computes_in_float32_and_returns_bf16():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.MATH):  # the kernel with dropout
        ours = attention(q, k, v, dropout_p=0.0)
        torchs = F.scaled_dot_product_attention(q, k, v)
    assert ours.dtype == torchs.dtype == torch.bfloat16
    torch.testing.assert_close(ours, torchs)
