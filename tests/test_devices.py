"""Devices, mixed precision and low-precision / quantized frozen backbones, on CPU with tiny models.

CUDA-only paths (bitsandbytes, max_memory_allocated) are exercised by ``benchmarks/gpu_check.py`` on a GPU; here
every CPU path runs for real: device resolution and its errors, bf16 autocast training (fp32 master weights),
fp16 with a gradient scaler, bf16/fp16/int8/nf4 backbones (torchao on CPU), and the fingerprint that recognises
the same backbone in any dtype and still refuses another one.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from conftest import tiny_backbone
from test_trainer import assets, config  # noqa: F401  (the module fixture and the config helper)

from laddertune import LadderConfig, LadderModel, get_ladder_model
from laddertune.errors import CheckpointError, ConfigError
from laddertune.training import train
from laddertune.training.config import TrainConfig
from laddertune.training.device import resolve_device
from laddertune.training.precision import Precision
from laddertune.training.step import train_step

# int8 / nf4 on CPU need the optional torchao (pip install laddertune[quant]); the float dtypes do not.
needs_torchao = pytest.mark.skipif(
    importlib.util.find_spec("torchao") is None, reason="int8/nf4 on CPU need torchao (laddertune[quant])"
)
QUANT = [pytest.param("int8", marks=needs_torchao), pytest.param("nf4", marks=needs_torchao)]


def batch(family="bert", b=2, t=6):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 60, (b, t), generator=g)
    out = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if family == "bert":
        out["labels"] = torch.tensor([0, 1])[:b]
    else:
        out["labels"] = ids.clone()
    return out


# ------------------------------------------------------------------------------------------------- devices


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    for bad in ("gpu", "cuda:x", "", "CPU", 3):
        with pytest.raises(ConfigError, match="device must be"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error a machine without CUDA gives")
def test_cuda_without_cuda_is_one_line_config_error():
    for name in ("cuda", "cuda:3"):
        with pytest.raises(ConfigError, match="no CUDA GPU") as e:
            resolve_device(name)
        assert "\n" not in str(e.value)


def test_too_high_gpu_index_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="there are 2 GPU"):
        resolve_device("cuda:3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CLI error of a machine without CUDA")
def test_cli_device_cuda_without_cuda_exits_2(tmp_path, capsys):
    from laddertune.cli.main import main

    for command in (
        ["train", "--task", "rte", "--output-dir", str(tmp_path / "r")],
        ["evaluate", "--checkpoint", str(tmp_path)],
    ):
        code = main([*command, "--device", "cuda"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "r").exists()


def test_ladder_model_device_and_dtypes():
    model = get_ladder_model(tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4))
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    model.backbone.to(torch.bfloat16)
    assert model.backbone_dtype == torch.bfloat16 and model.dtype == torch.float32
    model.to(torch.float16)  # like a transformers model: .to(dtype) casts everything
    assert model.dtype == torch.float16 and model.backbone_dtype == torch.float16


# ------------------------------------------------------------------------------------------------- precision


def test_bf16_autocast_step_keeps_fp32_master_weights():
    torch.manual_seed(0)
    # the plain loss: with labels in training mode the chunked one (the LM default) returns no logits
    model = get_ladder_model(
        tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4, loss_chunk_size=0)
    )
    opt = torch.optim.AdamW(model.side.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    before = {n: p.detach().clone() for n, p in model.side.named_parameters()}
    precision = Precision("bf16", torch.device("cpu"))
    with precision.autocast():
        assert model(**batch("llama")).logits.dtype == torch.float32  # the LM head's output is cast back
    loss = train_step(model, batch("llama"), opt, sched, 1.0, precision)
    assert torch.isfinite(torch.tensor(loss))
    changed = [n for n, p in model.side.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(p.dtype == torch.float32 for p in model.side.parameters())
    states = [s for st in opt.state.values() for s in st.values() if torch.is_tensor(s) and s.ndim]
    assert states and all(s.dtype == torch.float32 for s in states)


def test_bf16_loss_is_close_to_fp32():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    model.eval()
    fp32 = model(**batch()).loss
    with Precision("bf16", torch.device("cpu")).autocast():
        bf16 = model(**batch()).loss
    assert bf16.dtype == torch.float32 and abs(bf16.item() - fp32.item()) < 0.05 * abs(fp32.item())


def test_fp16_scaler_skips_an_overflowing_step_instead_of_diverging():
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    opt = torch.optim.SGD(model.side.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    precision = Precision("fp16", torch.device("cpu"))
    precision.scaler = torch.amp.GradScaler(
        "cpu", init_scale=2.0**120
    )  # the scaled loss overflows: inf grads
    before = {n: p.detach().clone() for n, p in model.side.named_parameters()}
    train_step(model, batch(), opt, sched, 1.0, precision)
    assert all(torch.equal(p, before[n]) for n, p in model.side.named_parameters())  # step skipped
    assert precision.scaler.get_scale() < 2.0**120  # and the scale lowered
    assert sched.last_epoch == 0  # the schedule waits for a step that happens
    precision.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    train_step(model, batch(), opt, sched, 1.0, precision)
    assert sched.last_epoch == 1 and not all(
        torch.equal(p, before[n]) for n, p in model.side.named_parameters()
    )
    assert precision.describe()["grad_scaler"] is True


def test_train_bf16_on_cpu_records_compute(assets, tmp_path):  # noqa: F811
    c = config(assets, tmp_path / "run", epochs=1, precision="bf16", backbone_dtype="bfloat16", device="cpu")
    results = train(c)
    compute = json.loads((tmp_path / "run" / "results.json").read_text())["compute"]
    assert compute == results["compute"]
    assert (
        compute["device"] == "cpu"
        and compute["precision"] == "bf16"
        and compute["backbone_dtype"] == "bfloat16"
    )
    assert compute["autocast_dtype"] == "bfloat16" and compute["master_weights"] == "float32"


def test_backbone_dtype_is_lst_only():
    with pytest.raises(
        ConfigError,
        match="backbone_dtype is an option of method lst, side-tuning, pruned, not of method lora",
    ):
        TrainConfig.from_flat(task="rte", method="lora", backbone_dtype="bfloat16")
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig.from_flat(task="rte", precision="fp8")


# ------------------------------------------------------------------------------------------------- backbones


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", *QUANT])
def test_low_precision_backbones_run_and_stay_close(dtype):
    backbone = tiny_backbone("llama", "causal_lm")
    reference = get_ladder_model(backbone, LadderConfig(reduction_factor=4, loss_chunk_size=0))
    reference.eval()
    expected = reference(**batch("llama")).logits
    model = get_ladder_model(
        tiny_backbone("llama", "causal_lm"),
        LadderConfig(reduction_factor=4, backbone_dtype=dtype, loss_chunk_size=0),
    )
    model.side.load_state_dict(reference.side.state_dict())
    model.eval()
    out = model(**batch("llama"))
    assert model.dtype == torch.float32 and out.logits.dtype == torch.float32
    assert torch.allclose(out.logits, expected, atol=0.05, rtol=0.05)
    out.loss.backward()  # gradients reach the side network through the low-precision taps
    assert all(p.grad is not None for p in model.side.parameters() if p.requires_grad and p.ndim == 2)
    lm_head = model.backbone.get_output_embeddings()
    assert type(lm_head) is torch.nn.Linear  # the LM head is never quantized


@needs_torchao
def test_quantized_backbone_holds_quantized_weights():
    from laddertune.core.quantization import is_quantized_weight

    for dtype in ("int8", "nf4"):
        model = get_ladder_model(
            tiny_backbone("bert", "sequence_classification"),
            LadderConfig(reduction_factor=4, backbone_dtype=dtype),
        )
        q = [n for n, p in model.backbone.named_parameters() if is_quantized_weight(p)]
        assert q and all(n.endswith("weight") for n in q)
        assert not any(is_quantized_weight(p) for p in model.side.parameters())


@pytest.mark.parametrize("load_dtype", ["bfloat16", "float16", *QUANT])
def test_fingerprint_recognises_the_backbone_in_any_dtype(tmp_path, load_dtype):
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"), LadderConfig(reduction_factor=4)
    )
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "ladder_config.json").read_text())
    saved["backbone_dtype"] = load_dtype
    (tmp_path / "ladder_config.json").write_text(json.dumps(saved))
    loaded = LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), tmp_path)
    assert loaded.ladder_config.backbone_dtype == load_dtype
    for a, b in zip(model.side.parameters(), loaded.side.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("load_dtype", ["float32", "bfloat16", *QUANT[1:]])
def test_fingerprint_still_refuses_another_backbone(tmp_path, load_dtype):
    saved_dtype = "nf4" if importlib.util.find_spec("torchao") else "bfloat16"
    model = get_ladder_model(
        tiny_backbone("bert", "sequence_classification"),
        LadderConfig(reduction_factor=4, backbone_dtype=saved_dtype),
    )
    model.save_pretrained(tmp_path)  # saved from a quantized backbone: only unquantized values were recorded
    other = tiny_backbone("bert", "sequence_classification", seed=1)
    saved = json.loads((tmp_path / "ladder_config.json").read_text())
    saved["backbone_dtype"] = load_dtype
    (tmp_path / "ladder_config.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="differs by"):
        LadderModel.from_pretrained(other, tmp_path)
    LadderModel.from_pretrained(tiny_backbone("bert", "sequence_classification"), tmp_path)  # the same: fine


def test_side_attention_implementation():
    for attn in ("sdpa", "eager"):
        model = get_ladder_model(
            tiny_backbone("llama", "causal_lm"),
            LadderConfig(reduction_factor=4, attn_implementation=attn, loss_chunk_size=0),
        )
        assert model.side.stacks["body"].trunk.config._attn_implementation == attn
    eager = get_ladder_model(
        tiny_backbone("llama", "causal_lm"),
        LadderConfig(reduction_factor=4, attn_implementation="eager", loss_chunk_size=0),
    )
    sdpa = get_ladder_model(
        tiny_backbone("llama", "causal_lm"), LadderConfig(reduction_factor=4, loss_chunk_size=0)
    )
    sdpa.side.load_state_dict(eager.side.state_dict())
    assert torch.allclose(eager(**batch("llama")).logits, sdpa(**batch("llama")).logits, atol=1e-5)


@pytest.mark.skipif(
    importlib.util.find_spec("torchao") is not None, reason="checks the error without torchao"
)
def test_missing_torchao_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match="pip install torchao"):
        get_ladder_model(
            tiny_backbone("bert", "sequence_classification"),
            LadderConfig(reduction_factor=4, backbone_dtype="int8"),
        )


def test_cpu_meter_is_silent_and_results_say_how_memory_was_measured(assets, tmp_path, capfd):  # noqa: F811
    results = train(config(assets, tmp_path / "run", epochs=1, memory_steps=2, device="cpu"))
    err = capfd.readouterr().err
    assert "USDT" not in err and "profiler_start" not in err
    how = results["memory"]["measurement"]
    assert how["method"] == "cpu.profiler" and how["device"] == "cpu"
    assert how["seconds_per_measured_step"] > 0 and how["overhead_ratio"] > 0
