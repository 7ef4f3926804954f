"""Build the distractor test set of the paper's Table 3 (IWSLT14, Section 8.2).

The program behind ``fairseq/create_distractor_dataset.py`` (usage there); the pairing lives
in :mod:`sequential_rationales_experiments.distractors`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.cli import (
    ProgramParser,
    input_error_message,
    non_negative_int,
)
from sequential_rationales_experiments.distractors import (
    make_distractor_dataset,
    write_distractors_jsonl,
)
from sequential_rationales_experiments.fairseq_tools import read_fairseq_hypotheses
from sequential_rationales_experiments.iwslt14 import read_lines, write_lines


def _num_pairs(value: str) -> int | None:
    if value == "all":
        return None
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'all', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("--num-pairs must be a positive integer or 'all'")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = ProgramParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="source sentences, one per line (e.g. the BPE'd test.de)")
    parser.add_argument("--translations", type=Path, required=True,
                        help="generated translations: one per line, or a fairseq-generate log")
    parser.add_argument("--translations-format", choices=("plain", "fairseq-generate"),
                        default="plain",
                        help="'plain' (one sentence per line) or 'fairseq-generate' (take the "
                             "H-<id> lines, ordered by id)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--seed", type=non_negative_int, default=0)
    parser.add_argument("--num-pairs", type=_num_pairs, default=500,
                        help="number of concatenated pairs (original: 500) or 'all'")
    parser.add_argument("--source-lang", default="de")
    parser.add_argument("--target-lang", default="en")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sources = read_lines(args.source)
        lines = read_lines(args.translations)
        if args.translations_format == "fairseq-generate":
            targets = read_fairseq_hypotheses(lines)
        else:
            targets = lines
        if len(sources) != len(targets):
            raise InputError(
                f"{args.source} has {len(sources)} sentences but {args.translations} has "
                f"{len(targets)} translations"
            )
        examples = make_distractor_dataset(sources, targets, seed=args.seed,
                                           num_pairs=args.num_pairs)
    except (ValueError, FileNotFoundError) as exc:
        print(input_error_message(exc) or f"error: {exc}", file=sys.stderr)
        return 2
    out, src, tgt = args.out_dir, args.source_lang, args.target_lang
    write_lines(out / f"distractors.{src}", (e.source for e in examples))
    write_lines(out / f"distractors.{tgt}", (e.target for e in examples))
    write_lines(out / f"breaks.{src}", (str(e.source_break) for e in examples))
    write_lines(out / f"breaks.{tgt}", (str(e.target_break) for e in examples))
    write_distractors_jsonl(examples, out / "distractors.jsonl")
    print(f"Wrote {len(examples)} distractor examples to {out}")
    return 0
