"""Long context end to end, on tiny models: the defaults an LM head gets (projected taps, side checkpointing, the
chunked loss) give the plain path's loss and gradients at 4k tokens, from the backbone or from its taps; the memory
predictor matches a real CPU run of those defaults; ``--fit``'s search."""

from __future__ import annotations

import pytest
import torch
import transformers as T
from conftest import predicted_and_real_peak

from laddertune import LadderConfig, get_ladder_model
from laddertune.cli.main import main
from laddertune.core.config import loss_chunk_default
from laddertune.core.taps import collect_taps
from laddertune.memory import predict_memory
from laddertune.memory.fit import fit_sizes, largest_fit, parse_bytes

LONG = 4096


def tiny_llama(vocab: int = 64):
    cfg = T.LlamaConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=LONG,
    )  # fmt: skip
    torch.manual_seed(0)
    return T.LlamaForCausalLM(cfg)


def test_lm_defaults_are_the_chunked_paths():
    model = get_ladder_model(tiny_llama(), LadderConfig(reduction_factor=4))
    cfg = model.ladder_config
    # full-width taps without calibration data to fit a projection (laddertune train gives it: pca)
    assert cfg.side_checkpointing is True and cfg.loss_chunk_size == 1024 and cfg.tap_projection == "none"
    # the chunk follows the vocabulary: float32 logits of 2^24 values, 64 to 1024 positions
    assert [loss_chunk_default(v) for v in (None, 64, 32000, 49152, 128256, 152064, 10**6)] == [
        1024, 1024, 512, 256, 128, 64, 64,
    ]  # fmt: skip
    bert = T.BertForSequenceClassification(
        T.BertConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
    )
    cls = get_ladder_model(bert, LadderConfig(reduction_factor=4)).ladder_config
    # classifiers: no LM loss, short inputs
    assert cls.side_checkpointing is False and cls.loss_chunk_size == 0


def test_4k_tokens_chunked_paths_give_the_plain_loss_and_gradients():
    torch.manual_seed(1)
    ids = torch.randint(3, 64, (1, LONG))
    labels = ids.clone()
    labels[:, : LONG // 2] = -100  # a prompt without loss, an answer with
    runs = {}
    for name, kw in {"plain": dict(side_checkpointing=False, loss_chunk_size=0), "default": {}}.items():
        backbone = tiny_llama()
        torch.manual_seed(2)
        # projected taps (random: no calibration data here), so that the tap cache's narrow taps are checked too
        model = get_ladder_model(backbone, LadderConfig(reduction_factor=4, tap_projection="random", **kw))
        model.train()
        with torch.no_grad():
            model.side.up.weight.normal_(std=0.1)  # as after training: the side reaches the logits
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        runs[name] = (model, out)
        assert (out.logits is None) == (name == "default")  # the chunked loss makes no full logits
    plain, default = runs["plain"], runs["default"]
    torch.testing.assert_close(default[1].loss, plain[1].loss, rtol=1e-5, atol=1e-6)
    grads = dict(plain[0].side.named_parameters())
    for name, p in default[0].side.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-7, msg=name)
    model = default[0]  # from the backbone's taps (a tap cache's), the same loss
    taps = collect_taps(model, input_ids=ids, labels=labels)
    assert taps["body"][0].shape == (1, LONG, 8)
    torch.testing.assert_close(model(input_ids=ids, labels=labels, taps=taps).loss, default[1].loss)


def test_prediction_of_the_lm_defaults_matches_a_real_cpu_run_within_2_percent():
    """Projected taps, one side head, side checkpointing and the chunked loss (the defaults), traced vs real."""
    config = T.LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=1024,
    )  # fmt: skip
    kw = dict(reduction_factor=2, loss_chunk_size=128)
    shape = dict(batch_size=2, source_length=512, target_length=1)
    p, real = predicted_and_real_peak(config, "lst", "causal_lm", shape, **kw)
    assert p.settings["tap_projection"] == "pca" and p.settings["side_checkpointing"] is True
    assert abs(p.peak_bytes - real) / real < 0.02, (p.peak_bytes, real)


def test_parse_bytes():
    assert parse_bytes("12GiB") == 12 * 1024**3 and parse_bytes("11.5g") == int(11.5 * 1024**3)
    assert parse_bytes("800MiB") == 800 * 1024**2 and parse_bytes("24GB") == 24 * 10**9
    assert parse_bytes("4096") == 4096
    for bad in ("12 parsecs", "-1GiB", "", "0"):
        with pytest.raises(Exception, match="memory budget"):
            parse_bytes(bad)


def test_largest_fit_on_a_recorded_llama_3_8b_curve_takes_five_probes():
    """The predictor's Llama-3-8B LST peaks (batch 1, nf4, bf16) at the lengths a 12 GiB search traced: the search
    ends next to the line's answer instead of halving the bracket again."""
    seen = {2048: 7945861120, 8192: 8525277696, 36608: 12847010304, 36864: 12885944832, 54272: 15533492736}
    lengths = sorted(seen)

    def peak(tokens):  # piecewise linear through the recorded peaks
        i = min(max(1, sum(t <= tokens for t in lengths)), len(lengths) - 1)
        (a, b) = lengths[i - 1], lengths[i]
        return int(seen[a] + (tokens - a) * (seen[b] - seen[a]) / (b - a))

    value, _, probes, capped = largest_fit(
        peak, 12 * 1024**3, start=2048, minimum=256, maximum=2**20, granularity=256
    )
    assert (value, [v for v, _ in probes], capped) == (36608, [2048, 8192, 54272, 36608, 36864], False)


@pytest.mark.parametrize("budget", [1000, 5000, 123_456, 10**9])
def test_largest_fit_finds_the_boundary_of_a_linear_peak_in_few_probes(budget):
    def peak(tokens):
        return 800 + 3 * tokens

    value, bytes_, probes, capped = largest_fit(
        peak, budget, start=256, minimum=256, maximum=2**20, granularity=256
    )
    best = min(2**20, (budget - 800) // 3 // 256 * 256)
    assert value == (best if best >= 256 else 0)
    assert capped == (value == 2**20)
    assert len(probes) <= 5
    if value:
        assert bytes_ == peak(value) <= budget < peak(value + 256) or capped


def test_fit_sizes_on_a_tiny_config_agrees_with_the_predictor():
    config = T.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    at_2k = predict_memory(config, "lst", batch_size=1, source_length=2048, count_flops=False).peak_bytes
    r = fit_sizes(config, "lst", at_2k, batch_size=1, source_length=512, search="source_length")
    assert 1792 <= r.value <= 2048 and r.peak_bytes <= at_2k and len(r.probes) <= 6


def test_cli_fit_prints_both_methods(tmp_path, capsys):
    T.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    ).save_pretrained(tmp_path)  # fmt: skip
    argv = ["memory", "--backbone", str(tmp_path), "--fit", "1KiB", "--json"]
    assert main(argv) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert [(f["method"], f["size"]) for f in out["fits"]] == [
        ("lst", "source_length"), ("lst", "batch_size"), ("qlora", "source_length"), ("qlora", "batch_size")
    ]  # fmt: skip
    assert all(f["value"] == 0 for f in out["fits"])  # 1 KiB holds no model
    assert main(["memory", "--backbone", str(tmp_path), "--fit", "lots"]) == 2
    assert "memory budget" in capsys.readouterr().err
