"""Re-entry (LadderConfig.reentry_layers): the side output joins the backbone's residual stream below its top K
layers, which run again on it before the final norm and the LM head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import predicted_and_real_peak, tiny_backbone, tiny_batch
from test_families import CASES, LM, batch, tiny

import laddertune
from laddertune import ConfigError, LadderConfig, LadderModel, get_ladder_model
from laddertune.core.cache import LadderCache

# OPT's last state goes through a final norm and an optional projection: refused (test_refusals)
DECODER_LMS = [c.values[0] for c in CASES if c.values[1] == LM and c.values[0] != "opt"]


@pytest.mark.parametrize("name", DECODER_LMS)
@pytest.mark.parametrize("k", [1, 2])
def test_step0_logits_equal_the_backbones_bit_for_bit(name, k):
    """Up starts at zero: the top layers run again on the same stream, with the same masks and positions."""
    backbone = tiny(name, LM)
    data = batch(LM)
    with torch.no_grad():
        expected = backbone(**data)
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, reentry_layers=k)).eval()
    with torch.no_grad():
        out = model(**data)
    torch.testing.assert_close(out.logits, expected.logits.float(), rtol=0, atol=0)
    torch.testing.assert_close(out.loss, expected.loss.float(), rtol=0, atol=0)


def test_each_rerun_layer_keeps_its_own_mask_past_a_sliding_window():
    """Gemma 2 alternates sliding-window and global layers, each given the mask of its kind: past the window (16
    here) the two differ, and a re-run that reused one layer's mask for the other would not be the backbone."""
    backbone = tiny("gemma2", LM)
    kinds = backbone.config.layer_types
    assert len(set(kinds)) == 2 and backbone.config.sliding_window < 24
    ids = torch.randint(3, backbone.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = backbone(ids).logits
        model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, reentry_layers=len(kinds))).eval()
        torch.testing.assert_close(model(ids).logits, expected.float(), rtol=0, atol=0)


def trained(k: int = 1, seed: int = 0) -> LadderModel:
    backbone = tiny_backbone("llama", "causal_lm").eval()
    model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, reentry_layers=k)).eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.5)  # as after some training: the side's output counts
    return model


def test_the_side_output_changes_the_top_layers_input_and_only_the_side_learns():
    model = trained()
    data = tiny_batch("llama", "causal_lm")
    plain = model.backbone(**data).loss
    out = model(**data)
    assert not torch.isclose(out.loss, plain.float())
    out.loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert model.side.up.weight.grad.abs().sum() > 0
    stack = model.side.stacks["body"]
    assert any(p.grad is not None and p.grad.any() for p in stack.parameters())


def test_the_chunked_loss_gives_the_plain_loss_and_gradients():
    model = trained()
    data = tiny_batch("llama", "causal_lm")
    model.ladder_config.loss_chunk_size = 0
    plain = model(**data)
    plain.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.ladder_config.loss_chunk_size = 2
    chunked = model(**data)
    assert chunked.logits is None
    chunked.loss.backward()
    torch.testing.assert_close(chunked.loss, plain.loss)
    assert grads
    for n, p in model.side.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-5, atol=1e-6, msg=n)


def test_side_checkpointing_recomputes_the_rerun_layers_for_the_same_loss_and_gradients(monkeypatch):
    """With side checkpointing the re-run layers keep no activations for the backward (only each layer's input,
    inside torch's checkpoint), and loss and gradients are those of the run that keeps them."""
    from laddertune.core import reentry

    saved = []  # bytes the re-run layers save for the backward, one entry per forward
    original = reentry.rerun_layers

    def counting(*args, **kwargs):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = original(*args, **kwargs)
        saved.append(total[0])
        return out

    model = trained(k=2).train()  # (before the patch: building runs a forward of its own)
    monkeypatch.setattr(reentry, "rerun_layers", counting)
    data = tiny_batch("llama", "causal_lm")
    results = {}
    for on in (False, True):
        if on:
            model.activation_checkpointing_enable()
        else:
            model.activation_checkpointing_disable()
        model.zero_grad()
        out = model(**data)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.side.named_parameters() if p.grad is not None}
        results[on] = out.loss.detach(), grads
    torch.testing.assert_close(results[True][0], results[False][0], rtol=0, atol=0)
    assert results[False][1].keys() == results[True][1].keys() and results[False][1]
    for n, g in results[False][1].items():
        torch.testing.assert_close(results[True][1][n], g, rtol=0, atol=0, msg=n)
    kept, checkpointed = saved
    assert kept > 0 and checkpointed < kept / 4, saved


