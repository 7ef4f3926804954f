"""Build the distractor test set of the paper's Table 3 (IWSLT14, Section 8.2).

Each example is concatenated with another test example on both sides: the BPE'd German
source and the model's own (BPE'd, beam-1) English translation. Writes to ``--out-dir``:

* ``distractors.de`` / ``distractors.en`` — one concatenated example per line, the
  ``--testpref`` of ``fairseq-preprocess``;
* ``breaks.de`` / ``breaks.en`` — per line, the number of tokens of the first sentence
  (as the original ``create_distractor_iwslt_dataset.py`` writes them);
* ``distractors.jsonl`` — per line ``{"index", "first_index", "second_index",
  "source_break", "target_break"}`` (indices into the input files, 0-based).

Defaults reproduce the original protocol: 500 pairs of 1,000 distinct sentences drawn with
``numpy.random.RandomState(0)``; ``--num-pairs all`` instead pairs every example with a random
other one. Example::

    python fairseq/create_distractor_dataset.py \\
        --source data/iwslt14.tokenized.de-en/test.de \\
        --translations generated_translations/compatible_iwslt_tmp.txt \\
        --translations-format fairseq-generate --out-dir generated_translations
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # the package is importable when run from a checkout
    sys.path.insert(0, str(_ROOT))

from sequential_rationales import translation_data as td  # noqa: E402


def _num_pairs(value: str) -> int | None:
    if value == "all":
        return None
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("--num-pairs must be a positive integer or 'all'")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True,
                        help="source sentences, one per line (e.g. the BPE'd test.de)")
    parser.add_argument("--translations", type=Path, required=True,
                        help="generated translations: one per line, or a fairseq-generate log")
    parser.add_argument("--translations-format", choices=("plain", "fairseq-generate"),
                        default="plain",
                        help="'plain' (one sentence per line) or 'fairseq-generate' (take the "
                             "H-<id> lines, ordered by id)")
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-pairs", type=_num_pairs, default=500,
                        help="number of concatenated pairs (original: 500) or 'all'")
    parser.add_argument("--source-lang", default="de")
    parser.add_argument("--target-lang", default="en")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sources = td.read_lines(args.source)
        lines = td.read_lines(args.translations)
        if args.translations_format == "fairseq-generate":
            targets = td.read_fairseq_hypotheses(lines)
        else:
            targets = lines
        if len(sources) != len(targets):
            raise ValueError(
                f"{args.source} has {len(sources)} sentences but {args.translations} has "
                f"{len(targets)} translations"
            )
        examples = td.make_distractor_dataset(sources, targets, seed=args.seed,
                                              num_pairs=args.num_pairs)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out, src, tgt = args.out_dir, args.source_lang, args.target_lang
    td.write_lines(out / f"distractors.{src}", (e.source for e in examples))
    td.write_lines(out / f"distractors.{tgt}", (e.target for e in examples))
    td.write_lines(out / f"breaks.{src}", (str(e.source_break) for e in examples))
    td.write_lines(out / f"breaks.{tgt}", (str(e.target_break) for e in examples))
    td.write_lines(
        out / "distractors.jsonl",
        (
            json.dumps({"index": k, "first_index": e.first_index, "second_index": e.second_index,
                        "source_break": e.source_break, "target_break": e.target_break})
            for k, e in enumerate(examples)
        ),
    )
    print(f"Wrote {len(examples)} distractor examples to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
