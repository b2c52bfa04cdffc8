"""Random bytes and values into the data readers and the configs may only raise ``LadderTuneError``.

The yardstick run and the fixtures are in ``reliability_setup.py``.
"""

from __future__ import annotations

import atexit
import csv
import dataclasses
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_trainer import one_thread  # noqa: F401 (an autouse fixture)

from laddertune import LadderConfig
from laddertune.cli import main
from laddertune.data import load_splits
from laddertune.errors import ConfigError, DataError, LadderTuneError
from laddertune.training.config import TrainConfig

# ------------------------------------------------------------------------------------------------------ 6. fuzz

_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="laddertune-reliability-fuzz-"))
atexit.register(shutil.rmtree, _FUZZ_DIR, ignore_errors=True)
FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
_COLUMNS = ["text", "label", "t2", "y", "", " text", "Text", "label ", "sentence1", "sentence2"]
_cells = st.one_of(
    st.sampled_from(
        ["0", "1", "2", "-1", "1.5", "nan", "inf", "1e400", "yes", "no", "", " ", '"', ",", "\t", "\n"]
    ),
    st.text(max_size=6),
)
_option = st.one_of(st.none(), st.sampled_from(_COLUMNS), st.text(max_size=3))


def _write_table(path: Path, header: list[str], rows: list[list[str]], raw: bool) -> None:
    if path.suffix == ".jsonl":
        lines = [json.dumps(dict(zip(header, row, strict=False)) if not raw else row) for row in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
        return
    delimiter = "\t" if path.suffix == ".tsv" else ","
    if raw:  # no quoting at all: commas, quotes and newlines in the cells break the rows
        text = "\n".join(delimiter.join(r) for r in [header, *rows])
    else:
        buf = io.StringIO()
        csv.writer(buf, delimiter=delimiter).writerows([header, *rows])
        text = buf.getvalue()
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))


def _check_loaded(splits) -> None:
    spec = splits.spec
    for split in (splits.train, splits.validation, splits.test or []):
        for e in split:
            assert isinstance(e["text"], str) and (e["text_pair"] is None or isinstance(e["text_pair"], str))
            if spec.is_regression:
                assert isinstance(e["label"], float) and e["label"] == e["label"]
            else:
                assert isinstance(e["label"], int) and 0 <= e["label"] < spec.num_labels


@FUZZ
@given(
    header=st.lists(st.one_of(st.sampled_from(_COLUMNS), st.text(max_size=4)), max_size=4),
    rows=st.lists(st.lists(_cells, max_size=5), max_size=6),
    ext=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    raw=st.booleans(),
    task=st.sampled_from(["custom", "rte", "stsb", "sst2"]),
    text=_option,
    pair=_option,
    label=_option,
    validation=st.booleans(),
    protocol=st.sampled_from(["dev", "paper"]),
    max_train=st.one_of(st.none(), st.integers(-2, 6)),
)
def test_fuzz_custom_files_with_column_options(
    header, rows, ext, raw, task, text, pair, label, validation, protocol, max_train
):
    f = _FUZZ_DIR / f"table{ext}"
    _write_table(f, header, rows, raw)
    try:
        splits = load_splits(
            task,
            train_file=f,
            validation_file=f if validation else None,
            text_column=text,
            text_pair_column=pair,
            label_column=label,
            protocol=protocol,
            max_train_samples=max_train,
        )
    except (DataError, ConfigError) as e:
        assert str(e) and "\n" not in str(e)
        return
    _check_loaded(splits)


@FUZZ
@given(
    data=st.binary(max_size=200),
    ext=st.sampled_from([".csv", ".tsv", ".jsonl"]),
    text=_option,
    pair=_option,
    label=_option,
)
def test_fuzz_random_bytes_with_column_options(data, ext, text, pair, label):
    f = _FUZZ_DIR / f"bytes{ext}"
    f.write_bytes(data)
    for task in ("custom", "stsb"):
        try:
            _check_loaded(
                load_splits(task, train_file=f, text_column=text, text_pair_column=pair, label_column=label)
            )
        except (DataError, ConfigError) as e:
            assert str(e) and "\n" not in str(e)


_anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=3),
    st.lists(st.one_of(st.integers(-2, 40), st.booleans(), st.text(max_size=2), st.floats()), max_size=4),
    st.tuples(st.integers(0, 5), st.integers(0, 5)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(Path, st.sampled_from(["a", "b/c", "."])),
    st.sampled_from(["1,2", "1,x", "", "0", "random", "lst", "lora", "dev", "paper", "causal", "custom"]),
)
# every option of a run with method lst (the options of the sections, and LST's own): flat, as the flags are
_TRAIN_FIELDS = [n for n in TrainConfig.from_flat(task="rte").to_dict() if n != "task"]
_LADDER_FIELDS = [f.name for f in dataclasses.fields(LadderConfig)]
_some = st.one_of(st.none(), st.sampled_from(["a", "b/c.csv", "text", "label"]))
_ints = {n: st.integers(1, 64) for n in ("reduction_factor", "batch_size", "eval_batch_size", "log_every")}
_ints |= {n: st.one_of(st.none(), st.integers(1, 9)) for n in ("epochs", "max_train_samples", "save_steps")}
_ints |= {n: st.one_of(st.none(), st.integers(1, 9)) for n in ("max_steps", "eval_steps")}
_ints["gradient_accumulation_steps"] = st.integers(1, 8)
# per field, values that pass together (task rte, method lst): one or two fields are then replaced by anything at
# all, so every field's check is reached (with every field random, the first check rejects nearly every example)
VALID_TRAIN = {
    **_ints,
    "backbone": st.sampled_from(["minilm", "org/model", "./folder"]),
    "method": st.just("lst"),
    "side_layers": st.one_of(st.none(), st.lists(st.integers(0, 5), min_size=1, max_size=3)),
    "side_layer_stride": st.one_of(st.none(), st.integers(1, 8)),  # with side_layers: refused unless 1
    "init": st.sampled_from(["random", "magnitude", "fisher"]),
    "pruning_chain": st.sampled_from(["residual", "authors"]),
    "fisher_samples": st.integers(1, 2048),
    "lr": st.one_of(st.none(), st.floats(1e-5, 1.0)),
    "warmup_steps": st.one_of(st.none(), st.integers(0, 9)),
    "warmup_ratio": st.none(),  # with warmup_steps it is refused; "anything" replacements reach both
    "max_grad_norm": st.floats(0, 5),
    "weight_decay": st.floats(0, 1),
    "seed": st.integers(0, 9),
    "max_eval_samples": st.one_of(st.none(), st.integers(1, 9)),
    "max_length": st.integers(8, 512),
    "protocol": st.sampled_from(["dev", "paper"]),
    "format": st.one_of(st.none(), st.sampled_from(["classification", "text2text", "causal"])),
    "device_map": st.none(),  # "auto" is valid for LST only: tests/test_placement.py
    "memory_steps": st.integers(0, 3),
    **{n: _some for n in ("data_dir", "train_file", "validation_file", "text_column", "output_dir")},
    **{n: _some for n in ("text_pair_column", "label_column")},
    **{n: st.booleans() for n in ("backbone_dropout", "resume", "trust_remote_code")},
    "overwrite": st.just(False),
    # the options of the vision-and-language tasks: refused on rte; "anything" replacements reach their checks
    **{n: st.none() for n in ("features", "annotations", "validation_annotations", "task_batch_sizes")},
    "final_shortcut": st.one_of(st.none(), st.booleans()),
    "final_gate": st.booleans(),  # without the shortcut: refused when the model is built
    "reentry_layers": st.integers(
        0, 40
    ),  # on a classifier or beyond the depth: refused when the model is built
    "device": st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
    "precision": st.sampled_from(["fp32", "bf16", "fp16"]),
    "backbone_dtype": st.sampled_from(["float32", "bfloat16", "float16", "int8", "nf4"]),
    "attn": st.sampled_from(["sdpa", "eager"]),
    "loss_chunk_size": st.one_of(st.none(), st.integers(1, 4096)),
    "side_dropout": st.one_of(st.none(), st.floats(0, 0.99)),  # LST only
    "side_attention_dropout": st.one_of(st.none(), st.floats(0, 0.99)),  # LST only
    "side_attention_heads": st.one_of(st.none(), st.integers(1, 12)),  # LST only
    "side_checkpointing": st.booleans(),  # LST only: a baseline with it is a one-line error
    "tap_projection": st.one_of(st.none(), st.sampled_from(["none", "pca", "random"])),  # LST only
    "tap_rank": st.one_of(st.none(), st.integers(1, 64)),  # wider than the backbone: refused when built
    "projection_tokens": st.integers(1, 100_000),
    "quantize_embeddings": st.booleans(),  # without an int8/nf4 backbone: a one-line error
    "optimizer": st.sampled_from(["adamw", "adamw8bit"]),
    "tap_cache": st.none(),  # a folder with backbone_dropout on is refused; "anything" replacements reach it
    "tap_dtype": st.sampled_from(["float32", "bfloat16", "float16"]),
    "problem_type": st.one_of(st.none(), st.sampled_from(["regression", "single_label_classification"])),
    "gate_temperature": st.floats(0.01, 10),
    "gate_init": st.floats(-5, 5),
    "chat_template": st.none(),
    "allow_pickle": st.booleans(),
    "force": st.just(False),  # with resume only: "anything" replacements reach its check
    "prompt_format": st.sampled_from(["auto", "chat", "plain"]),
    **{n: st.booleans() for n in ("train_on_prompt", "packing", "eval_generate", "do_sample")},
    "max_new_tokens": st.integers(1, 64),
    "num_beams": st.integers(1, 4),
    "temperature": st.floats(0.1, 2),
    "top_p": st.floats(0.1, 1),
}
VALID_LADDER = {
    "reduction_factor": st.integers(1, 64),
    "side_layers": st.one_of(st.none(), st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True)),
    "side_layer_stride": st.one_of(st.none(), st.integers(1, 8)),
    "gate_temperature": st.floats(0.01, 10),
    "gate_init": st.floats(-5, 5),
    "init": st.sampled_from(["random", "magnitude", "fisher"]),
    "pruning_chain": st.sampled_from(["residual", "authors"]),
    "fisher_samples": st.integers(1, 2048),
    "backbone_dropout": st.booleans(),
    "backbone_dtype": st.one_of(
        st.none(), st.sampled_from(["float32", "bfloat16", "float16", "int8", "nf4"])
    ),
    "attn_implementation": st.sampled_from(["sdpa", "eager"]),
    "loss_chunk_size": st.one_of(st.none(), st.integers(1, 4096)),
    "final_shortcut": st.one_of(st.none(), st.booleans()),
    "final_gate": st.booleans(),
    "reentry_layers": st.integers(0, 40),
    "method": st.just(
        "lst"
    ),  # side-tuning / pruned constrain final_shortcut and init: test_ablation_methods.py
    "side_checkpointing": st.booleans(),
    "side_dropout": st.one_of(st.none(), st.floats(0, 0.99)),
    "side_attention_dropout": st.one_of(st.none(), st.floats(0, 0.99)),
    "side_attention_heads": st.one_of(st.none(), st.integers(0, 12)),
    "tap_projection": st.one_of(st.none(), st.sampled_from(["none", "pca", "random"])),
    "tap_rank": st.one_of(st.none(), st.integers(1, 64)),
    "projection_tokens": st.integers(1, 100_000),
    # True needs an int8/nf4 backbone_dtype, which this dict may leave None (then a ConfigError)
    "quantize_embeddings": st.just(False),
    "backbone_signature": st.one_of(
        st.none(), st.dictionaries(st.text(max_size=5), st.lists(st.floats(-1, 1)))
    ),
    **{n: _some for n in ("backbone_name", "backbone_revision", "backbone_fingerprint")},
    "task_head": st.one_of(
        st.none(), st.sampled_from(["seq2seq_lm", "causal_lm", "sequence_classification"])
    ),
    "label_names": st.one_of(st.none(), st.lists(st.text(max_size=5), max_size=3)),
    "problem_type": st.one_of(st.none(), st.sampled_from(["regression", "single_label_classification"])),
}
assert set(VALID_TRAIN) == set(_TRAIN_FIELDS) and set(VALID_LADDER) == set(_LADDER_FIELDS)


