"""Table 1: evaluate the analogy rationales written by ``huggingface/rationalize_analogies.py``.

The program behind ``analysis/evaluate_analogies_rationales.py``; its user documentation is
that file's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import (
    analogy_table_row,
)
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.tables import (
    add_method_arguments,
    find_results,
    report_table,
)

COLUMNS = ["Length", "Ratio", "Ante", "No D"]
DIGITS = {"Length": 1, "Ratio": 1, "Ante": 2, "No D": 2}
REFERENCE = "exhaustive"
RECORD_KEYS = ("rationalization", "all_rationales", "antecedent_positions",
               "distractor_positions")


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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_method_arguments(p, Path("rationalization_results", "analogies"), "analogies_table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    found, methods = find_results(results_dir, args.baseline,
                                  "huggingface/rationalize_analogies.py", exclude=[REFERENCE],
                                  experiment="analogies", required=RECORD_KEYS)
    exhaustive = found.get(REFERENCE)
    rows = evaluate(found, methods, exhaustive)
    n = int(next(iter(rows.values()))["n"])
    n_ratio = int(next(iter(rows.values()))["n_ratio"])
    print(f"Analogies: {n} examples common to {', '.join(methods)}; Ratio over {n_ratio} with "
          "an exhaustive rationale")
    report_table(rows, COLUMNS, DIGITS, args.out or results_dir / "analogies_table")
    return rows
