"""The report folder: a markdown file per table, ``report.md`` with every table and figure, PNGs, ``summary.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import ConfigError, import_optional
from ..io import atomic_write_text
from .figures import write_figures
from .rows import Row
from .tables import LAYOUTS, markdown, summary
from .time_to_score import figures as time_figures
from .time_to_score import markdown as time_markdown

log = logging.getLogger(__name__)


def write_report(rows: list[Row], output: str | Path) -> list[Path]:
    """Write the tables and figures of ``rows`` into ``output`` (created); returns the files written.

    Only the tables and figures whose rows are present are written: ``<name>.md`` per table (``table1``,
    ``figure5`` ... ``figure8``), ``time_to_score.md`` and its PNGs (:mod:`.time_to_score`), the PNGs of :func:`~laddertune.report.figures.write_figures`, ``report.md``
    (every table, then every figure; without matplotlib, which comes with ``laddertune[report]``, the figures are
    skipped with one warning) and ``summary.json`` (each table's groups: per-task mean, std and n, the
    average, costs; and the rows read).
    """
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--output {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create {out}: {e.strerror or e}") from None
    written, sections = [], ["# Report", "", f"{len(rows)} runs."]
    for name in LAYOUTS:
        text = markdown(rows, name)
        if text is None:
            continue
        atomic_write_text(out / f"{name}.md", text)
        written.append(out / f"{name}.md")
        sections += ["", text]
    if (text := time_markdown(rows)) is not None:
        atomic_write_text(out / "time_to_score.md", text)
        written.append(out / "time_to_score.md")
        sections += ["", text]
    sections += ["", "## Figures", ""]
    try:
        import_optional("matplotlib", "report", "drawing the report's figures")
    except ConfigError as e:  # the tables need no matplotlib: write them, skip the figures with one line
        log.warning("%s; figures skipped", e)
        pngs, sections = [], [*sections, f"Not drawn: {e}."]
    else:
        pngs = write_figures(rows, out) + time_figures(rows, out)
        sections += [f"![{p.stem}]({p.name})" for p in pngs]
    atomic_write_text(out / "report.md", "\n".join(sections) + "\n")
    data = {"tables": summary(rows), "rows": [r.to_dict() for r in rows]}
    atomic_write_text(out / "summary.json", json.dumps(data, indent=2) + "\n")
    written += [*pngs, out / "report.md", out / "summary.json"]
    log.info("report: %d rows -> %d files in %s", len(rows), len(written), out)
    return written
