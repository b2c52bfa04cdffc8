"""Is a figure's ordering more than seed noise? Paired t-tests of each variant against a reference, over seeds.

    python benchmarks/paired_seeds.py benchmarks/results/figure7_minilm.json --reference random
    python benchmarks/paired_seeds.py benchmarks/results/figure8_minilm.json --reference side-tuning

Runs with the same seed share the training subsample, its order and the evaluation rows (the suite is
deterministic per seed), so the seeds pair the variants: for every variant, the per-seed differences to the
reference, their mean, and scipy's ``ttest_rel`` p-value (two-sided), per task and for the mean over the tasks.
Reads a suite rows file (``benchmarks/suite.py``'s ``<command>_<backbone>.json``) with ``laddertune.report``'s
``load_rows`` (the report's validation and one-line errors) and writes ``<rows>_paired.md`` and
``<rows>_paired.json`` next to it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's laddertune, also when it is not installed

from laddertune.errors import LadderTuneError  # noqa: E402
from laddertune.report import load_rows  # noqa: E402
from laddertune.report.rows import Row  # noqa: E402


def scores(rows: list[Row]) -> dict[str, dict[int, dict[str, float]]]:
    """{variant: {seed: {task: score}}}, by the report's label (the variant, else the method)."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        out[r.label][r.seed][r.task] = r.score
    return out


def paired(by: dict, reference: str) -> list[dict]:
    """One dict per (variant, task or "avg"): seeds, mean difference to ``reference`` and the paired p-value."""
    if reference not in by:
        raise ValueError(f"no runs of the reference {reference!r}; variants: {', '.join(by)}")
    ref, results = by[reference], []
    tasks = sorted({t for seeds in ref.values() for t in seeds})
    for variant, seeds in by.items():
        if variant == reference:
            continue
        common = sorted(s for s in seeds if s in ref and set(seeds[s]) == set(ref[s]) == set(tasks))
        for task in (*tasks, "avg"):

            def value(per_task: dict, task=task) -> float:
                return statistics.mean(per_task.values()) if task == "avg" else per_task[task]

            a = [value(seeds[s]) for s in common]
            b = [value(ref[s]) for s in common]
            diffs = [x - y for x, y in zip(a, b, strict=True)]
            p = float(stats.ttest_rel(a, b).pvalue) if len(common) > 1 and any(diffs) else None
            results.append(
                {
                    "variant": variant,
                    "task": task,
                    "seeds": common,
                    "mean_difference": statistics.mean(diffs) if diffs else None,
                    "seeds_above": sum(d > 0 for d in diffs),
                    "p_value": p,
                }
            )
    return results


def markdown(results: list[dict], reference: str, source: str) -> str:
    lines = [
        f"### Paired over seeds, against {reference} ({source})",
        "",
        "| Variant | Task | Seeds | Mean difference | Seeds above | p (paired t, two-sided) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        p = "-" if r["p_value"] is None else f"{r['p_value']:.3f}"
        diff = "-" if r["mean_difference"] is None else f"{r['mean_difference']:+.2f}"
        n = len(r["seeds"])
        lines.append(f"| {r['variant']} | {r['task']} | {n} | {diff} | {r['seeds_above']}/{n} | {p} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=Path, help="a suite rows file (a JSON list of runs)")
    parser.add_argument("--reference", required=True, help="the variant every other one is compared with")
    args = parser.parse_args()
    try:
        results = paired(scores(load_rows([args.rows])), args.reference)
    except (LadderTuneError, ValueError) as err:  # a missing or malformed rows file, an unknown reference
        parser.exit(2, f"paired_seeds: {err}\n")
    stem = args.rows.with_suffix("")
    text = markdown(results, args.reference, args.rows.name)
    Path(f"{stem}_paired.md").write_text(text)
    Path(f"{stem}_paired.json").write_text(
        json.dumps({"reference": args.reference, "rows": results}, indent=1)
    )
    print(text)


if __name__ == "__main__":
    main()
