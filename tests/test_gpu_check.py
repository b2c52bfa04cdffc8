"""``benchmarks/gpu_check.py --tiny``: the GPU check's code paths on CPU with tiny configs (about 20 s here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_runs_every_setting(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
        gpu_check = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(gpu_check)
    finally:
        sys.path.pop(0)
    out = tmp_path / "check.json"
    result = gpu_check.main(["--tiny", "--steps", "1", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = {r["name"]: r for r in result["rows"]}
    assert len(rows) == len(gpu_check.settings(True)) == 14 and result["device"] == "cpu"
    has_torchao = importlib.util.find_spec("torchao") is not None
    for name, row in rows.items():
        if "qlora" in name:  # bitsandbytes' 4-bit kernels: CUDA only
            assert "CUDA" in row["skipped"]
            continue
        if "nf4" in name and not has_torchao:
            assert "torchao" in row["skipped"]
            continue
        assert row.get("skipped") is None, row
        assert row["measured"]["peak_train_bytes"] > 0 and row["measured"]["seconds_per_step"] > 0
    fp32 = rows["t5-base lst fp32"]
    measured, predicted = fp32["measured"]["peak_train_bytes"], fp32["predicted"]["peak_bytes"]
    assert abs(predicted - measured) / measured < 0.1, (predicted, measured)  # beside the measurement
    for name, row in rows.items():  # a prediction beside every float-backbone row (nf4: CUDA only)
        if row.get("skipped") is None:
            assert (row["predicted"] is None) == ("nf4" in name), name
    # the bf16 backbone holds half the frozen bytes: a lower peak than fp32 at the same shape
    assert (
        rows["t5-base lst bf16 backbone + bf16 autocast"]["measured"]["peak_train_bytes"]
        < fp32["measured"]["peak_train_bytes"]
    )
    full, lst = rows["t5-base full fp32"]["measured"], fp32["measured"]
    assert (
        full["trainable_params"] > lst["trainable_params"]
        and full["peak_train_bytes"] > lst["peak_train_bytes"]
    )
