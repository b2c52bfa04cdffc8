"""Each way below once ended in a traceback, a half-written file or a silent wrong answer; now each is one line.

The yardstick run and the fixtures are in ``reliability_setup.py``; faults (a full disk, a read-only folder) are
injected with ``fault_injection.py`` (root passes any permission check, so a read-only place is an EROFS at the
write, as a read-only mount gives).
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
import transformers as T
from conftest import tiny_backbone
from fault_injection import Fault, inject
from reliability_setup import _copy, cli_args, snapshot
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune import ConfigError, get_ladder_model
from laddertune.cli import main
from laddertune.core.backbones import load_backbone
from laddertune.io import write_checksums
from laddertune.memory.predict import predict_memory


def _one_error_line(rc: int, err: str, message: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err


def _rows(path: Path) -> Path:
    path.write_text('{"sentence1": "a cat", "sentence2": "yes yes yes yes"}\n')
    return path


# ------------------------------------------------------------------------------------------ predict --output


# counts the backbone loads (every one goes through _auto_class) and never fires
LOADS = Fault("laddertune.core.backbones:_auto_class", at=10**9)


def _predict(run: Path, inp: Path, out: Path) -> list[str]:
    return ["predict", "--checkpoint", str(run), "--input", str(inp), "--output", str(out), "--no-progress"]


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A copy of the reference run beside the reference (its relative backbone path still resolves)."""
    run = _copy(reference, reference.parent / f"predict-{tmp_path.name}")
    yield run
    shutil.rmtree(run)


def _folder(tmp: Path):
    (tmp / "out.jsonl").mkdir()
    return None


# (id, set up (returns a fault or None), output name, the error line)
OUTPUT_CASES = [
    (
        "output is a folder",
        _folder,
        "out.jsonl",
        "output {out} is a folder: give the name of a file to write",
    ),
    ("output is the input file", lambda tmp: None, "in.jsonl", "output {out} is the input file"),
    (
        "output in a read-only folder",
        lambda tmp: Fault("tempfile:mkstemp", match=str(tmp), error=errno.EROFS),
        "out.jsonl",
        "cannot write into the folder of output {out} ({tmp}): Read-only file system",
    ),
    (
        "disk full while writing",
        lambda tmp: Fault("os:fsync", error=errno.ENOSPC),
        "out.jsonl",
        "cannot write {out}: No space left on device",
    ),
]


@pytest.mark.parametrize(
    ("setup", "name", "message"), [c[1:] for c in OUTPUT_CASES], ids=[c[0] for c in OUTPUT_CASES]
)
def test_predict_output_problems_are_one_line_and_leave_files_as_they_were(
    run_copy, tmp_path, capsys, setup, name, message
):
    inp, out = _rows(tmp_path / "in.jsonl"), tmp_path / name
    fault = setup(tmp_path)
    if not out.exists():
        out.write_text("yesterday's predictions\n")  # a previous output: it must survive a failed write
    before = snapshot(tmp_path)
    with inject(*([fault] if fault else [])):
        rc = main(_predict(run_copy, inp, out))
    _one_error_line(rc, capsys.readouterr().err, message.format(out=out, tmp=tmp_path))
    assert snapshot(tmp_path) == before  # no temporary file left either


def test_predict_output_refusals_come_before_the_model_loads(run_copy, tmp_path, capsys):
    inp = _rows(tmp_path / "in.jsonl")
    with inject(LOADS) as calls:
        rc = main(_predict(run_copy, inp, inp))
    assert rc == 2 and calls[LOADS.target]["calls"] == 0
    capsys.readouterr()


# ------------------------------------------------------------------------------------------ training output


def test_read_only_output_dir_fails_before_the_model_loads(assets, tmp_path, capsys):
    out = tmp_path / "ro" / "run"
    (tmp_path / "ro").mkdir()
    faults = (
        Fault("tempfile:mkstemp", match=str(tmp_path / "ro"), error=errno.EROFS),
        LOADS,
    )
    with inject(*faults) as calls:
        rc = main(cli_args(assets, out))
    _one_error_line(rc, capsys.readouterr().err, f"cannot write into output_dir {out} ({tmp_path / 'ro'})")
    assert calls[LOADS.target]["calls"] == 0
    assert not out.exists()


def test_full_disk_writing_metrics_is_one_line(assets, tmp_path, capsys):
    out = tmp_path / "run"
    with inject(Fault("builtins:open", match="metrics.jsonl", at=5, error=errno.ENOSPC)):
        rc = main(cli_args(assets, out))
    _one_error_line(
        rc, capsys.readouterr().err, f"cannot write {out / 'metrics.jsonl'}: No space left on device"
    )