@pytest.mark.parametrize("beams", [1, 2])
def test_generation_with_the_cache_equals_generation_without_it(beams):
    """The re-run layers keep their own keys and values (LadderCache.reentry): incremental decoding gives what
    recomputing the whole sequence gives, greedy and with beam search."""
    model = trained()
    prompt = {"input_ids": torch.tensor([[5, 9, 14, 3, 7], [8, 2, 11, 6, 4]])}
    settings = dict(max_new_tokens=6, do_sample=False, num_beams=beams, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(**prompt, **settings)
        recomputed = model.generate(**prompt, **settings, use_cache=False)
    assert torch.equal(cached, recomputed)
    with torch.no_grad():  # the side output changes what is generated
        plain = model.backbone.generate(**prompt, **settings)
    assert not torch.equal(cached, plain)


def test_the_cache_holds_the_rerun_layers_apart():
    model = trained(k=1)
    cache = LadderCache()
    ids = torch.tensor([[5, 9, 14, 3]])
    with torch.no_grad():
        model(ids, use_cache=True, cache=cache)
    top = len(model.backbone_layers("body")) - 1
    assert cache.reentry is not None and cache.reentry.get_seq_length(top) == 4
    assert (
        cache.reentry.get_seq_length(0) == 0
    )  # the layers below the re-entry run once, in the backbone's pass
    assert not torch.equal(cache.reentry.layers[top].keys, cache.backbone.layers[top].keys)


def test_saved_and_loaded_with_its_setting(tmp_path):
    model = trained(k=2)
    model.save_pretrained(tmp_path)
    again = LadderModel.from_pretrained(model.backbone, tmp_path).eval()
    assert again.ladder_config.reentry_layers == 2
    data = tiny_batch("llama", "causal_lm")
    with torch.no_grad():
        torch.testing.assert_close(again(**data).logits, model(**data).logits, rtol=0, atol=0)


def test_refusals():
    llama = tiny_backbone("llama", "causal_lm")
    with pytest.raises(ConfigError, match="causal LM heads"):
        get_ladder_model(tiny_backbone("bert", "sequence_classification"), LadderConfig(reentry_layers=1))
    with pytest.raises(ConfigError, match="final_shortcut"):
        get_ladder_model(llama, LadderConfig(reduction_factor=4, reentry_layers=1, final_shortcut=False))
    with pytest.raises(ConfigError, match="final_shortcut"):
        get_ladder_model(llama, LadderConfig(reduction_factor=4, reentry_layers=1, final_gate=True))
    depth = len(llama.model.layers)
    with pytest.raises(ConfigError, match=f"more than the backbone's {depth} layers"):
        get_ladder_model(llama, LadderConfig(reduction_factor=4, reentry_layers=depth + 1))
    with pytest.raises(ConfigError, match="reentry_layers"):
        LadderConfig(reentry_layers=-1)
    with pytest.raises(ConfigError, match="one final norm"):
        get_ladder_model(tiny("opt", LM), LadderConfig(reduction_factor=4, reentry_layers=1))
    model = trained()
    data = tiny_batch("llama", "causal_lm")
    with pytest.raises(ValueError, match="needs the backbone, not taps"):
        model.side_forward(**data, taps=model.backbone_taps(**data))


def test_the_command_line_refuses_a_tap_cache_in_one_line(tmp_path, capsys):
    """Refused before anything loads (the classifier and the other refusals: test_refusals, as ConfigErrors)."""
    from laddertune.cli import main

    data = str(Path(laddertune.__file__).parent / "data" / "sample" / "instructions" / "train.jsonl")
    argv = ["train", "--backbone", "smollm2", "--train-file", data, "--reentry-layers", "2", "--tap-cache",
            str(tmp_path / "taps"), "--output-dir", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "tap_cache and reentry_layers" in err[0], err
    assert not (tmp_path / "run").exists() and not (tmp_path / "taps").exists()


def test_a_bfloat16_backbone_reruns_in_its_dtype_and_the_side_learns():
    backbone = tiny_backbone("llama", "causal_lm").eval()
    config = LadderConfig(reduction_factor=4, reentry_layers=1, backbone_dtype="bfloat16")
    model = get_ladder_model(backbone, config)
    data = tiny_batch("llama", "causal_lm")
    with torch.no_grad():
        model.side.up.weight.normal_(std=0.5)
    out = model(**data)
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.side.up.weight.grad.abs().sum() > 0
    assert model.side.up.weight.dtype == torch.float32  # master weights


def test_weights_saved_with_another_k_are_refused_on_resume(tmp_path):
    """The same side weights re-enter at another depth as another network: resuming names the setting."""
    from laddertune.errors import CheckpointError
    from laddertune.methods.registry import get_method

    trained(k=2).save_pretrained(tmp_path)
    method = get_method("lst")
    assert method.read_weights(trained(k=2), tmp_path)  # the same setting loads
    with pytest.raises(CheckpointError, match="reentry_layers=2.*--reentry-layers"):
        method.read_weights(trained(k=1), tmp_path)


@pytest.mark.parametrize("checkpointing", [True, False])
def test_the_memory_prediction_matches_a_real_cpu_run_within_2_percent(checkpointing):
    """The predictor traces re-entry's code as it runs: with side checkpointing (the LM default) the re-run layers
    keep only their inputs, without it their activations."""
    config = T.LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    kw = dict(reduction_factor=2, loss_chunk_size=128, reentry_layers=2, side_checkpointing=checkpointing)
    shape = dict(batch_size=2, source_length=512, target_length=1)
    p, real = predicted_and_real_peak(config, "lst", "causal_lm", shape, **kw)
    assert p.settings["reentry_layers"] == 2 and p.settings["side_checkpointing"] is checkpointing
    assert abs(p.peak_bytes - real) / real < 0.02, (p.peak_bytes, real)
