"""Optional dependencies: the core imports without them, and each feature that needs one names its extra.

The suite runs with every extra installed, so a missing package is simulated: ``sys.modules[name] = None`` makes
``import name`` fail as if it were not installed (and ``importlib.util.find_spec`` report it absent, which is how
transformers checks for pillow).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from laddertune.errors import ConfigError, import_optional

# laddertune[vision], laddertune[report] and laddertune[serve]
OPTIONAL = (
    "h5py",
    "PIL",
    "pycocoevalcap",
    "matplotlib",
    "fastapi",
    "starlette",
    "uvicorn",
    "prometheus_client",
)
ROOT = Path(__file__).resolve().parents[1]


def _uninstall(monkeypatch, package: str) -> None:
    """``package`` and its loaded submodules look uninstalled until the test ends."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")] or [package]:
        monkeypatch.setitem(sys.modules, name, None)


def test_import_optional_names_the_feature_and_the_extra(monkeypatch):
    _uninstall(monkeypatch, "PIL")
    with pytest.raises(ConfigError) as info:
        import_optional("PIL.Image", "vision", "reading images")
    assert (
        str(info.value)
        == "reading images needs pillow, which is not installed: pip install 'laddertune[vision]'"
    )


def test_import_optional_leaves_a_broken_installed_package_alone(tmp_path, monkeypatch):
    """A package that is there but lacks one of ITS dependencies is not reported as a missing extra."""
    (tmp_path / "half_installed").mkdir()
    (tmp_path / "half_installed" / "__init__.py").write_text("import laddertune_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="laddertune_no_such_dependency"):
        import_optional("half_installed", "vision", "a feature")


def test_report_without_matplotlib_writes_the_tables_and_skips_the_figures(tmp_path, monkeypatch, caplog):
    from laddertune.report import load_rows, write_report

    rows_file = tmp_path / "rows.json"
    rows_file.write_text(json.dumps([_row("sst2", m, s, 80.0 + s) for m in ("full", "lst") for s in (0, 1)]))
    _uninstall(monkeypatch, "matplotlib")
    written = write_report(load_rows([rows_file]), tmp_path / "rep")
    assert sorted(p.name for p in written) == ["report.md", "summary.json", "table1.md"]
    message = "drawing the report's figures needs matplotlib, which is not installed: pip install 'laddertune[report]'"
    assert f"Not drawn: {message}." in (tmp_path / "rep" / "report.md").read_text()
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        f"{message}; figures skipped"
    ]


def test_feature_files_without_h5py_name_the_vision_extra(tmp_path, monkeypatch):
    from laddertune.vision.features import FeatureStore

    _uninstall(monkeypatch, "h5py")
    with pytest.raises(ConfigError, match=r"^reading image features needs h5py, .*'laddertune\[vision\]'$"):
        FeatureStore(tmp_path / "features.h5")


def test_cider_without_pycocoevalcap_names_the_vision_extra(monkeypatch):
    from laddertune.vision.metrics import cider

    _uninstall(monkeypatch, "pycocoevalcap")
    with pytest.raises(
        ConfigError, match=r"^the CIDEr metric needs pycocoevalcap, .*'laddertune\[vision\]'$"
    ):
        cider(["a red circle"], [["a red circle"]])


def test_every_module_imports_and_report_runs_without_the_optional_packages(tmp_path):
    """In a fresh interpreter where h5py, pillow, pycocoevalcap, matplotlib and the server's packages are absent: every laddertune module
    imports (the CLI, vision and the predictor included), none of them gets imported, and ``laddertune report``
    writes its tables with one warning line."""
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([_row("sst2", m, s, 80.0 + s) for m in ("full", "lst") for s in (0, 1)]))
    script = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        for name in {OPTIONAL!r}:
            sys.modules[name] = None
        import laddertune
        for info in pkgutil.walk_packages(laddertune.__path__, "laddertune."):
            if not info.name.endswith("__main__"):  # those run the command line
                importlib.import_module(info.name)
        loaded = sorted(n for n in {OPTIONAL!r} if sys.modules.get(n) is not None)
        assert not loaded, loaded
        from laddertune.cli import main
        sys.exit(main(["report", {str(rows)!r}, "--output", {str(tmp_path / "rep")!r}]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "4 runs -> 1 tables, 0 figures" in done.stdout
    assert [line for line in done.stderr.splitlines() if "matplotlib" in line] == [
        "WARNING laddertune.report.write: drawing the report's figures needs matplotlib, which is not installed: "
        "pip install 'laddertune[report]'; figures skipped"
    ]
    assert (tmp_path / "rep" / "table1.md").is_file()


def _row(task, method, seed, score) -> dict:
    return {"task": task, "method": method, "seed": seed, "score": score, "peak_train_gib": 0.3,
            "seconds_per_step": 0.2}  # fmt: skip


def test_serve_without_fastapi_names_the_serve_extra(monkeypatch, capsys):
    from laddertune.cli import main

    _uninstall(monkeypatch, "fastapi")
    assert main(["serve", "--checkpoint", "a=nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "error: laddertune serve needs fastapi, which is not installed: pip install 'laddertune[serve]'"
    )
