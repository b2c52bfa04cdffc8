"""Reading generative data (.json arrays, Parquet, datasets folders, hub ids) and detecting its layout."""

from __future__ import annotations

import json

import pytest

from laddertune.data import LAYOUTS, detect_layout, normalize_rows, read_rows
from laddertune.errors import ConfigError, DataError

CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]


def _one_line(info) -> str:
    msg = str(info.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------------------------------------------- readers


def test_json_array_keeps_nesting_and_lines(tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(
        '[\n  {"messages": ' + json.dumps(CHAT) + '},\n\n  {"prompt": "a",\n   "completion": "b"}\n]\n'
    )
    rows = read_rows(path)
    assert rows == [(f"{path}:2", {"messages": CHAT}), (f"{path}:4", {"prompt": "a", "completion": "b"})]


def test_json_lines_in_a_json_file(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n')
    assert read_rows(path) == [(f"{path}:1", {"text": "a"}), (f"{path}:3", {"text": "b"})]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n{"a": 1},\n{"a": }\n]', ":3: malformed JSON (Expecting value"),
        ('[\n{"a": 1}\n{"a": 2}]', ":3: malformed JSON (expected ',' or ']'"),
        ('[\n{"a": 1},\n[1, 2]\n]', ":3: expected a JSON array of objects, got a list"),
        ('[{"a": 1}] x', ":1: malformed JSON (text after the closing ']')"),
        ("[]", ": no examples in the file"),
    ],
)
def test_bad_json_arrays_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError) as info:
        read_rows(path)
    assert _one_line(info).startswith(str(path)) and message in str(info.value)


def test_parquet_keeps_nested_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": CHAT, "id": 7}, {"messages": CHAT[:1], "id": 8}]), path)
    rows = read_rows(path)
    assert rows == [
        (f"{path} row 0", {"messages": CHAT, "id": 7}),
        (f"{path} row 1", {"messages": CHAT[:1], "id": 8}),
    ]
    bad = tmp_path / "bad.parquet"
    bad.write_text("PAR1")
    with pytest.raises(DataError, match=r"bad.parquet: not a valid Parquet file") as info:
        read_rows(bad)
    _one_line(info)


def test_saved_dataset_folders(tmp_path):
    import datasets

    train = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": CHAT}])
    dev = datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}])
    datasets.DatasetDict({"train": train, "dev": dev}).save_to_disk(str(tmp_path / "dd"))
    rows = read_rows(tmp_path / "dd")
    assert rows == [(f"{tmp_path / 'dd'} train row {i}", {"messages": CHAT}) for i in range(2)]
    assert read_rows(tmp_path / "dd", split="validation") == [
        (f"{tmp_path / 'dd'} dev row 0", {"prompt": "p", "completion": "c"})
    ]
    with pytest.raises(DataError, match=r"dd: no split 'test'; the splits are: train, dev") as info:
        read_rows(tmp_path / "dd", split="test")
    _one_line(info)
    dev.save_to_disk(str(tmp_path / "single"))  # a plain Dataset: read whatever split is asked
    assert read_rows(tmp_path / "single", split="validation")[0][1] == {"prompt": "p", "completion": "c"}
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(DataError, match=r"empty_dir: not a dataset folder written by save_to_disk") as info:
        read_rows(tmp_path / "empty_dir")
    _one_line(info)


def test_hub_id_offline_is_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing to fall back on
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DataError, match=r"cannot load dataset 'nobody-here/no-such-set' from the Hugging Face hub"
    ) as info:
        read_rows("nobody-here/no-such-set")
    _one_line(info)


def test_unknown_file_types_and_missing_files(tmp_path):
    with pytest.raises(
        DataError, match=r"in.txt: unknown file type '.txt'; use .jsonl, .json, .csv, .tsv, .parquet"
    ):
        read_rows(tmp_path / "in.txt")
    with pytest.raises(DataError, match=r"absent.parquet: no such file"):
        read_rows(tmp_path / "absent.parquet")


def test_csv_gives_strings(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text('question,answer\n"What is 2+2?",4\n')
    assert read_rows(path) == [(f"{path}:2", {"question": "What is 2+2?", "answer": "4"})]


# ----------------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    ("columns", "layout"),
    [
        ({"prompt", "completion"}, "prompt_completion"),
        ({"input", "output", "id"}, "prompt_completion"),
        ({"question", "answer"}, "prompt_completion"),
        ({"source", "target"}, "prompt_completion"),
        ({"instruction", "input", "output"}, "alpaca"),
        ({"instruction", "output"}, "alpaca"),
        ({"messages"}, "chat"),
        ({"conversations", "id"}, "chat"),
        ({"text", "label"}, "text"),
    ],
)
def test_every_layout_and_alias_is_detected(columns, layout):
    assert detect_layout(columns) == layout


def test_prompts_only_detection_for_prediction():
    assert detect_layout({"prompt"}, require_answer=False) == "prompt_completion"
    assert detect_layout({"instruction", "input"}, require_answer=False) == "alpaca"
    with pytest.raises(DataError, match="no generative data columns"):
        detect_layout({"prompt"})


