"""Bad input gets one ``error:`` line, exit code 2, and leaves the output folder as it was.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_backbone
from reliability_setup import ENV, SLOW_START_S, _copy, _flip, _state, _truncate, cli_args, snapshot
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune import CheckpointError, LadderModel
from laddertune.cli import main
from laddertune.core.side_checkpoint import WEIGHTS_NAME
from laddertune.io import verify_checksums

# ------------------------------------------------------------------------------------------------ 3. bad input


@pytest.fixture(scope="module")
def bad(assets) -> dict:
    """Broken data files, each next to good ones, and run folders to protect."""
    root = assets["root"] / "bad"
    good = Path(assets["data"]) / "rte"
    paths = {}
    for name, split, content in [
        (
            "malformed",
            "validation.jsonl",
            b'{"sentence1": "a", "sentence2": "b yes", "label": 1}\n'
            b'{"sentence1": "a", "sentence2": "b no", "label": 0}\n'
            b'{"sentence1": "a", "sentence2": "b", "label": 1\n',
        ),
        (
            "label",
            "validation.jsonl",
            b'{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a", "sentence2": "b", "label": 2}\n',
        ),
        ("empty", "train.jsonl", b""),
    ]:
        (root / name / "rte").mkdir(parents=True)
        for f in ("train.jsonl", "validation.jsonl"):
            shutil.copy(good / f, root / name / "rte" / f)
        (root / name / "rte" / split).write_bytes(content)
        paths[name] = root / name
    rows = "".join(f"the cat sat {'yes' if i % 2 else 'no'},{'pos' if i % 2 else 'neg'}\n" for i in range(12))
    files = {
        "good.csv": "text,label\n" + rows,
        "extra.csv": "text,label\na cat,pos\nb dog,neg\nc red,pos,oops\n",
        "quote.csv": 'text,label\na cat,pos\n"b dog,neg\n',
        "unseen.csv": "text,label\na cat,pos\nb dog,maybe\n",
        "data.xlsx": "PK",
        "data.parquet": "PAR1",
    }
    for name, text in files.items():
        (root / name).write_text(text)
        paths[name] = root / name
    (root / "latin1.csv").write_bytes("text,label\na cat,pos\nun café,neg\n".encode("latin-1"))
    paths["latin1.csv"] = root / "latin1.csv"
    return paths


def _custom(bad, name: str, *extra) -> list:
    return ["--task", "custom", "--train-file", bad[name], "--text-column", "text", *extra]


# (id, extra arguments (a function of the bad-file paths), what the one error line must say, output folder)
TRAIN_CASES = [
    ("malformed JSONL row", lambda b: ["--data-dir", b["malformed"]], "validation.jsonl:3: malformed JSON"),
    ("malformed CSV row", lambda b: _custom(b, "extra.csv"), "extra.csv:4: 3 fields, but the header has 2"),
    ("unterminated CSV quote", lambda b: _custom(b, "quote.csv"), "quote.csv:3: malformed CSV"),
    (
        "missing text column",
        lambda b: _custom(b, "good.csv", "--text-column", "review"),
        "good.csv:2: no column 'review'; the columns are: text, label",
    ),
    (
        "misnamed label column",
        lambda b: _custom(b, "good.csv", "--label-column", "verdict"),
        "good.csv:2: no column 'verdict'",
    ),
    (
        "label outside the task's label set",
        lambda b: ["--data-dir", b["label"]],
        "validation.jsonl:2: label 2 is not in the label set of rte: 0 (entailment), 1 (not_entailment)",
    ),
    (
        "validation label unseen in training",
        lambda b: _custom(b, "good.csv", "--validation-file", b["unseen.csv"]),
        "unseen.csv:3: label 'maybe' is not in the label set of custom",
    ),
    ("empty dataset", lambda b: ["--data-dir", b["empty"]], "train.jsonl: no examples in the file"),
    ("non-UTF-8 text", lambda b: _custom(b, "latin1.csv"), "latin1.csv:3: not valid UTF-8"),
    ("unknown file type", lambda b: _custom(b, "data.xlsx"), "unknown file type '.xlsx'"),
    ("corrupt Parquet file", lambda b: _custom(b, "data.parquet"), "data.parquet: not a valid Parquet file"),
    ("unknown task", lambda b: ["--task", "qnlii"], "unknown task 'qnlii'; choose one of cola"),
    (
        "unknown backbone",
        lambda b: ["--backbone", b["good.csv"].parent / "no-such-model"],
        "cannot read the config of backbone",
    ),
    (
        "reduction factor does not divide the hidden size",
        lambda b: ["--reduction-factor", "3"],
        "reduction factor 3 does not divide the backbone's hidden_size (32)",
    ),
    (
        "side layer out of range",
        lambda b: ["--side-layers", "0,5"],
        "side layer 5 is out of range: the backbone's body stack has 2 layers (ids 0..1)",
    ),
    ("max length too small", lambda b: ["--max-length", "4"], "max_length must be an integer >= 8, got 4"),
    (
        "freeze layers with LST",
        lambda b: ["--freeze-layers", "1"],
        "--freeze-layers is an option of method full, lora, adapter, bitfit, not of lst",
    ),
    (
        "side attention dropout out of range",
        lambda b: ["--side-attention-dropout", "1.5"],
        "side_attention_dropout must be in [0, 1) or None, got 1.5",
    ),
    (
        "side attention dropout with a baseline",
        lambda b: ["--method", "lora", "--side-attention-dropout", "0"],
        "--side-attention-dropout is an option of method lst, side-tuning, pruned, not of lora",
    ),
    (
        "side attention heads not dividing the side width",
        lambda b: ["--side-attention-heads", "5"],
        "side_attention_heads 5 does not divide the side width",
    ),
    (
        "side attention heads with a baseline",
        lambda b: ["--method", "lora", "--side-attention-heads", "2"],
        "--side-attention-heads is an option of method lst, side-tuning, pruned, not of lora",
    ),
]


def _one_error_line(rc: int, err: str, message: str) -> None:
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize(("extra", "message"), [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_input_one_line_exit_2_output_untouched(assets, reference, bad, tmp_path, capsys, extra, message):
    """Each bad input, twice: into a folder holding a finished run with --overwrite (the run must survive: the
    old files go only once data and model are known good), and into a new folder (it must not appear)."""
    finished = _copy(reference, tmp_path / "finished")
    before = snapshot(finished)
    rc = main(cli_args(assets, finished, *map(str, extra(bad)), "--overwrite"))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(finished) == before
    fresh = tmp_path / "fresh"
    rc = main(cli_args(assets, fresh, *map(str, extra(bad))))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert not fresh.exists()


@pytest.mark.parametrize(
    ("source", "extra", "message"),
    [
        ("reference", [], "already holds a finished run (results.json); pass --overwrite to replace it"),
        ("reference", ["--resume"], "already holds a finished run (results.json); nothing to resume"),
        ("interrupted", [], "holds an unfinished run: --resume continues it, --overwrite starts over"),
        ("interrupted", ["--resume", "--lr", "0.001"], "cannot resume"),
    ],
    ids=["finished run", "finished run, --resume", "unfinished run", "resume with another lr"],
)
def test_run_folder_guards(assets, request, tmp_path, capsys, source, extra, message):
    out = _copy(request.getfixturevalue(source), tmp_path / "run")
    before = snapshot(out)
    rc = main(cli_args(assets, out, *extra))
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(out) == before


def _other_backbone(run: Path, backbone: str) -> Path:
    config = json.loads((run / "train_config.json").read_text())
    (run / "train_config.json").write_text(json.dumps({**config, "backbone": backbone}))
    return run


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda run, a: _other_backbone(run, a["bert2"]), "was trained on backbone"),
        (lambda run, a: _flip(run / "checkpoint-best" / WEIGHTS_NAME), "ladder_model.safetensors is corrupt"),
        (
            lambda run, a: _truncate(run / "checkpoint-best" / "ladder_config.json"),
            "ladder_config.json is corrupt",
        ),
    ],
    ids=["side checkpoint of another backbone", "corrupt side weights", "truncated ladder_config.json"],
)
def test_evaluate_refuses_a_checkpoint_that_does_not_fit(
    assets, reference, tmp_path, capsys, break_it, message
):
    run = _copy(reference, tmp_path / "run")
    break_it(run, assets)
    before = snapshot(run)
    # a copied run finds its data relative to itself (no absolute paths): give the data's place
    rc = main(["evaluate", "--checkpoint", str(run), "--data-dir", assets["data"], "--threads", "1"])
    _one_error_line(rc, capsys.readouterr().err, message)
    assert snapshot(run) == before


def test_side_checkpoint_of_another_architecture_is_refused(assets, reference):
    """from_pretrained: a BERT side network onto T5 (or a BERT of other weights) is a CheckpointError."""
    for backbone in (
        tiny_backbone("t5", "seq2seq_lm"),
        tiny_backbone("llama", "sequence_classification"),
        tiny_backbone("bert", "sequence_classification", seed=3),
    ):
        with pytest.raises(CheckpointError, match="was trained on backbone"):
            LadderModel.from_pretrained(backbone, reference / "checkpoint-best")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "dora"], "argument --method: invalid choice: 'dora'"),
        (["--side-layers", "1,x"], "side_layers must be comma-separated integers"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(assets, tmp_path, capsys, argv, message):
    """A flag that does not parse: one error line naming it (argparse's words, pointing to --help); exit 2."""
    rc = main(cli_args(assets, tmp_path / "run", *argv))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err
    assert message in err and not (tmp_path / "run").exists()


# -- the same through real subprocesses: exit code 2 and no traceback from the real entry point


def _broken_copies(assets, reference, bad, root: Path) -> dict:
    """(argv, folder that must not change, message) for each subprocess case."""
    root.mkdir()
    finished = _copy(reference, root / "finished")
    mismatched = _other_backbone(_copy(reference, root / "mismatched"), assets["bert2"])
    return {
        "malformed JSONL row, --overwrite": (
            cli_args(assets, finished, "--data-dir", bad["malformed"], "--overwrite"),
            finished,
            "validation.jsonl:3: malformed JSON",
        ),
        "unknown method": (
            cli_args(assets, root / "new", "--method", "dora"),
            root / "new",
            "invalid choice",
        ),
        "side checkpoint of another backbone": (
            ["evaluate", "--checkpoint", str(mismatched), "--data-dir", assets["data"], "--threads", "1"],
            mismatched,
            "was trained on backbone",
        ),
        "diverging learning rate": (
            cli_args(assets, root / "diverge", "--lr", "1e30", "--save-steps", "1", "--no-final-shortcut"),
            None,
            "stopped and kept the last good checkpoint",
        ),
    }


@pytest.fixture(scope="module")
def subprocess_results(assets, reference, bad) -> dict:
    """All subprocess cases at once (each one mostly imports torch; together they share the two cores)."""
    cases = _broken_copies(assets, reference, bad, assets["root"] / "subprocess")
    before = {name: snapshot(folder) if folder else None for name, (_, folder, _) in cases.items()}
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "laddertune.cli", *map(str, argv)],
            cwd=assets["root"],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (argv, _, _) in cases.items()
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=SLOW_START_S)
        _, folder, message = cases[name]
        results[name] = {
            "rc": proc.returncode,
            "stderr": stderr,
            "message": message,
            "unchanged": folder is None or snapshot(folder) == before[name],
            "root": assets["root"] / "subprocess",
        }
    return results


@pytest.mark.parametrize(
    "name",
    [
        "malformed JSONL row, --overwrite",
        "unknown method",
        "side checkpoint of another backbone",
        "diverging learning rate",
    ],
)
def test_real_subprocess_exit_2_without_traceback(subprocess_results, name):
    r = subprocess_results[name]
    assert r["rc"] == 2 and "Traceback" not in r["stderr"], r["stderr"]
    last = r["stderr"].strip().splitlines()[-1]
    assert r["message"] in last and r["unchanged"]
    if name != "unknown method":  # argparse prints its usage line first
        assert len(r["stderr"].strip().splitlines()) == 1 and last.startswith("error: ")
    if name == "diverging learning rate":  # a real divergence: Adam steps of 1e30 overflow the side network
        m = re.search(r"step (\d+) \(epoch 1\): the (loss|gradient norm) is (nan|inf|-inf)", last)
        assert m, last
        out = r["root"] / "diverge"
        assert _state(out / "checkpoint-last")["step"] == int(m.group(1)) - 1
        verify_checksums(out / "checkpoint-last")
        assert not (out / "results.json").exists()
