"""Loading never unpickles, nor runs a backbone's own code unless asked.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import ast
import json
import pickle
from pathlib import Path

import pytest
from reliability_setup import _copy, cli_args, run_config
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

import laddertune
import laddertune.training.build as build
from laddertune import CheckpointError, LadderModel, training
from laddertune.cli import build_parser, main
from laddertune.cli.train import config_from_args
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.errors import ConfigError
from laddertune.io import CHECKSUMS_NAME
from laddertune.training import STATE_TENSORS, train
from laddertune.training.config import TrainConfig

# ----------------------------------------------------------------------------------------------- 5. safe loading

LIB = Path(laddertune.__file__).parent


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_pickle_on_any_load_path():
    """No module imports pickle (or its cousins), every torch.load/np.load is weights-only, nothing turns
    trust_remote_code on or safetensors off by a literal."""
    problems = []
    for path in sorted(LIB.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                if any(
                    n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib") for n in names
                ):
                    problems.append(f"{path.name}:{node.lineno}: imports {names}")
        for call, func in _calls(tree):
            kw = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if func == "torch.load" and kw.get("weights_only") != "True":
                problems.append(f"{path.name}:{call.lineno}: torch.load without weights_only=True")
            if func in ("np.load", "numpy.load") and kw.get("allow_pickle") not in (None, "False"):
                problems.append(f"{path.name}:{call.lineno}: np.load with allow_pickle")
            if kw.get("trust_remote_code") == "True" or kw.get("use_safetensors") == "False":
                problems.append(f"{path.name}:{call.lineno}: {func}({kw})")
    text = "\n".join(p.read_text() for p in LIB.rglob("*.py"))
    assert "torch.load(" not in text and "pickle.load" not in text
    assert not problems, problems


class _Payload:
    """Unpickling this creates a file: proof that nothing unpickled it."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_side_weights_come_from_safetensors_only(assets, reference, interrupted, tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    side = _copy(reference / "checkpoint-best", tmp_path / "side")
    (side / CHECKSUMS_NAME).unlink()
    (side / WEIGHTS_NAME).unlink()
    for name in ("ladder_model.bin", "ladder_model.pt", "pytorch_model.bin", "model.ckpt"):
        (side / name).write_bytes(evil)
    import transformers as T

    backbone = T.BertForSequenceClassification.from_pretrained(assets["bert"])
    with pytest.raises(CheckpointError, match=r"missing checkpoint file .*ladder_model.safetensors"):
        LadderModel.from_pretrained(backbone, side)
    (side / WEIGHTS_NAME).write_bytes(evil)  # a pickle under the safetensors name is no safetensors file
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        LadderModel.from_pretrained(backbone, side)
    # the resume path: a pickle in place of the optimizer state
    run = _copy(interrupted, tmp_path / "run")
    for c in ("checkpoint-last", "checkpoint-last.old"):
        (run / c / CHECKSUMS_NAME).unlink()
        (run / c / STATE_TENSORS).write_bytes(evil)
    with pytest.raises(CheckpointError, match="no intact checkpoint"):
        train(run_config(assets, run, resume=True))
    assert not marker.exists()


def test_trust_remote_code_is_off_unless_asked(assets, reference, tmp_path, monkeypatch):
    import inspect

    import transformers as T

    from laddertune.core.backbones import load_backbone, load_tokenizer

    for fn in (load_backbone, load_tokenizer, build.choose_format, training.evaluate):
        assert inspect.signature(fn).parameters["trust_remote_code"].default is False, fn
    assert TrainConfig.from_flat(task="rte").model.trust_remote_code is False
    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--task", "rte"])).model.trust_remote_code is False
    assert config_from_args(parse(["train", "--task", "rte", "--trust-remote-code"])).model.trust_remote_code
    assert not hasattr(parse(["evaluate", "--checkpoint", "x"]), "trust_remote_code")  # evaluate()'s False
    with pytest.raises(ConfigError, match="trust_remote_code must be true or false"):
        TrainConfig.from_flat(task="rte", trust_remote_code="yes")

    seen = []
    for cls in (T.AutoConfig, T.AutoTokenizer, T.AutoModelForSequenceClassification):
        real = cls.from_pretrained

        def spy(*args, _real=real, _cls=cls.__name__, **kwargs):
            seen.append((_cls, kwargs.get("trust_remote_code")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)

    def flags(argv) -> set:
        seen.clear()
        assert main(argv) == 0
        return set(seen)

    one_epoch = ["--epochs", "1", "--save-steps", "12"]
    assert flags(cli_args(assets, tmp_path / "a", *one_epoch)) == {
        ("AutoConfig", False),
        ("AutoTokenizer", False),
        ("AutoModelForSequenceClassification", False),
    }
    assert flags(cli_args(assets, tmp_path / "b", *one_epoch, "--trust-remote-code")) == {
        ("AutoConfig", True),
        ("AutoTokenizer", True),
        ("AutoModelForSequenceClassification", True),
    }
    # evaluate never takes the flag from the run folder: a copied folder cannot switch it on
    assert json.loads((tmp_path / "b" / "train_config.json").read_text())["trust_remote_code"] is True
    assert {flag for _, flag in flags(["evaluate", "--checkpoint", str(tmp_path / "b")])} == {False}
    assert {
        flag for _, flag in flags(["evaluate", "--checkpoint", str(tmp_path / "b"), "--trust-remote-code"])
    } == {True}
