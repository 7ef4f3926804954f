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
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.tables import add_method_arguments, find_results, write_table  # noqa: E402
from sequential_rationales.metrics import (  # noqa: E402
    METHOD_LABELS,
    analogy_table_row,
    markdown_table,
)

COLUMNS = ["Length", "Ratio", "Ante", "No D"]
DIGITS = {"Length": 1, "Ratio": 1, "Ante": 2, "No D": 2}
REFERENCE = "exhaustive"


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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_method_arguments(p, ROOT / "rationalization_results" / "analogies", "analogies_table")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    found, methods = find_results(results_dir, args.baseline,
                                  "huggingface/rationalize_analogies.py", exclude=[REFERENCE])
    exhaustive = found.get(REFERENCE)
    rows = evaluate(found, methods, exhaustive)
    labelled = {METHOD_LABELS.get(m, m): row for m, row in rows.items()}
    n = int(next(iter(rows.values()))["n"])
    n_ratio = int(next(iter(rows.values()))["n_ratio"])
    print(f"Analogies: {n} examples common to {', '.join(methods)}; Ratio over {n_ratio} with "
          "an exhaustive rationale")
    print(markdown_table(labelled, COLUMNS, DIGITS))
    out = Path(args.out) if args.out else results_dir / "analogies_table"
    csv_path, json_path = write_table(rows, out, COLUMNS)
    print(f"wrote {csv_path} and {json_path}")
    return rows


if __name__ == "__main__":
    main()
