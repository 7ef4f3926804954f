"""Prepare IWSLT14 De-En like fairseq's examples/translation/prepare-iwslt14.sh, without perl.

The program behind ``fairseq/prepare_iwslt14.py`` (usage there); the steps live in
:mod:`sequential_rationales_experiments.iwslt14`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sequential_rationales_experiments import iwslt14
from sequential_rationales_experiments.cli import ProgramParser, input_error_message, positive_int

# Relative to the current folder: the commands are run from the repository root.
DEFAULT_OUT = Path("data") / "iwslt14.tokenized.de-en"
DEFAULT_DOWNLOAD_DIR = Path("data") / "orig"


def _log(message: str) -> None:
    print(message, flush=True)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ProgramParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: data/iwslt14.tokenized.de-en)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="an already downloaded de-en.tgz (or its extracted de-en/ folder); "
                             "skips the download")
    parser.add_argument("--download-dir", type=Path, default=DEFAULT_DOWNLOAD_DIR,
                        help="where de-en.tgz is downloaded to / reused from (default: data/orig)")
    parser.add_argument("--bpe-merges", type=positive_int, default=10000,
                        help="number of joint BPE merge operations (default: 10000)")
    parser.add_argument("--drop-extra-meta-lines", action="store_true",
                        help="also drop <speaker>/<reviewer>/<translator>/<doc> lines (NOT done "
                             "by prepare-iwslt14.sh; changes the valid split if any exist)")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="processes for tokenizing the training data (default: 1)")
    parser.add_argument("--timeout", type=_positive_seconds, default=60.0,
                        help="seconds to wait for each download mirror (default: 60)")
    parser.add_argument("--gold-dir", type=Path, default=None,
                        help="encode the RWTH gold alignment text in this folder with OUT/code "
                             "instead of building the dataset")
    parser.add_argument("--gold-encoding", default="latin-1",
                        help="encoding of the raw RWTH files 'de'/'en' (default: latin-1)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.gold_dir is not None:
            iwslt14.encode_gold(args.gold_dir, args.out / "code", args.gold_encoding, log=_log)
            return 0
        archive = args.archive
        if archive is None:
            archive = iwslt14.download_iwslt14(args.download_dir, timeout=args.timeout, log=_log)
        iwslt14.prepare_iwslt14(archive, args.out, bpe_merges=args.bpe_merges,
                                drop_extra_meta=args.drop_extra_meta_lines, log=_log,
                                workers=args.workers)
    except (iwslt14.DownloadError, iwslt14.IWSLTFormatError, FileNotFoundError,
            ValueError) as exc:
        print(input_error_message(exc) or f"error: {exc}", file=sys.stderr)
        return 2
    return 0
