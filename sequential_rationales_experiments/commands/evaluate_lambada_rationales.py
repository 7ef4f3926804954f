"""Table 2: evaluate the Lambada rationales written by
``huggingface/rationalize_annotated_lambada.py`` against the human rationales.

The program behind ``analysis/evaluate_lambada_rationales.py``; its user documentation is that
file's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import (
    lambada_table_row,
    word_rationale,
)
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.tables import (
    add_method_arguments,
    find_results,
    report_table,
)

COLUMNS = ["Length", "IOU", "F1"]
DIGITS = {"Length": 1, "IOU": 2, "F1": 2}
RECORD_KEYS = ("rationalization", "all_rationales", "human_subword_rationale")


def first_piece(record: dict[str, Any]) -> int:
    return int(record["rationalization"][0]["target_position"])


def evaluate(results: dict[str, dict[str, dict[str, Any]]], methods: list[str]
             ) -> dict[str, dict[str, float]]:
    """Table rows for ``methods`` over the passages every one of them has."""
    common = set.intersection(*(set(results[m]) for m in methods))
    if not common:
        raise SystemExit(f"error: no passage has results for all of {methods}")
    names = sorted(common, key=lambda n: (len(n), n))
    rows = {}
    for method in methods:
        records = [results[method][name] for name in names]
        firsts = [first_piece(r) for r in records]
        rows[method] = lambada_table_row(
            [word_rationale(r["all_rationales"], f) for r, f in zip(records, firsts)],
            [r["human_subword_rationale"] for r in records],
            firsts)
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_method_arguments(p, Path("rationalization_results", "lambada"), "lambada_table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    found, methods = find_results(results_dir, args.baseline,
                                  "huggingface/rationalize_annotated_lambada.py",
                                  experiment="lambada", required=RECORD_KEYS)
    rows = evaluate(found, methods)
    n = int(next(iter(rows.values()))["n"])
    print(f"Annotated Lambada: {n} passages common to {', '.join(methods)}")
    report_table(rows, COLUMNS, DIGITS, args.out or results_dir / "lambada_table")
    return rows