def _fields(valid: dict):
    base = st.fixed_dictionaries({}, optional=valid)
    return st.tuples(base, st.dictionaries(st.sampled_from(sorted(valid)), _anything, max_size=2)).map(
        lambda t: {**t[0], **t[1]}
    )


def _one_line(e: LadderTuneError) -> None:
    assert str(e) and "\n" not in str(e), str(e)


@FUZZ
@given(task=st.one_of(st.just("rte"), st.just("rte"), _anything), fields=_fields(VALID_TRAIN))
def test_fuzz_train_config_values(task, fields):
    try:
        config = TrainConfig.from_flat(task=task, **fields)
    except ConfigError as e:
        _one_line(e)
        return
    # what is accepted is a plain JSON config that reads back equal (and can be saved next to a run)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


# a vision-and-language run's own options (task vqa ... vl-multitask), valid together, then replaced by anything
_files = st.one_of(
    st.sampled_from(["a.json", "vqa=a.json,nlvr2=b.jsonl", "gqa=g.json", "dir/x=1.json", " ", ","]),
    st.dictionaries(
        st.sampled_from(["vqa", "NLVR2", "caption", "coco", ""]), st.sampled_from(["f", ""]), max_size=3
    ),
)
VALID_VL = {
    "features": st.sampled_from(["f.h5", "./features.h5"]),
    "annotations": _files,
    "validation_annotations": st.one_of(st.none(), _files),
    "task_batch_sizes": st.one_of(
        st.none(),
        st.sampled_from(["8", "vqa=8,nlvr=2", "0", "x"]),
        st.dictionaries(st.text(max_size=4), _anything),
    ),
    "method": st.sampled_from(["lst", "lora", "full", "bitfit", "prompt", "adapter", "pruned", "qlora"]),
    "batch_size": st.integers(1, 64),
    "init": st.sampled_from(["random", "magnitude", "fisher"]),
}


