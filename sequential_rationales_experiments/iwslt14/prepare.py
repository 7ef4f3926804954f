"""The whole prepare-iwslt14.sh pipeline, and the seed README's encoding of the gold text.

Each step lives in its own module (:mod:`.lines`, :mod:`.moses`, :mod:`.bpe`, :mod:`.archive`);
this one chains them in the script's order and leaves the script's intermediate files, so a
run can be compared with the original file by file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .archive import IWSLT14_TEST_SETS, PAIR, SRC, TGT, Log, read_iwslt14_archive
from .bpe import apply_bpe, learn_joint_bpe
from .lines import (
    IWSLTFormatError,
    extract_xml_segments,
    filter_train_tags_lines,
    read_lines,
    write_lines,
)
from .moses import clean_corpus, lowercase, moses_tokenize, split_train_valid


def prepare_iwslt14(
    archive: str | os.PathLike,
    out_dir: str | os.PathLike,
    bpe_merges: int = 10000,
    drop_extra_meta: bool = False,
    log: Log = print,
    workers: int = 1,
) -> dict[str, int]:
    """Build ``out_dir/{train,valid,test}.{de,en}`` and ``out_dir/code`` from the archive.

    Follows prepare-iwslt14.sh step by step (see the package docstring) and leaves the same
    intermediate files in ``out_dir/tmp`` (``train.tags.de-en.tok.*``, ``*.clean.*``,
    ``train.tags.de-en.*``, the tokenized dev/test sets, ``train.*``, ``valid.*``,
    ``test.*``, ``train.en-de``). The outputs are ready for ``fairseq-preprocess
    --source-lang de --target-lang en``. ``workers`` processes tokenize the training data.
    Returns the number of lines per split and the counts before/after cleaning.
    """
    out = Path(out_dir)
    tmp = out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)

    log(f"Reading {archive} ...")
    files = read_iwslt14_archive(archive)

    log("pre-processing train data...")
    tokenized = {}
    for lang in (SRC, TGT):
        raw = filter_train_tags_lines(files[f"train.tags.{PAIR}.{lang}"], drop_extra_meta)
        tokenized[lang] = moses_tokenize(raw, lang, workers=workers)
        write_lines(tmp / f"train.tags.{PAIR}.tok.{lang}", tokenized[lang])
        log(f"  tokenized {len(raw)} {lang} lines")
    if len(tokenized[SRC]) != len(tokenized[TGT]):
        raise IWSLTFormatError(
            f"after removing meta lines train.tags.{PAIR}.{SRC} has {len(tokenized[SRC])} lines "
            f"but train.tags.{PAIR}.{TGT} has {len(tokenized[TGT])}; the files are not parallel"
        )
    clean_src, clean_tgt, _ = clean_corpus(tokenized[SRC], tokenized[TGT], 1.5, 1, 175)
    log(f"  clean-corpus (ratio 1.5, 1-175 tokens): {len(tokenized[SRC])} -> {len(clean_src)}")
    cleaned = {SRC: clean_src, TGT: clean_tgt}
    train_tags = {}
    for lang in (SRC, TGT):
        write_lines(tmp / f"train.tags.{PAIR}.clean.{lang}", cleaned[lang])
        train_tags[lang] = lowercase(cleaned[lang])
        write_lines(tmp / f"train.tags.{PAIR}.{lang}", train_tags[lang])

    log("pre-processing valid/test data...")
    test = {SRC: [], TGT: []}
    for name in IWSLT14_TEST_SETS:
        for lang in (SRC, TGT):
            segments = extract_xml_segments(files[f"{name}.{PAIR}.{lang}.xml"])
            processed = lowercase(moses_tokenize(segments, lang))
            write_lines(tmp / f"{name}.{PAIR}.{lang}", processed)
            test[lang].extend(processed)
        log(f"  {name}: {len(segments)} segments")
        if len(test[SRC]) != len(test[TGT]):
            raise IWSLTFormatError(
                f"{name}.{PAIR}.{SRC}.xml and {name}.{PAIR}.{TGT}.xml have different numbers "
                "of <seg> lines"
            )

    log("creating train, valid, test...")
    splits = {}
    for lang in (SRC, TGT):
        train, valid = split_train_valid(train_tags[lang], 23)
        splits[("train", lang)], splits[("valid", lang)] = train, valid
        splits[("test", lang)] = test[lang]
        for split in ("train", "valid", "test"):
            write_lines(tmp / f"{split}.{lang}", splits[(split, lang)])

    joint = tmp / f"train.{TGT}-{SRC}"  # the script's $TRAIN: train.de then train.en
    with open(joint, "w", encoding="utf-8", newline="\n") as handle:
        for lang in (SRC, TGT):
            for line in splits[("train", lang)]:
                handle.write(line + "\n")
    codes = out / "code"
    log(f"learn_bpe.py on {joint} ({bpe_merges} merges)...")
    learn_joint_bpe([joint], codes, bpe_merges)

    for lang in (SRC, TGT):
        for split in ("train", "valid", "test"):
            log(f"apply_bpe.py to {split}.{lang}...")
            write_lines(out / f"{split}.{lang}", apply_bpe(splits[(split, lang)], codes))

    counts = {
        "train_tags": len(tokenized[SRC]),
        "cleaned": len(clean_src),
        "train": len(splits[("train", SRC)]),
        "valid": len(splits[("valid", SRC)]),
        "test": len(test[SRC]),
    }
    log(
        f"Done: train {counts['train']}, valid {counts['valid']}, test {counts['test']} "
        f"sentence pairs in {out}"
    )
    return counts


def encode_gold(gold_dir: str | os.PathLike, codes: str | os.PathLike, encoding: str = "latin-1",
                log: Log = print) -> None:
    """Tokenize, lowercase and BPE the RWTH gold text as the seed README's perl steps do.

    ``gold_dir/de`` and ``gold_dir/en`` (in ``encoding``) are converted to UTF-8
    ``gold.{de,en}`` unless those exist (``iconv``), then written tokenized and lowercased to
    ``tmp_gold.*`` and BPE'd with ``codes`` to ``gold_bpe.*``.
    """
    gold_dir, codes = Path(gold_dir), Path(codes)
    if not codes.is_file():
        raise FileNotFoundError(
            f"BPE codes {codes} not found: build the dataset first (without --gold-dir) or "
            "point --out at the folder holding 'code'"
        )
    for lang in (SRC, TGT):
        utf8 = gold_dir / f"gold.{lang}"
        if not utf8.is_file():
            original = gold_dir / lang
            if not original.is_file():
                raise FileNotFoundError(
                    f"neither {utf8} nor {original} exists: put the RWTH files 'de', 'en' and "
                    f"'alignmentDeEn' in {gold_dir}"
                )
            log(f"Converting {original} from {encoding} to UTF-8 -> {utf8}")  # = iconv
            utf8.write_text(original.read_text(encoding=encoding), encoding="utf-8")
        tokenized = lowercase(moses_tokenize(read_lines(utf8), lang))
        write_lines(gold_dir / f"tmp_gold.{lang}", tokenized)
        write_lines(gold_dir / f"gold_bpe.{lang}", apply_bpe(tokenized, codes))
        log(f"Wrote {gold_dir / f'tmp_gold.{lang}'} and {gold_dir / f'gold_bpe.{lang}'}")
    log(
        "Check gold_bpe.* by hand as the original README describes (apostrophe spacing, "
        "trailing empty lines) before running fairseq/map_alignments_to_bpe.py."
    )
