"""``benchmarks/paired_seeds.py``: paired t-tests of a figure's variants against a reference, over seeds."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("paired_seeds", ROOT / "benchmarks" / "paired_seeds.py")
paired_seeds = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_seeds)


def _rows() -> list[dict]:
    scores = {"random": [70.0, 72.0, 74.0], "fisher": [71.0, 73.0, 76.0]}
    return [
        {
            "variant": v,
            "method": "lst",
            "seed": s,
            "task": task,
            "score": x + (10 if task == "mrpc" else 0),
            "peak_train_gib": 0.1,
            "seconds_per_step": 0.1,
            "figure": "figure7",
        }  # fmt: skip
        for v, xs in scores.items()
        for s, x in enumerate(xs)
        for task in ("sst2", "mrpc")
    ]


def test_golden_paired_t_per_task_and_average(tmp_path):
    (tmp_path / "rows.json").write_text(json.dumps(_rows()))
    rows = paired_seeds.load_rows([tmp_path / "rows.json"])
    results = paired_seeds.paired(paired_seeds.scores(rows), "random")
    by_task = {r["task"]: r for r in results}
    assert set(by_task) == {"mrpc", "sst2", "avg"} and all(r["variant"] == "fisher" for r in results)
    # differences 1, 1, 2: mean 4/3, t = 4.0 with 2 degrees of freedom -> two-sided p = 0.0572
    for r in by_task.values():
        assert r["seeds"] == [0, 1, 2] and r["seeds_above"] == 3
        assert r["mean_difference"] == pytest.approx(4 / 3)
        assert r["p_value"] == pytest.approx(0.05719, abs=1e-5)


def test_command_writes_md_and_json_and_refuses_bad_input_in_one_line(tmp_path):
    rows = tmp_path / "figure7_x.json"
    rows.write_text(json.dumps(_rows()))
    script = str(ROOT / "benchmarks" / "paired_seeds.py")
    subprocess.run(
        [sys.executable, script, str(rows), "--reference", "random"], check=True, capture_output=True
    )
    assert "| fisher | avg | 3 | +1.33 | 3/3 | 0.057 |" in (tmp_path / "figure7_x_paired.md").read_text()
    assert json.loads((tmp_path / "figure7_x_paired.json").read_text())["reference"] == "random"
    bad = subprocess.run(
        [sys.executable, script, str(rows), "--reference", "nope"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no runs of the reference 'nope'" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = subprocess.run([sys.executable, script, str(tmp_path / "none.json"), "--reference", "random"],
                             capture_output=True, text=True)  # fmt: skip
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
    (tmp_path / "no_score.json").write_text(
        json.dumps([{k: v for k, v in _rows()[0].items() if k != "score"}])
    )
    no_score = subprocess.run([sys.executable, script, str(tmp_path / "no_score.json"), "--reference", "random"],
                              capture_output=True, text=True)  # fmt: skip
    assert (
        no_score.returncode == 2
        and "score" in no_score.stderr
        and len(no_score.stderr.strip().splitlines()) == 1
    )