_VL_REQUIRED = ("features", "annotations")
_vl_fields = st.tuples(
    st.fixed_dictionaries(
        {k: VALID_VL[k] for k in _VL_REQUIRED},
        optional={k: v for k, v in VALID_VL.items() if k not in _VL_REQUIRED},
    ),
    st.dictionaries(st.sampled_from(sorted(VALID_VL)), _anything, max_size=1),
).map(lambda t: {**t[0], **t[1]})


@FUZZ
@given(task=st.sampled_from(["vqa", "gqa", "nlvr2", "caption", "vl-multitask", "VQA"]), fields=_vl_fields)
def test_fuzz_vl_train_config_values(task, fields):
    if fields.get("method") not in (None, "lst", "side-tuning", "pruned"):
        fields.pop("init", None)  # an option of the ladder methods only
    try:
        config = TrainConfig.from_flat(task=task, **fields)
    except ConfigError as e:
        _one_line(e)
        return
    assert set(config.data.annotations) <= {"vqa", "gqa", "nlvr", "caption"}
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@FUZZ
@given(fields=_fields(VALID_LADDER))
def test_fuzz_ladder_config_values(fields):
    try:
        config = LadderConfig(**fields)
    except ConfigError as e:
        _one_line(e)
        return
    assert LadderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=5)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=80),
        _json.map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"task": _anything.filter(lambda v: not isinstance(v, bytes | Path))},
            optional={n: _json for n in _TRAIN_FIELDS[:12]},
        ).map(lambda d: json.dumps(d, default=str).encode()),
        st.just(b"[" * 100_000),
        st.just(b"1" * 5000),
    ),
    which=st.sampled_from(["train", "ladder"]),
)
def test_fuzz_config_files(content, which):
    folder = _FUZZ_DIR / "config"
    folder.mkdir(exist_ok=True)
    cls, name = (
        (TrainConfig, "train_config.json") if which == "train" else (LadderConfig, "ladder_config.json")
    )
    (folder / name).write_bytes(content)
    try:
        cls.load(folder)
    except ConfigError as e:
        _one_line(e)


def test_output_dir_that_is_a_file_is_a_clear_error(tmp_path, capsys):

    target = tmp_path / "a-file"
    target.write_text("keep me")
    code = main(["train", "--task", "rte", "--output-dir", str(target), "--data-dir", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "is a file" in err[-1]
    assert target.read_text() == "keep me"


@pytest.mark.parametrize(
    ("cls", "name"), [(TrainConfig, "train_config.json"), (LadderConfig, "ladder_config.json")]
)
def test_unknown_field_with_a_newline_is_still_one_line(tmp_path, cls, name):
    """Found by test_fuzz_config_files: a field named "\\n" made the message two lines."""
    (tmp_path / name).write_text('{"task": "rte", "\\n": null}')
    with pytest.raises(ConfigError) as info:
        cls.load(tmp_path)
    assert "\n" not in str(info.value) and "'\\n'" in str(info.value)
