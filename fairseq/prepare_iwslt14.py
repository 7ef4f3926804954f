"""Prepare IWSLT14 De-En like fairseq's examples/translation/prepare-iwslt14.sh, without perl.

Downloads ``de-en.tgz`` (or reads ``--archive``), then tokenizes (Moses rules via sacremoses),
cleans (ratio 1.5, 1-175 tokens), lowercases, splits every 23rd training line off as valid,
builds test from dev2010 + TEDX.dev2012 + tst2010-2012, learns joint BPE (10,000 merges) and
applies it. Output: ``OUT/{train,valid,test}.{de,en}`` and ``OUT/code`` (intermediate files in
``OUT/tmp``), ready for::

    fairseq-preprocess --source-lang de --target-lang en \\
        --trainpref OUT/train --validpref OUT/valid --testpref OUT/test \\
        --destdir data-bin/iwslt14.tokenized.de-en --workers 20

``--gold-dir DIR`` instead encodes the RWTH gold alignment text with ``OUT/code``: ``DIR/de``
and ``DIR/en`` (ISO-8859-1, converted to ``gold.de``/``gold.en`` unless those exist) are
tokenized and lowercased into ``tmp_gold.*`` and BPE'd into ``gold_bpe.*``.

Run from the repository root: ``python fairseq/prepare_iwslt14.py [--archive de-en.tgz]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # the package is importable when run from a checkout
    sys.path.insert(0, str(_ROOT))

from sequential_rationales import translation_data as td  # noqa: E402

DEFAULT_OUT = _ROOT / "data" / "iwslt14.tokenized.de-en"
DEFAULT_DOWNLOAD_DIR = _ROOT / "data" / "orig"


def _log(message: str) -> None:
    print(message, flush=True)


def encode_gold(gold_dir: Path, codes: Path, encoding: str) -> None:
    """Tokenize, lowercase and BPE the RWTH gold text as the seed README's perl steps do."""
    if not codes.is_file():
        raise FileNotFoundError(
            f"BPE codes {codes} not found: build the dataset first (without --gold-dir) or "
            "point --out at the folder holding 'code'"
        )
    for lang in (td.SRC, td.TGT):
        utf8 = gold_dir / f"gold.{lang}"
        if not utf8.is_file():
            original = gold_dir / lang
            if not original.is_file():
                raise FileNotFoundError(
                    f"neither {utf8} nor {original} exists: put the RWTH files 'de', 'en' and "
                    f"'alignmentDeEn' in {gold_dir}"
                )
            _log(f"Converting {original} from {encoding} to UTF-8 -> {utf8}")  # = iconv
            utf8.write_text(original.read_text(encoding=encoding), encoding="utf-8")
        tokenized = td.lowercase(td.moses_tokenize(td.read_lines(utf8), lang))
        td.write_lines(gold_dir / f"tmp_gold.{lang}", tokenized)
        td.write_lines(gold_dir / f"gold_bpe.{lang}", td.apply_bpe(tokenized, codes))
        _log(f"Wrote {gold_dir / f'tmp_gold.{lang}'} and {gold_dir / f'gold_bpe.{lang}'}")
    _log(
        "Check gold_bpe.* by hand as the original README describes (apostrophe spacing, "
        "trailing empty lines) before running fairseq/map_alignments_to_bpe.py."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: data/iwslt14.tokenized.de-en in the repo)")
    parser.add_argument("--archive", type=Path, default=None,
                        help="an already downloaded de-en.tgz (or its extracted de-en/ folder); "
                             "skips the download")
    parser.add_argument("--download-dir", type=Path, default=DEFAULT_DOWNLOAD_DIR,
                        help="where de-en.tgz is downloaded to / reused from (default: data/orig)")
    parser.add_argument("--bpe-merges", type=int, default=10000,
                        help="number of joint BPE merge operations (default: 10000)")
    parser.add_argument("--drop-extra-meta-lines", action="store_true",
                        help="also drop <speaker>/<reviewer>/<translator>/<doc> lines (NOT done "
                             "by prepare-iwslt14.sh; changes the valid split if any exist)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for tokenizing the training data (default: 1)")
    parser.add_argument("--timeout", type=float, default=60.0,
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
            encode_gold(args.gold_dir, args.out / "code", args.gold_encoding)
            return 0
        if args.bpe_merges < 1:
            raise ValueError(f"--bpe-merges must be >= 1, got {args.bpe_merges}")
        archive = args.archive
        if archive is None:
            archive = td.download_iwslt14(args.download_dir, timeout=args.timeout, log=_log)
        td.prepare_iwslt14(archive, args.out, bpe_merges=args.bpe_merges,
                           drop_extra_meta=args.drop_extra_meta_lines, log=_log,
                           workers=args.workers)
    except (td.DownloadError, td.IWSLTFormatError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
