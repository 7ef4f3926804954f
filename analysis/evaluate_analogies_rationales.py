"""Table 1: evaluate the analogy rationales written by ``huggingface/rationalize_analogies.py``.

Reads ``<results_dir>/<method>/*.json`` (one file per example) and prints, per method,

- **Length**: mean size of the last token's rationale;
- **Ratio**: mean of length / exhaustive length, over the examples that also have an
  exhaustive rationale which reached the argmax (``<results_dir>/exhaustive``);
- **Ante**: fraction of rationales containing the antecedent word's token;
- **No D**: fraction of rationales containing no token of the distractor clause.

Methods are compared on the same examples: with ``--baseline METHOD`` (the seed's interface)
the rows are that baseline and greedy, over the examples both have; with ``--all`` (the
default when no baseline is named) every method found, over the examples all of them have.
Writes the table as CSV and JSON (``--out``).

    python analysis/evaluate_analogies_rationales.py --baseline gradient_norm
    python analysis/evaluate_analogies_rationales.py --all
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sequential_rationales.metrics import (  # noqa: E402
    METHOD_LABELS,
    analogy_table_row,
    markdown_table,
)

COLUMNS = ["Length", "Ratio", "Ante", "No D"]
DIGITS = {"Length": 1, "Ratio": 1, "Ante": 2, "No D": 2}
REFERENCE = "exhaustive"


def load_results(method_dir: Path) -> dict[str, dict[str, Any]]:
    """``{example name: record}`` for the JSON files of one method's folder."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8"))
            for path in sorted(method_dir.glob("*.json"))}


def order_methods(methods: list[str]) -> list[str]:
    """The paper's row order, unknown names last (alphabetically)."""
    known = [m for m in METHOD_LABELS if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_LABELS)


def last_rationale(record: dict[str, Any]) -> list[int]:
    return list(record["all_rationales"][-1])


def evaluate(results: dict[str, dict[str, dict[str, Any]]], methods: list[str],
             exhaustive: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, float]]:
    """Table rows for ``methods`` over the examples every one of them has."""
    common = set.intersection(*(set(results[m]) for m in methods))
    if not common:
        raise SystemExit(f"error: no example has results for all of {methods}")
    names = sorted(common)
    minima: list[list[int] | None] = []
    for name in names:
        record = (exhaustive or {}).get(name)
        reached = record is not None and all(
            r.get("reached_argmax", True) for r in record["rationalization"])
        minima.append(last_rationale(record) if reached else None)
    rows = {}
    for method in methods:
        records = [results[method][name] for name in names]
        rows[method] = analogy_table_row(
            [last_rationale(r) for r in records],
            [r["antecedent_positions"] for r in records],
            [r["distractor_positions"] for r in records],
            minima if exhaustive else None)
    return rows


def _clean(value: Any) -> Any:
    """JSON has no NaN: a missing value is written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_table(rows: dict[str, dict[str, float]], out: Path) -> tuple[Path, Path]:
    """Write ``OUT.csv`` and ``OUT.json`` (one row / entry per method)."""
    stem = str(out)
    for ext in (".csv", ".json"):
        stem = stem[:-len(ext)] if stem.endswith(ext) else stem
    csv_path, json_path = Path(stem + ".csv"), Path(stem + ".json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in rows.values() for k in row}, key=lambda k: (
        COLUMNS.index(k) if k in COLUMNS else len(COLUMNS), k))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "label", *keys])
        for method, row in rows.items():
            writer.writerow([method, METHOD_LABELS.get(method, method),
                             *["" if _clean(row.get(k)) is None else row[k] for k in keys]])
    json_path.write_text(json.dumps(
        {m: {"label": METHOD_LABELS.get(m, m), **{k: _clean(v) for k, v in row.items()}}
         for m, row in rows.items()}, indent=2), encoding="utf-8")
    return csv_path, json_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results_dir", default=str(ROOT / "rationalization_results" / "analogies"),
                   help="folder with one subfolder of JSON results per method (default: "
                        "rationalization_results/analogies under the repository root)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--baseline", default=None,
                       help="compare this method with greedy (rows: the baseline, greedy)")
    which.add_argument("--all", action="store_true",
                       help="every method found (the default without --baseline)")
    p.add_argument("--out", default=None,
                   help="output path without extension; .csv and .json are written "
                        "(default: RESULTS_DIR/analogies_table)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    if not results_dir.is_dir():
        raise SystemExit(f"error: {results_dir} does not exist; run "
                         "huggingface/rationalize_analogies.py first")
    found = {d.name: load_results(d) for d in results_dir.iterdir() if d.is_dir()}
    found = {m: r for m, r in found.items() if r}
    exhaustive = found.get(REFERENCE)
    if args.baseline:
        methods = [args.baseline, "greedy"]
        missing = [m for m in methods if m not in found]
        if missing:
            raise SystemExit(f"error: no results for {missing} in {results_dir} (found: "
                             f"{sorted(found) or 'nothing'})")
    else:
        methods = order_methods([m for m in found if m != REFERENCE])
        if not methods:
            raise SystemExit(f"error: no method results in {results_dir}")
    rows = evaluate(found, methods, exhaustive)
    labelled = {METHOD_LABELS.get(m, m): row for m, row in rows.items()}
    n = int(next(iter(rows.values()))["n"])
    n_ratio = int(next(iter(rows.values()))["n_ratio"])
    print(f"Analogies: {n} examples common to {', '.join(methods)}; Ratio over {n_ratio} with "
          "an exhaustive rationale")
    print(markdown_table(labelled, COLUMNS, DIGITS))
    out = Path(args.out) if args.out else results_dir / "analogies_table"
    csv_path, json_path = write_table(rows, out)
    print(f"wrote {csv_path} and {json_path}")
    return rows


if __name__ == "__main__":
    main()
