"""Table 3: how many rationale tokens come from the distractor sentence?

The program behind ``analysis/evaluate_distractor_rationales.py`` (usage and the columns'
definitions there); the counts live in :mod:`sequential_rationales.metrics`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import (
    distractor_counts,
    distractor_table_row,
)
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.tables import (
    add_method_arguments,
    find_results,
    read_indexed_jsonl,
    report_table,
)

COLUMNS = ["Source Mean", "Target Mean", "Source Frac.", "Target Frac."]
RECORD_KEYS = ("rationalizations", "source_tokens")  # of the logs rationalize_iwslt writes
DIGITS = dict.fromkeys(COLUMNS, 2)


def read_breaks(path: Path) -> dict[str, dict[str, int]]:
    """``{example index (str): {"source_break", "target_break"}}`` from ``distractors.jsonl``."""
    return read_indexed_jsonl(path, "fairseq/create_distractor_dataset.py (pass --breaks)")


def example_counts(log: dict[str, Any], brk: dict[str, int]) -> list[tuple[tuple[int, int], bool]]:
    """Per target token of one example: its (source, target) distractor counts and whether it
    lies in the second sentence. Decoder positions are shifted by the leading ``</s>``."""
    target_break = brk["target_break"] + 1
    source_eos = len(log["source_tokens"]) - 1
    out = []
    for entry in log["rationalizations"]:
        t = entry["target_position"]
        counts = distractor_counts(entry["source_rationale"], entry["target_rationale"], t,
                                   brk["source_break"], target_break, source_eos=source_eos)
        out.append((counts, t >= target_break))
    return out


def evaluate(found: dict[str, dict[str, dict]], methods: list[str],
             breaks: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    """Table rows over the examples every method has."""
    common = sorted(set.intersection(*(set(found[m]) for m in methods)) & set(breaks), key=int)
    if not common:
        raise SystemExit(f"error: no example has results for all of {methods} and a break")
    rows = {}
    for method in methods:
        pairs = [p for name in common for p in example_counts(found[method][name], breaks[name])]
        row = distractor_table_row([c for c, _ in pairs], [second for _, second in pairs])
        row["examples"] = float(len(common))
        row["targets"] = float(len(pairs))
        rows[method] = row
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_method_arguments(p, Path("rationalization_results") / "iwslt" / "distractors",
                         "distractors_table")
    p.add_argument("--breaks", default="generated_translations/distractors.jsonl",
                   help="distractors.jsonl of fairseq/create_distractor_dataset.py")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    found, methods = find_results(results_dir, args.baseline,
                                  "fairseq/rationalize_iwslt.py --task distractors",
                                  experiment="distractors", required=RECORD_KEYS)
    methods = [m for m in methods if not m.endswith("_top_1")]
    rows = evaluate(found, methods, read_breaks(Path(args.breaks)))
    first = next(iter(rows.values()))
    print(f"Distractors: {int(first['examples'])} examples, {int(first['targets'])} target "
          "tokens per method")
    report_table(rows, COLUMNS, DIGITS, args.out or results_dir / "distractors_table")
    return rows
