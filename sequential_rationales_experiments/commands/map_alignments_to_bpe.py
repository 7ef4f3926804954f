"""Map gold word alignments to BPE pieces for the paper's Table 4 (IWSLT14, Section 8.2).

The program behind ``fairseq/map_alignments_to_bpe.py`` (usage and output format there); the
parsing and mapping live in :mod:`sequential_rationales_experiments.alignments`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sequential_rationales_experiments.alignments import (
    WordAlignment,
    bpe_word_index,
    map_word_alignments_to_bpe,
    read_word_alignments,
)
from sequential_rationales_experiments.cli import ProgramParser, input_error_message
from sequential_rationales_experiments.iwslt14 import IWSLTFormatError, read_lines, write_lines


def _read_bpe(path: Path) -> list[str]:
    lines = read_lines(path)
    while lines and not lines[-1].strip():  # the original README deletes trailing blank lines
        lines.pop()
    return lines


def _check_word_counts(bpe_lines: list[str], words_path: Path | None, bpe_path: Path) -> None:
    """As the original script asserts: BPE pieces must join into the gold text's words."""
    if words_path is None:
        return
    words = _read_bpe(words_path)
    if len(words) != len(bpe_lines):
        raise IWSLTFormatError(
            f"{words_path} has {len(words)} sentences but {bpe_path} has {len(bpe_lines)}"
        )
    for number, (word_line, bpe_line) in enumerate(zip(words, bpe_lines), 1):
        n_words, n_joined = len(word_line.split()), len(set(bpe_word_index(bpe_line)))
        if n_words != n_joined:
            raise IWSLTFormatError(
                f"sentence {number}: {words_path} has {n_words} words but the BPE pieces of "
                f"{bpe_path} join into {n_joined}; fix the tokenization of that line"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = ProgramParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="BPE'd source (gold_bpe.de)")
    parser.add_argument("--target", type=Path, required=True, help="BPE'd target (gold_bpe.en)")
    parser.add_argument("--alignments", type=Path, required=True,
                        help="word alignment file (RWTH alignmentDeEn or Pharaoh)")
    parser.add_argument("--format", choices=("auto", "rwth", "pharaoh"), default="auto")
    parser.add_argument("--one-based", action="store_true",
                        help="word positions in the alignment file start at 1")
    parser.add_argument("--reverse", action="store_true",
                        help="links are written target-first (swap them)")
    parser.add_argument("--source-words", type=Path, default=None,
                        help="optional word-level source text (e.g. gold.de): check that every "
                             "sentence has as many words as its BPE pieces join into")
    parser.add_argument("--target-words", type=Path, default=None,
                        help="optional word-level target text (e.g. gold.en), checked likewise")
    parser.add_argument("--out", type=Path, required=True, help="output JSONL file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sources, targets = _read_bpe(args.source), _read_bpe(args.target)
        if not sources:
            raise IWSLTFormatError(f"{args.source} is empty: there are no sentences to align")
        _check_word_counts(sources, args.source_words, args.source)
        _check_word_counts(targets, args.target_words, args.target)
        alignments = read_word_alignments(args.alignments, args.format, args.one_based)
        if not len(sources) == len(targets) == len(alignments):
            raise IWSLTFormatError(
                f"sentence counts differ: {len(sources)} in {args.source}, {len(targets)} in "
                f"{args.target}, {len(alignments)} in {args.alignments}"
            )
        records = []
        for index, (src, tgt, word) in enumerate(zip(sources, targets, alignments)):
            if args.reverse:
                word = WordAlignment(frozenset((s, t) for t, s in word.sure),
                                     frozenset((s, t) for t, s in word.possible),
                                     word.sentence_id)
            try:
                bpe = map_word_alignments_to_bpe(src, tgt, word)
            except IWSLTFormatError as exc:
                raise IWSLTFormatError(f"sentence {index + 1}: {exc}") from exc
            records.append({
                "index": index,
                "sentence_id": word.sentence_id if word.sentence_id is not None else str(index),
                "source_word_index": list(bpe.source_word_index),
                "target_word_index": list(bpe.target_word_index),
                "sure": sorted(map(list, bpe.sure)),
                "possible": sorted(map(list, bpe.possible)),
                "word_sure": sorted(map(list, word.sure)),
                "word_possible": sorted(map(list, word.possible)),
            })
    except (IWSLTFormatError, ValueError, FileNotFoundError) as exc:
        print(input_error_message(exc) or f"error: {exc}", file=sys.stderr)
        return 2
    write_lines(args.out, (json.dumps(record) for record in records))
    print(f"Wrote BPE-level alignments of {len(records)} sentences to {args.out}")
    return 0
