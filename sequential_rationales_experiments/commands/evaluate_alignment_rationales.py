"""Table 4: do the source parts of rationales find the gold word alignments?

The program behind ``analysis/evaluate_alignment_rationales.py`` (usage and the metrics'
definitions there); the metrics live in :mod:`sequential_rationales.metrics`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import (
    alignment_table_row,
    first_added_source,
)
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.tables import (
    add_method_arguments,
    find_results,
    read_indexed_jsonl,
    report_table,
)

COLUMNS = ["Length", "AER", "IOU", "F1", "Top1"]
RECORD_KEYS = ("rationalizations", "source_tokens")  # of the logs rationalize_iwslt writes
DIGITS = {"Length": 1, "AER": 2, "IOU": 2, "F1": 2, "Top1": 2}


def read_alignments(path: Path) -> dict[str, dict[str, Any]]:
    return read_indexed_jsonl(path, "fairseq/map_alignments_to_bpe.py (pass --alignments)")


def target_words(gold: dict[str, Any]) -> dict[int, list[int]]:
    """``{target word: [its piece positions]}``."""
    words: dict[int, list[int]] = {}
    for piece, word in enumerate(gold["target_word_index"]):
        words.setdefault(word, []).append(piece)
    return words


def word_items(log: dict[str, Any], gold: dict[str, Any], top_1_log: dict[str, Any] | None):
    """Per gold-aligned target word: (rationale, sure, possible, source length, first added).

    Decoder position ``p`` holds target piece ``p - 1`` (position 0 is the decoder's ``</s>``).
    """
    by_piece = {e["target_position"] - 1: e for e in log["rationalizations"]}
    first_by_piece = {} if top_1_log is None else {
        e["target_position"] - 1: first_added_source(e["source_rationale"])
        for e in top_1_log["rationalizations"]}
    sure: dict[int, set[int]] = {}
    possible: dict[int, set[int]] = {}
    for s, t in gold["sure"]:
        sure.setdefault(t, set()).add(s)
    for s, t in gold["possible"]:
        possible.setdefault(t, set()).add(s)
    source_length = len(log["source_tokens"]) - 1
    items = []
    for pieces in target_words(gold).values():
        word_sure = set().union(*(sure.get(p, set()) for p in pieces))
        word_possible = set().union(*(possible.get(p, set()) for p in pieces))
        if not word_possible | word_sure or not all(p in by_piece for p in pieces):
            continue
        rationale = set().union(*(by_piece[p]["source_rationale"] for p in pieces))
        first = {first_by_piece[p] for p in pieces if first_by_piece.get(p) is not None}
        items.append((rationale, word_sure, word_possible, source_length, first))
    return items


def evaluate(found: dict[str, dict[str, dict]], methods: list[str],
             gold: dict[str, dict[str, Any]], top_1: bool) -> dict[str, dict[str, float]]:
    runs = [m + "_top_1" for m in methods] if top_1 else []
    missing = [r for r in runs if r not in found]
    if missing:
        raise SystemExit(f"error: --top_1 needs the runs {missing} (rationalize_iwslt.py "
                         "--top_1)")
    needed = [*methods, *runs]
    common = sorted(set.intersection(*(set(found[m]) for m in needed)) & set(gold), key=int)
    if not common:
        raise SystemExit(f"error: no example has results for all of {needed} and gold links")
    rows = {}
    for method in methods:
        items = [item for name in common for item in word_items(
            found[method][name], gold[name],
            found[method + "_top_1"][name] if top_1 else None)]
        predicted, sure, possible, lengths, first = (list(col) for col in zip(*items))
        row = alignment_table_row(predicted, sure, possible, lengths,
                                  first if top_1 else None)
        row["examples"] = float(len(common))
        rows[method] = row
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_method_arguments(p, Path("rationalization_results") / "iwslt" / "alignments",
                         "alignments_table")
    p.add_argument("--alignments",
                   default="data/iwslt14.tokenized.de-en/gold_labels/bpe_alignments.jsonl",
                   help="gold piece-level links (fairseq/map_alignments_to_bpe.py output)")
    p.add_argument("--top_1", action="store_true",
                   help="add the Top1 column from the METHOD_top_1 runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    args = parse_args(argv)
    results_dir = Path(args.results_dir)
    found, methods = find_results(results_dir, args.baseline,
                                  "fairseq/rationalize_iwslt.py --task alignments",
                                  experiment="alignments", required=RECORD_KEYS)
    methods = [m for m in methods if not m.endswith("_top_1")]
    rows = evaluate(found, methods, read_alignments(Path(args.alignments)), args.top_1)
    first = next(iter(rows.values()))
    print(f"Alignments: {int(first['examples'])} examples, {int(first['n'])} aligned target "
          "words per method")
    columns = COLUMNS if args.top_1 else COLUMNS[:-1]
    report_table(rows, columns, DIGITS, args.out or results_dir / "alignments_table")
    return rows
