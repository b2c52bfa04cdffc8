"""Silent wrong data: string labels merged into one class or refused as NaN, and one long row taking gigabytes.

The label rule (``laddertune/data/examples.py``): strings are class names compared as written, unless they are
numbers in strict decimal form. The row bound (``laddertune/data/collate.py``): each text field is cut to
``max_length * CHARS_PER_TOKEN`` characters before it is tokenized.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_data import tok  # noqa: F401 (the tiny word-level tokenizer fixture)

from laddertune.data import get_task, load_splits, make_collator
from laddertune.data.collate import CHARS_PER_TOKEN, sort_for_eval
from laddertune.data.examples import infer_custom_spec, to_examples
from laddertune.errors import DataError


def _rows(labels: list) -> list:
    return [(f"train.csv:{i + 2}", {"text": "t", "label": label}) for i, label in enumerate(labels)]


# (id, training labels as in the file, class names, the labels' ids): each string is its own class unless the
# whole column is numbers in strict decimal form
LABEL_CASES = [
    ("leading zero stays apart", ["010", "10", "010"], ("010", "10"), [0, 1, 0]),
    ("underscore stays apart", ["1_0", "10"], ("10", "1_0"), [1, 0]),
    ("exponent stays apart", ["1e1", "10"], ("10", "1e1"), [1, 0]),
    ("plus sign stays apart", ["+5", "5"], ("+5", "5"), [0, 1]),
    ("nan is a class name", ["nan", "ok", "nan"], ("nan", "ok"), [0, 1, 0]),
    ("Infinity is a class name", ["Infinity", "-Infinity"], ("-Infinity", "Infinity"), [1, 0]),
    ("spaces around are stripped", [" pos", "neg "], ("neg", "pos"), [1, 0]),
    ("decimal ids are classes", ["0", "1", "1.0"], ("0", "1"), [0, 1, 1]),
    ("negative decimals are mapped", ["-1", "1"], ("-1", "1"), [0, 1]),
    ("JSON numbers", [0, 2, 1], ("0", "1", "2"), [0, 2, 1]),
]


@pytest.mark.parametrize(
    ("labels", "names", "ids"), [c[1:] for c in LABEL_CASES], ids=[c[0] for c in LABEL_CASES]
)
def test_string_labels_stay_distinct_classes(labels, names, ids):
    spec = infer_custom_spec(_rows(labels), "text", None, "label")
    assert spec.label_names == names
    assert [e["label"] for e in to_examples(_rows(labels), spec)] == ids


def test_strict_decimal_column_is_still_a_regression_target():
    spec = infer_custom_spec(_rows(["0.5", "1.25", "-3"]), "text", None, "label")
    assert spec.is_regression
    assert [e["label"] for e in to_examples(_rows(["0.5", "1.25", "-3"]), spec)] == [0.5, 1.25, -3]


def test_validation_labels_map_to_the_same_names(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\na,010\nb,10\nc,nan\n")
    dev = tmp_path / "dev.csv"
    dev.write_text("text,label\nd,10\ne,nan\nf,010\n")
    s = load_splits("custom", train_file=train, validation_file=dev, text_column="text")
    assert s.spec.label_names == ("010", "10", "nan")
    assert [e["label"] for e in s.validation] == [1, 2, 0]


def test_a_json_nan_number_is_still_refused(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": NaN}\n')  # Python's json reads NaN
    with pytest.raises(DataError, match=r"train.jsonl:2: label is nan \(NaN or infinite\)"):
        load_splits("custom", train_file=train, text_column="text")


# ------------------------------------------------------------------------------------------------- long rows


class _Spy:
    """Wraps a tokenizer; records the longest string it was asked to tokenize."""

    def __init__(self, tokenizer):
        self.tokenizer, self.longest = tokenizer, 0

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)

    def __call__(self, texts, pairs=None, **kw):
        for t in [texts, pairs]:
            for x in [t] if isinstance(t, str) else t or []:
                self.longest = max(self.longest, len(x))
        return self.tokenizer(texts, pairs, **kw)


WORDS = "the cat sat on the mat a big red dog ran fast ".split()


def _text(n_chars: int) -> str:
    words = (WORDS * (n_chars // 30 + 1))[: n_chars // 3]
    return " ".join(words)[:n_chars]


@pytest.mark.parametrize("fmt", ["classification", "text2text", "causal"])
def test_a_long_row_is_cut_to_the_bound_and_tokenizes_as_before(tok, fmt):  # noqa: F811
    """A 3 MB row: the tokenizer never sees more than max_length * 8 characters of each field, and a row of a few
    thousand characters (cut too) gives exactly the batch of the uncut text."""
    spec = get_task("rte")
    spy = _Spy(tok)
    collate = make_collator(spy, fmt=fmt, spec=spec, max_length=64)
    huge = {"text": _text(3_000_000), "text_pair": _text(2_000), "label": 1}
    batch = collate([huge])
    # each field is cut; text-to-text and causal sources hold both fields and the prompt words
    bound = 64 * CHARS_PER_TOKEN if fmt == "classification" else 2 * 64 * CHARS_PER_TOKEN + 64
    assert spy.longest <= bound
    assert batch["input_ids"].shape[1] <= 64
    long = {"text": _text(5_000), "text_pair": "the cat", "label": 0}
    uncut = make_collator(tok, fmt=fmt, spec=spec, max_length=64)
    uncut.__dict__["_clip"] = lambda e: e  # the collator without the cut, for reference
    for key, value in collate([long]).items():
        assert value.tolist() == uncut([long])[key].tolist(), key
    spy.longest = 0
    ordered, order = sort_for_eval([huge, long], spy, 64 * CHARS_PER_TOKEN)
    assert spy.longest <= 64 * CHARS_PER_TOKEN and sorted(order) == [0, 1]


def test_a_20mb_row_takes_megabytes_not_gigabytes(tmp_path):
    """In a child process (its peak RSS is its own): collating one 20 MB row grows the peak by under 256 MiB
    (the text and its copies; tokenizing it whole took about 150 bytes a character, 3 GB)."""
    script = tmp_path / "row.py"
    script.write_text(
        "import resource, sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_trainer import save_tokenizer\n"
        "from pathlib import Path\n"
        "from laddertune.core.backbones import load_tokenizer\n"
        "from laddertune.data import get_task, make_collator\n"
        f"folder = Path({str(tmp_path)!r}) / 'tok'\n"
        "folder.mkdir()\n"
        "save_tokenizer(folder)\n"
        "collate = make_collator(load_tokenizer(str(folder)), fmt='classification', spec=get_task('sst2'))\n"
        "text = 'the cat sat on the mat ' * 900_000\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "batch = collate([{'text': text, 'text_pair': None, 'label': 1}])\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(__import__('json').dumps({'kib': after - before, 'width': batch['input_ids'].shape[1]}))\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["width"] == 128
    assert result["kib"] < 256 * 1024, result