# ------------------------------------------------------------------------------------- hand-edited run files


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    write_checksums(path.parent)  # what a user "fixing" the folder by hand would do: the list matches again


def _set(**kv):
    return lambda d: d.update(kv)


def _set_spec(**kv):
    return lambda d: d["spec"].update(kv)


TASK_CASES = [
    ("max_length not a number", _set(max_length="abc"), "max_length must be an integer from 8 to 1000000"),
    ("max_length a list", _set(max_length=[1]), "max_length must be an integer from 8 to 1000000"),
    ("max_length negative", _set(max_length=-5), "max_length must be an integer from 8 to 1000000, got -5"),
    ("unknown method", _set(method="evil"), "unknown method 'evil'"),
    ("method a number", _set(method=3), "unknown method 3"),
    ("backbone a number", _set(backbone=5), "backbone must be a name or a folder, got 5"),
    (
        "label_names a number",
        _set_spec(label_names=7),
        "task spec field 'label_names' must be a list of strings",
    ),
    ("num_labels a string", _set_spec(num_labels="two"), "task spec field 'num_labels' must be an integer"),
    (
        "label_range a string",
        _set_spec(label_range="0-5"),
        "task spec field 'label_range' must be null or a list",
    ),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in TASK_CASES], ids=[c[0] for c in TASK_CASES])
def test_hand_edited_task_json_is_one_line(run_copy, tmp_path, capsys, edit, message):
    _edit_json(run_copy / "checkpoint-best" / "task.json", edit)
    before = snapshot(run_copy)
    rc = main(["predict", "--checkpoint", str(run_copy), "--input", str(_rows(tmp_path / "in.jsonl"))])
    _one_error_line(rc, capsys.readouterr().err, f"task.json is malformed: {message}")
    assert snapshot(run_copy) == before


STATE_CASES = [
    ("negative step", _set(step=-5), "step must be an integer >= 0, got -5"),
    ("step true", _set(step=True), "step must be an integer >= 0, got True"),
    ("step off the data position", _set(step=9), "step 9 does not match epoch 0 and next_batch 8"),
    (
        "next_batch past the epoch",
        _set(next_batch=1000),
        "next_batch 1000 is not the first micro-batch of a step inside an epoch (12 steps of 1 micro-batches)",
    ),
    ("negative epoch", _set(epoch=-1), "epoch must be an integer >= 0, got -1"),
    ("epoch past the run", _set(epoch=99), "epoch 99 is past the end of the run (3 epochs)"),
    ("best a string", _set(best="x"), "best must be null or a record with a numeric score"),
    ("history a string", _set(history="x"), "history must be a list of evaluation records"),
    ("train_seconds a string", _set(train_seconds="x"), "train_seconds must be a number >= 0"),
    ("scheduler emptied", _set(scheduler={}), "scheduler does not fit this run's learning-rate schedule"),
    ("step missing", lambda d: d.pop("step"), "step is missing"),
]


@pytest.mark.parametrize(("edit", "message"), [c[1:] for c in STATE_CASES], ids=[c[0] for c in STATE_CASES])
def test_hand_edited_trainer_state_is_refused_in_one_line(
    assets, interrupted, tmp_path, capsys, edit, message
):
    """Both checkpoints edited (else resume falls back to the intact one): --resume refuses, nothing changes."""
    run = _copy(interrupted, tmp_path / "run")
    for folder in ("checkpoint-last", "checkpoint-last.old"):
        _edit_json(run / folder / "trainer_state.json", edit)
    before = snapshot(run)
    rc = main(cli_args(assets, run, "--resume"))
    err = capsys.readouterr().err
    _one_error_line(rc, err, "cannot resume")
    assert f"checkpoint-last/trainer_state.json: {message}" in err
    assert snapshot(run) == before


def test_one_edited_trainer_state_falls_back_to_the_previous_checkpoint(
    assets, interrupted, tmp_path, caplog
):
    run = _copy(interrupted, tmp_path / "run")
    _edit_json(run / "checkpoint-last" / "trainer_state.json", _set(next_batch=1000))
    with caplog.at_level("WARNING", logger="laddertune.training"):
        assert main(cli_args(assets, run, "--resume")) == 0
    resumes = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"resume"' in x]
    assert [r["step"] for r in resumes] == [4]


# --------------------------------------------------------------------------------------- memory, backbones