def test_no_usable_or_ambiguous_columns_are_one_line_errors():
    with pytest.raises(DataError) as info:
        detect_layout({"sentence", "label"}, where="d.jsonl:1")
    assert _one_line(info).startswith(
        "d.jsonl:1: no generative data columns; the columns are: label, sentence;"
    )
    with pytest.raises(DataError) as info:
        detect_layout({"messages", "prompt", "completion"}, where="d.jsonl:1")
    assert _one_line(info) == (
        "d.jsonl:1: ambiguous columns (completion, messages, prompt) fit several layouts: chat (messages); "
        "prompt_completion (prompt+completion); pass the layout"
    )
    with pytest.raises(DataError, match=r"question\+answer"):
        detect_layout({"prompt", "completion", "question", "answer"})


def test_normalisation_of_every_layout():
    rows = [("f:1", {"instruction": "Translate", "input": "cat", "output": "chat"})]
    rows.append(("f:2", {"instruction": "Hi", "input": " ", "output": "Hello"}))
    assert normalize_rows(rows) == (
        "alpaca",
        [
            {"prompt": "Translate\n\ncat", "completion": "chat", "location": "f:1"},
            {"prompt": "Hi", "completion": "Hello", "location": "f:2"},
        ],
    )
    share = [
        {"from": "system", "value": "Be nice."},
        {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Yo"},
    ]
    assert normalize_rows([("f:3", {"conversations": share})]) == (
        "chat",
        [
            {
                "messages": [
                    {"role": "system", "content": "Be nice."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Yo"},
                ],
                "location": "f:3",
            }
        ],
    )
    assert normalize_rows([("f:4", {"question": "Q?", "answer": "A"})])[1] == [
        {"prompt": "Q?", "completion": "A", "location": "f:4"}
    ]
    assert normalize_rows([("f:5", {"text": "some text", "label": 1})])[1] == [
        {"text": "some text", "location": "f:5"}
    ]


def test_explicit_layout_overrides_detection():
    rows = [("f:1", {"messages": CHAT, "text": "x"})]
    with pytest.raises(DataError, match="ambiguous"):
        normalize_rows(rows)
    assert normalize_rows(rows, "text")[1] == [{"text": "x", "location": "f:1"}]
    assert normalize_rows(rows, "chat")[1][0]["messages"] == CHAT
    with pytest.raises(
        DataError, match=r"f:1: layout alpaca needs other columns; the columns are: messages, text"
    ):
        normalize_rows(rows, "alpaca")
    with pytest.raises(ConfigError, match=r"unknown data layout 'sft'; choose one of " + ", ".join(LAYOUTS)):
        normalize_rows(rows, "sft")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            {"messages": [{"role": "robot", "content": "x"}]},
            "f:9: message 0 has unknown role 'robot'; expected",
        ),
        ({"messages": [{"role": "user", "content": "Hi"}]}, "f:9: the conversation has no assistant turn"),
        (
            {"messages": [{"role": "user", "content": ["Hi"]}]},
            "f:9: message 0 content is not a string (got list)",
        ),
        (
            {"messages": "not a list"},
            "f:9: column 'messages' must be a non-empty list of messages, got a str",
        ),
        (
            {"messages": [*CHAT[:1], {"role": "assistant", "content": " "}]},
            "f:9: message 1 is an empty assistant",
        ),
        ({"prompt": "p", "completion": ""}, "f:9: empty 'completion'"),
        ({"prompt": "p", "completion": 3}, "f:9: column 'completion' is not a string (got int)"),
        ({"instruction": "i", "output": "  "}, "f:9: empty 'output'"),
        ({"text": ""}, "f:9: empty 'text'"),
    ],
)
def test_bad_rows_are_one_line_errors_naming_the_row(row, message):
    rows = [("f:8", {k: v for k, v in row.items()}), ("f:9", row)]
    if "messages" in row:
        rows[0] = ("f:8", {"messages": CHAT})
    elif "prompt" in row:
        rows[0] = ("f:8", {"prompt": "p", "completion": "c"})
    elif "instruction" in row:
        rows[0] = ("f:8", {"instruction": "i", "output": "o"})
    else:
        rows[0] = ("f:8", {"text": "t"})
    with pytest.raises(DataError) as info:
        normalize_rows(rows)
    assert _one_line(info).startswith(message)


def test_missing_answer_is_empty_for_prediction():
    rows = [("f:1", {"prompt": "p"}), ("f:2", {"prompt": "q", "completion": "r"})]
    assert normalize_rows(rows, require_answer=False)[1] == [
        {"prompt": "p", "completion": "", "location": "f:1"},
        {"prompt": "q", "completion": "r", "location": "f:2"},
    ]
    user_only = [("f:3", {"messages": CHAT[:1]})]
    assert normalize_rows(user_only, require_answer=False)[1][0]["messages"] == CHAT[:1]


def test_instruction_sample_is_the_scripts_output():
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "make_instruction_data", root / "benchmarks/make_instruction_data.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    train, validation = script.split(0)
    folder = root / "laddertune/data/sample/instructions"
    for name, rows in (("train", train), ("validation", validation)):
        shipped = read_rows(folder / f"{name}.jsonl")
        assert [r for _, r in shipped] == rows
        layout, examples = normalize_rows(shipped)
        assert layout == "prompt_completion" and all(1 <= len(e["completion"].split()) <= 3 for e in examples)
    assert (len(train), len(validation)) == (398, 99)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in validation}