def test_memory_source_longer_than_the_position_table(assets, capsys):
    rc = main(["memory", "--backbone", assets["bert"], "--source-length", "200", "--batch-size", "1"])
    _one_error_line(rc, capsys.readouterr().err, "source_length 200 is longer than backbone")
    gpt2 = T.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=64)
    with pytest.raises(ConfigError, match="its position table holds 64 positions"):
        predict_memory(gpt2, "lst", batch_size=1, source_length=65, target_length=1)


def _meta_bert():
    with torch.device("meta"):
        return tiny_backbone("bert", "sequence_classification")


def _peft_llama():
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return get_peft_model(tiny_backbone("llama", "causal_lm"), config)


BACKBONE_CASES = [
    ("None", lambda: None, "get_ladder_model needs a backbone: a transformers model, got None"),
    ("nn.Linear", lambda: torch.nn.Linear(4, 4), "got torch.nn.modules.linear.Linear"),
    (
        "one BERT layer",
        lambda: tiny_backbone("bert", "sequence_classification").bert.encoder.layer[0],
        "BertLayer",
    ),
    ("meta-device weights", _meta_bert, "the backbone's weights are on the meta device (never loaded;"),
    ("PEFT-wrapped", _peft_llama, "PeftModelForCausalLM carries PEFT adapters: pass the plain model"),
]


@pytest.mark.parametrize(
    ("make", "message"), [c[1:] for c in BACKBONE_CASES], ids=[c[0] for c in BACKBONE_CASES]
)
def test_get_ladder_model_refuses_what_is_no_backbone(make, message):
    with pytest.raises(ConfigError) as e:
        get_ladder_model(make())
    assert message in str(e.value) and "\n" not in str(e.value)


def test_meta_device_build_on_purpose_still_counts_parameters():
    with torch.device("meta"):
        model = get_ladder_model(tiny_backbone("bert", "sequence_classification"))
    assert model.trainable_parameters()[0] > 0


class _Payload:
    """Unpickling this writes a file: proof of code run by a load."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def pickled_backbones(assets, tmp_path) -> dict:
    from safetensors.torch import load_file

    plain = tmp_path / "bert-bin"
    shutil.copytree(assets["bert"], plain)
    torch.save(load_file(str(plain / "model.safetensors")), plain / "pytorch_model.bin")
    (plain / "model.safetensors").unlink()
    evil = tmp_path / "bert-evil"
    shutil.copytree(plain, evil)
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(tmp_path / "pwned")))
    return {"plain": plain, "evil": evil, "marker": tmp_path / "pwned"}


def test_pickle_backbone_weights_need_allow_pickle(assets, pickled_backbones, tmp_path, capsys):
    for kind in ("plain", "evil"):
        rc = main(cli_args(assets, tmp_path / kind, "--backbone", pickled_backbones[kind]))
        _one_error_line(rc, capsys.readouterr().err, "has its weights in a pickle file (pytorch_model.bin)")
        assert not (tmp_path / kind).exists()
    model = load_backbone(str(pickled_backbones["plain"]), "sequence_classification", allow_pickle=True)
    reference = load_backbone(assets["bert"], "sequence_classification")
    torch.testing.assert_close(
        model.bert.embeddings.word_embeddings.weight, reference.bert.embeddings.word_embeddings.weight
    )
    with pytest.raises(
        ConfigError, match="its pickle holds more than tensors, refused by weights-only unpickling"
    ):
        load_backbone(str(pickled_backbones["evil"]), "sequence_classification", allow_pickle=True)
    assert not pickled_backbones["marker"].exists()


def test_allow_pickle_flag_trains_evaluates_and_predicts(assets, pickled_backbones, tmp_path, capsys):
    """--allow-pickle on train (recorded), then asked again of evaluate and predict (never taken from the run)."""
    run = tmp_path / "run"
    rc = main(cli_args(assets, run, "--backbone", pickled_backbones["plain"], "--allow-pickle"))
    assert rc == 0, capsys.readouterr().err
    assert json.loads((run / "train_config.json").read_text())["allow_pickle"] is True
    assert main(["evaluate", "--checkpoint", str(run)]) == 2  # the run folder does not switch it on
    assert "pickle" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(run), "--allow-pickle"]) == 0
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"sentence1": "a cat", "sentence2": "a dog"}) + "\n")
    assert (
        main(["predict", "--checkpoint", str(run), "--input", str(rows), "--allow-pickle", "--no-progress"])
        == 0
    )
