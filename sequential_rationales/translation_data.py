"""IWSLT14 De-En data preparation and the paper's two translation datasets, in pure Python.

Three parts, each usable on its own:

1. **IWSLT14 preprocessing** that reproduces fairseq's
   ``examples/translation/prepare-iwslt14.sh`` without perl or a mosesdecoder checkout:

   * train: from ``train.tags.de-en.{de,en}`` drop every line that *contains* ``<url>``,
     ``<talkid>`` or ``<keywords>`` (``grep -v``), delete the ``<title>``/``</title>``/
     ``<description>``/``</description>`` tags but keep their text (``sed``), tokenize, clean
     (``clean-corpus-n.perl -ratio 1.5 ... 1 175``), lowercase;
   * valid = every 23rd line of the cleaned train data (``awk 'NR%23 == 0'``), train = the rest;
   * test = the ``<seg id=...>`` text of ``IWSLT14.TED.dev2010``, ``IWSLT14.TEDX.dev2012``,
     ``IWSLT14.TED.tst2010``, ``tst2011``, ``tst2012`` in that order (the order of the script's
     ``cat``), with ``’`` replaced by ``'`` before tokenizing, then lowercased (never cleaned);
   * joint BPE: ``learn_bpe`` with 10,000 merges on ``train.de`` followed by ``train.en``, then
     ``apply_bpe`` to every split.

   Tokenization uses ``sacremoses.MosesTokenizer`` with the defaults of
   ``tokenizer.perl -threads 8 -l LANG``: HTML escaping **on** (``'`` -> ``&apos;``, ``"`` ->
   ``&quot;``, ...; the fairseq IWSLT14 data famously contains ``&apos;``), aggressive hyphen
   splitting **off** (no ``-a``), no protected patterns, the language's non-breaking prefixes,
   and XML-looking lines tokenized like any other (``-x`` is not given). One rule is added to
   sacremoses: since mosesdecoder PR #204 (2018), which the script's ``git clone`` gets,
   tokenizer.perl always splits the period of the *last* word (``"So am I."`` ->
   ``"So am I ."``) while sacremoses keeps it after non-breaking prefixes. Whitespace-only
   lines become empty lines. Lowercasing is ``str.lower`` (``lowercase.perl`` is perl's
   ``lc``).

   The script keeps lines such as ``<speaker>...</speaker>`` or ``<reviewer ...>`` if an
   archive has them (it only filters url/talkid/keywords); ``drop_extra_meta=True`` also drops
   lines starting with ``<speaker``, ``<reviewer``, ``<translator``, ``<doc`` or ``</doc``
   (what fairseq's IWSLT17 scripts do). It is off by default because any extra dropped line
   shifts the every-23rd-line valid split away from the data the paper used.

2. **Distractors (Table 3)**: :func:`make_distractor_dataset` concatenates examples on both
   sides and records where the second sentence starts.

3. **Gold alignments (Table 4)**: :func:`read_word_alignments` parses the RWTH De-En format
   (``SENT: n`` blocks of ``S i j`` / ``P i j`` lines) and Pharaoh lines (``i-j`` sure,
   ``i?j`` / ``ipj`` possible), and :func:`map_word_alignments_to_bpe` maps word links to BPE
   pieces (``@@`` continuation marker).

Only the standard library is imported at module level; ``sacremoses``, ``subword_nmt`` and
``numpy`` are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BpeAlignment",
    "DistractorExample",
    "DownloadError",
    "IWSLT14_TEST_SETS",
    "IWSLT14_URLS",
    "IWSLTFormatError",
    "WordAlignment",
    "apply_bpe",
    "bpe_word_index",
    "clean_corpus",
    "download_iwslt14",
    "extract_xml_segments",
    "filter_train_tags_lines",
    "learn_joint_bpe",
    "lowercase",
    "make_distractor_dataset",
    "map_word_alignments_to_bpe",
    "moses_tokenize",
    "parse_pharaoh_alignment",
    "parse_rwth_alignments",
    "prepare_iwslt14",
    "read_fairseq_hypotheses",
    "read_iwslt14_archive",
    "read_lines",
    "read_word_alignments",
    "split_train_valid",
    "write_lines",
]

# fairseq's current prepare-iwslt14.sh downloads from its own mirror; the original script (and
# the 2021 checkout the paper used) pointed at WIT3, which is tried second.
IWSLT14_URLS: tuple[str, ...] = (
    "http://dl.fbaipublicfiles.com/fairseq/data/iwslt14/de-en.tgz",
    "https://wit3.fbk.eu/archive/2014-01/texts/de/en/de-en.tgz",
)
ARCHIVE_NAME = "de-en.tgz"
SRC, TGT, PAIR = "de", "en", "de-en"

# Order of the script's `cat` into test.$l.
IWSLT14_TEST_SETS: tuple[str, ...] = (
    "IWSLT14.TED.dev2010",
    "IWSLT14.TEDX.dev2012",
    "IWSLT14.TED.tst2010",
    "IWSLT14.TED.tst2011",
    "IWSLT14.TED.tst2012",
)

TRAIN_DROP_MARKERS = ("<url>", "<talkid>", "<keywords>")
TRAIN_STRIP_TAGS = ("<title>", "</title>", "<description>", "</description>")
EXTRA_META_PREFIXES = ("<speaker", "<reviewer", "<translator", "<doc", "</doc")

Log = Callable[[str], None]


class DownloadError(RuntimeError):
    """The IWSLT14 archive could not be downloaded from any mirror."""


class IWSLTFormatError(ValueError):
    """An input file does not have the expected IWSLT / alignment layout."""


# ---------------------------------------------------------------------------------------------
# Plain-text I/O that splits lines the way perl/awk do.


def read_lines(path: str | os.PathLike) -> list[str]:
    """Read a UTF-8 text file as lines without their ``\\n``.

    Lines are split on ``\\n`` only (like perl and awk), so a stray ``\\r`` or ``\\u2028``
    inside a sentence never creates an extra line and shifts the parallel alignment.
    """
    try:
        with open(path, encoding="utf-8", newline="\n") as handle:
            return [line[:-1] if line.endswith("\n") else line for line in handle]
    except UnicodeDecodeError as exc:
        raise IWSLTFormatError(f"{path} is not valid UTF-8 ({exc})") from exc


def _decode_lines(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise IWSLTFormatError(f"{name} is not valid UTF-8 ({exc})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start another line
    return lines


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write lines to a UTF-8 file, each followed by ``\\n`` (creating parent folders)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")


# ---------------------------------------------------------------------------------------------
# Moses-style steps.


def filter_train_tags_lines(lines: Iterable[str], drop_extra_meta: bool = False) -> list[str]:
    """Remove the TED meta data from a ``train.tags.*`` file as prepare-iwslt14.sh does.

    Drops lines containing ``<url>``, ``<talkid>`` or ``<keywords>`` anywhere (``grep -v``)
    and deletes the tags ``<title>``, ``</title>``, ``<description>``, ``</description>``
    while keeping the text between them (``sed s/<title>//g`` ...). With
    ``drop_extra_meta`` also drops lines that start (after leading whitespace) with
    ``<speaker``, ``<reviewer``, ``<translator``, ``<doc`` or ``</doc`` — not in the original
    script, see the module docstring.
    """
    kept = []
    for line in lines:
        if any(marker in line for marker in TRAIN_DROP_MARKERS):
            continue
        if drop_extra_meta and line.lstrip().startswith(EXTRA_META_PREFIXES):
            continue
        for tag in TRAIN_STRIP_TAGS:
            line = line.replace(tag, "")
        kept.append(line)
    return kept


# GNU sed's \s on these ASCII files; re.ASCII keeps Python from also eating e.g. U+00A0.
_SEG_OPEN = re.compile(r'<seg id="[0-9]*">\s*', re.ASCII)
_SEG_CLOSE = re.compile(r"\s*</seg>\s*", re.ASCII)


def extract_xml_segments(lines: Iterable[str]) -> list[str]:
    """Text of the ``<seg id="N">`` lines of an IWSLT dev/test ``.xml`` file.

    Mirrors ``grep '<seg id' | sed 's/<seg id="[0-9]*">\\s*//g' | sed 's/\\s*<\\/seg>\\s*//g'
    | sed "s/’/'/g"``: keeps only lines containing ``<seg id``, removes the tags with the
    whitespace next to them, and turns the typographic apostrophe ``’`` into ``'``.
    """
    segments = []
    for line in lines:
        if "<seg id" not in line:
            continue
        line = _SEG_OPEN.sub("", line)
        line = _SEG_CLOSE.sub("", line)
        segments.append(line.replace("\u2019", "'"))
    return segments


_FINAL_PERIOD = re.compile(r"^(\S+)\.$")
_CHUNK = 5000  # lines per task when tokenizing in several processes


def _moses_tokenizer(lang: str, split_final_period: bool):
    try:
        from sacremoses import MosesTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "moses_tokenize needs sacremoses: pip install sacremoses (see requirements.txt)"
        ) from exc
    if not split_final_period:
        return MosesTokenizer(lang=lang)

    class PerlMosesTokenizer(MosesTokenizer):
        """sacremoses plus tokenizer.perl's rule that the last word's final '.' is split."""

        def handles_nonbreaking_prefixes(self, text):
            tokens = text.split()
            match = _FINAL_PERIOD.match(tokens[-1]) if tokens else None
            if match:
                # mosesdecoder PR #204 (2018): "split last words independently as they are
                # unlikely to be non-breaking prefixes"; sacremoses keeps the old behaviour
                # on purpose (sacremoses issues #21/#97). The remaining tokens are handled
                # as before: the next token still starts with the same character.
                tokens[-1] = match.group(1) + " ."
            return super().handles_nonbreaking_prefixes(" ".join(tokens))

    return PerlMosesTokenizer(lang=lang)


def _tokenize_chunk(args: tuple[list[str], str, bool]) -> list[str]:
    lines, lang, split_final_period = args
    return moses_tokenize(lines, lang, split_final_period)


def moses_tokenize(
    lines: Iterable[str], lang: str, split_final_period: bool = True, workers: int = 1
) -> list[str]:
    """Tokenize like ``tokenizer.perl -threads 8 -l LANG`` (escaping on, no ``-a``, no ``-x``).

    Uses ``sacremoses.MosesTokenizer(lang).tokenize(..., escape=True,
    aggressive_dash_splits=False)``. Lines that are empty or whitespace-only give ``""``.
    ``split_final_period`` adds the rule of tokenizer.perl since late 2018 (what
    prepare-iwslt14.sh gets when it clones mosesdecoder): a period ending the last word is
    always split off, even after a non-breaking prefix (``"... the U.S."`` ->
    ``"... the U.S ."``). Set it to ``False`` for plain sacremoses / pre-2018 behaviour.
    ``workers > 1`` tokenizes chunks in that many processes (like ``-threads``); the output
    is identical.
    """
    if workers > 1:
        lines = list(lines)
        if len(lines) > 2 * _CHUNK:
            import multiprocessing

            chunks = [(lines[i:i + _CHUNK], lang, split_final_period)
                      for i in range(0, len(lines), _CHUNK)]
            # spawn, not fork: the parent may hold torch/OpenMP threads.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                return [line for part in pool.map(_tokenize_chunk, chunks) for line in part]
    tokenizer = _moses_tokenizer(lang, split_final_period)
    out = []
    for line in lines:
        if not line.strip():
            out.append("")
            continue
        out.append(
            tokenizer.tokenize(line, aggressive_dash_splits=False, return_str=True, escape=True)
        )
    return out


def lowercase(lines: Iterable[str]) -> list[str]:
    """Lowercase every line (``lowercase.perl`` is perl's ``lc``; ``str.lower`` here)."""
    return [line.lower() for line in lines]


_WS = re.compile(r"\s+")


def _normalize_space(line: str) -> str:
    line = _WS.sub(" ", line)
    if line.startswith(" "):
        line = line[1:]
    if line.endswith(" "):
        line = line[:-1]
    return line


def clean_corpus(
    source_lines: Sequence[str],
    target_lines: Sequence[str],
    ratio: float = 1.5,
    min_len: int = 1,
    max_len: int = 175,
    max_word_length: int = 1000,
) -> tuple[list[str], list[str], list[int]]:
    """Length-filter a parallel corpus as ``clean-corpus-n.perl -ratio R CORPUS L1 L2 OUT MIN MAX``.

    Per pair (in order): remove ``|`` unless the first pair contains one (factored corpus),
    collapse whitespace runs to one space and trim; drop the pair if either side is empty,
    has more than ``max_len`` or fewer than ``min_len`` space-separated tokens, if one
    side's length divided by the other's exceeds ``ratio`` (strictly; equal passes), or if a
    side has a word (non-space, non-``|`` run) longer than ``max_word_length`` characters.

    Returns ``(kept_source, kept_target, kept_indices)``; kept lines are the normalized ones
    (what the perl script prints) and indices are 0-based positions in the input.
    """
    if len(source_lines) != len(target_lines):
        raise IWSLTFormatError(
            f"clean_corpus needs parallel input, got {len(source_lines)} source lines and "
            f"{len(target_lines)} target lines"
        )
    long_word = re.compile(rf"[^\s|]{{{max_word_length + 1}}}")
    factored = bool(source_lines) and ("|" in source_lines[0] or "|" in target_lines[0])
    kept_src, kept_tgt, kept_idx = [], [], []
    for index, (src, tgt) in enumerate(zip(source_lines, target_lines)):
        if not factored:
            src, tgt = src.replace("|", ""), tgt.replace("|", "")
        src, tgt = _normalize_space(src), _normalize_space(tgt)
        if not src or not tgt:
            continue
        n_src, n_tgt = len(src.split(" ")), len(tgt.split(" "))
        if n_src > max_len or n_tgt > max_len or n_src < min_len or n_tgt < min_len:
            continue
        if n_tgt / n_src > ratio or n_src / n_tgt > ratio:
            continue
        if long_word.search(src) or long_word.search(tgt):
            continue
        kept_src.append(src)
        kept_tgt.append(tgt)
        kept_idx.append(index)
    return kept_src, kept_tgt, kept_idx


def split_train_valid(lines: Sequence[str], every: int = 23) -> tuple[list[str], list[str]]:
    """Split as ``awk 'NR%23 == 0'`` (valid) / ``awk 'NR%23 != 0'`` (train).

    Lines 23, 46, ... (1-based) go to valid, all others to train; returns ``(train, valid)``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    train = [line for number, line in enumerate(lines, 1) if number % every != 0]
    valid = [line for number, line in enumerate(lines, 1) if number % every == 0]
    return train, valid


def learn_joint_bpe(
    training_files: Sequence[str | os.PathLike],
    codes_path: str | os.PathLike,
    num_merges: int = 10000,
    min_frequency: int = 2,
) -> None:
    """Learn BPE codes on the concatenation of ``training_files`` (``learn_bpe.py -s N``).

    subword-nmt's defaults are kept (``min_frequency=2``), as the script passes only ``-s``.
    Learning stops early, as subword-nmt does, when no pair occurs twice.
    """
    from subword_nmt.learn_bpe import learn_bpe

    if num_merges < 1:
        raise ValueError(f"num_merges must be >= 1, got {num_merges}")

    def concatenated():
        for path in training_files:
            with open(path, encoding="utf-8", newline="\n") as handle:
                yield from handle

    Path(codes_path).parent.mkdir(parents=True, exist_ok=True)
    with open(codes_path, "w", encoding="utf-8") as out:
        learn_bpe(concatenated(), out, num_merges, min_frequency=min_frequency)


def apply_bpe(lines: Iterable[str], codes_path: str | os.PathLike) -> list[str]:
    """Segment lines with BPE codes (``apply_bpe.py -c CODES``: ``@@`` separator, all merges)."""
    from subword_nmt.apply_bpe import BPE

    with open(codes_path, encoding="utf-8") as handle:
        bpe = BPE(handle)
    return [bpe.process_line(line) for line in lines]


# ---------------------------------------------------------------------------------------------
# Archive download and reading.


def download_iwslt14(
    dest_dir: str | os.PathLike,
    urls: Sequence[str] = IWSLT14_URLS,
    timeout: float = 60.0,
    log: Log = print,
) -> Path:
    """Return ``dest_dir/de-en.tgz``, downloading it from the first mirror that works.

    An existing file is reused. A download that is not a gzip'd tar (e.g. an HTML error
    page) counts as a failure. Raises :class:`DownloadError` listing every URL tried and
    how to pass an already downloaded archive with ``--archive`` instead.
    """
    dest = Path(dest_dir) / ARCHIVE_NAME
    if dest.is_file():
        log(f"Using the already downloaded archive {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        log(f"Downloading IWSLT14 de-en from {url} ...")
        partial = dest.with_name(dest.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(
                partial, "wb"
            ) as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            failures.append(f"  {url}: {exc}")
            partial.unlink(missing_ok=True)
            continue
        if not tarfile.is_tarfile(partial):
            failures.append(f"  {url}: the downloaded file is not a tar archive")
            partial.unlink(missing_ok=True)
            continue
        partial.replace(dest)
        log(f"Data successfully downloaded to {dest} (md5 {_md5(dest)}).")
        return dest
    raise DownloadError(
        "Could not download the IWSLT14 de-en archive:\n"
        + "\n".join(failures)
        + f"\nIf this machine is offline, download {urls[0]} on a machine with internet "
        f"access and pass the file with --archive PATH/{ARCHIVE_NAME} (an extracted de-en/ "
        "folder works too)."
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _required_iwslt_files() -> list[str]:
    names = [f"train.tags.{PAIR}.{lang}" for lang in (SRC, TGT)]
    names += [f"{name}.{PAIR}.{lang}.xml" for name in IWSLT14_TEST_SETS for lang in (SRC, TGT)]
    return names


def read_iwslt14_archive(archive: str | os.PathLike) -> dict[str, list[str]]:
    """Read the files prepare-iwslt14.sh uses from ``de-en.tgz`` or an extracted folder.

    Files are found by base name anywhere in the archive/folder (the official archive has
    them under ``de-en/``): ``train.tags.de-en.{de,en}`` and the ten
    ``IWSLT14.TED*.de-en.{de,en}.xml`` files of :data:`IWSLT14_TEST_SETS`. Returns
    ``{base name: lines}``; raises :class:`IWSLTFormatError` naming any missing file.
    Nothing is extracted to disk, so a hostile member path cannot write anywhere.
    """
    archive = Path(archive)
    wanted = _required_iwslt_files()
    found: dict[str, list[str]] = {}
    if archive.is_dir():
        for path in sorted(archive.rglob("*")):
            if path.is_file() and path.name in wanted and path.name not in found:
                found[path.name] = _decode_lines(path.read_bytes(), str(path))
        available = "files under " + str(archive)
    elif archive.is_file():
        try:
            with tarfile.open(archive, "r:*") as tar:
                members = [m for m in tar.getmembers() if m.isfile()]
                for member in members:
                    base = member.name.rsplit("/", 1)[-1]
                    if base in wanted and base not in found:
                        data = tar.extractfile(member).read()
                        found[base] = _decode_lines(data, f"{archive}:{member.name}")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise IWSLTFormatError(f"{archive} is not a readable .tgz archive ({exc})") from exc
        available = f"members of {archive}"
    else:
        raise FileNotFoundError(f"IWSLT14 archive {archive} does not exist")
    missing = [name for name in wanted if name not in found]
    if missing:
        raise IWSLTFormatError(
            f"{archive} is not the IWSLT14 de-en archive: missing {', '.join(missing)} among "
            f"the {available}"
        )
    return found


# ---------------------------------------------------------------------------------------------
# The whole prepare-iwslt14.sh pipeline.


def prepare_iwslt14(
    archive: str | os.PathLike,
    out_dir: str | os.PathLike,
    bpe_merges: int = 10000,
    drop_extra_meta: bool = False,
    log: Log = print,
    workers: int = 1,
) -> dict[str, int]:
    """Build ``out_dir/{train,valid,test}.{de,en}`` and ``out_dir/code`` from the archive.

    Follows prepare-iwslt14.sh step by step (see the module docstring) and leaves the same
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


# ---------------------------------------------------------------------------------------------
# Distractors (Table 3).


@dataclass(frozen=True)
class DistractorExample:
    """One concatenated example: ``first`` then ``second`` on both sides.

    ``source_break`` / ``target_break`` are the numbers of whitespace tokens of the first
    sentence on each side, i.e. the 0-based position where the second sentence starts
    (tokens at positions ``>= break`` belong to ``second``). Positions count the tokens of
    the text as written (BPE pieces for BPE'd text), without fairseq's ``</s>``.
    """

    first_index: int
    second_index: int
    source: str
    target: str
    source_break: int
    target_break: int


def make_distractor_dataset(
    sources: Sequence[str],
    targets: Sequence[str],
    seed: int = 0,
    num_pairs: int | None = None,
) -> list[DistractorExample]:
    """Concatenate examples with a random *other* example on both sides.

    ``num_pairs=None``: every example ``i`` (in order) is followed by a partner ``j != i``
    drawn uniformly (``random.Random(seed)``): ``source_i + " " + source_j`` and
    ``target_i + " " + target_j``. A sentence may serve as a partner several times.

    ``num_pairs=K``: the original ``create_distractor_iwslt_dataset.py`` protocol (it used
    K=500): ``numpy.random.RandomState(seed).choice(n, 2K, replace=False)``; pair ``k`` is
    ``first = idx[k]``, ``second = idx[K + k]``, so no sentence is used twice. With seed 0
    and the same test set and translations this reproduces the original 500 pairs.

    Sentences are whitespace-tokenized and re-joined with single spaces. Raises
    ``ValueError`` when the two sides differ in length, there are fewer than two examples, or
    ``2K`` exceeds the number of examples.
    """
    if len(sources) != len(targets):
        raise ValueError(
            f"sources and targets must be parallel: {len(sources)} vs {len(targets)} lines"
        )
    n = len(sources)
    if n < 2:
        raise ValueError(f"need at least two examples to build distractors, got {n}")
    if num_pairs is None:
        import random

        rng = random.Random(seed)
        firsts = list(range(n))
        seconds = []
        for i in firsts:
            j = rng.randrange(n - 1)
            seconds.append(j + 1 if j >= i else j)  # skip i itself, uniform over the others
    else:
        if num_pairs < 1 or 2 * num_pairs > n:
            raise ValueError(
                f"num_pairs={num_pairs} needs 2*num_pairs distinct examples but there are {n}"
            )
        import numpy as np

        picked = np.random.RandomState(seed).choice(n, 2 * num_pairs, replace=False)
        firsts = [int(x) for x in picked[:num_pairs]]
        seconds = [int(x) for x in picked[num_pairs:]]
    examples = []
    for i, j in zip(firsts, seconds):
        src_i, src_j = sources[i].split(), sources[j].split()
        tgt_i, tgt_j = targets[i].split(), targets[j].split()
        examples.append(
            DistractorExample(
                first_index=i,
                second_index=j,
                source=" ".join(src_i + src_j),
                target=" ".join(tgt_i + tgt_j),
                source_break=len(src_i),
                target_break=len(tgt_i),
            )
        )
    return examples


def read_fairseq_hypotheses(lines: Iterable[str]) -> list[str]:
    """Hypotheses of a ``fairseq-generate`` log, ordered by sentence id.

    Equivalent to ``grep 'H-' | sed 's/^..//' | sort -n | cut -f3`` for ``--nbest 1``:
    takes lines ``H-<id>\\t<score>\\t<text>``. Raises ``ValueError`` on a repeated id (run
    with ``--nbest 1``) or when ids are not exactly ``0..n-1``.
    """
    hypotheses: dict[int, str] = {}
    for line in lines:
        if not line.startswith("H-"):
            continue
        fields = line.rstrip("\n").split("\t", 2)
        try:
            sentence_id = int(fields[0][2:])
        except ValueError as exc:
            raise ValueError(f"malformed fairseq-generate line: {line!r}") from exc
        if sentence_id in hypotheses:
            raise ValueError(
                f"hypothesis id {sentence_id} appears twice; run fairseq-generate with --nbest 1"
            )
        hypotheses[sentence_id] = fields[2] if len(fields) > 2 else ""
    if sorted(hypotheses) != list(range(len(hypotheses))):
        missing = sorted(set(range(max(hypotheses, default=-1) + 1)) - set(hypotheses))
        raise ValueError(f"fairseq-generate output lacks hypotheses for ids {missing[:10]}")
    return [hypotheses[i] for i in range(len(hypotheses))]


# ---------------------------------------------------------------------------------------------
# Gold word alignments (Table 4).


@dataclass(frozen=True)
class WordAlignment:
    """Word-level gold links of one sentence pair as 0-based ``(source, target)`` pairs.

    ``possible`` always contains ``sure`` (Och & Ney's S ⊆ P); the links labelled possible
    only are ``possible - sure``.
    """

    sure: frozenset[tuple[int, int]]
    possible: frozenset[tuple[int, int]]
    sentence_id: str | None = None


@dataclass(frozen=True)
class BpeAlignment:
    """BPE-piece-level links of one sentence pair (``possible`` contains ``sure``).

    ``source_word_index[p]`` / ``target_word_index[p]`` give the word of BPE piece ``p``.
    Positions are 0-based over the pieces of the line, without fairseq's ``</s>``.
    """

    sure: frozenset[tuple[int, int]]
    possible: frozenset[tuple[int, int]]
    source_word_index: tuple[int, ...]
    target_word_index: tuple[int, ...]


_PHARAOH_LINK = re.compile(r"^(\d+)([-?pP])(\d+)$")


def parse_pharaoh_alignment(line: str, one_based: bool = False) -> WordAlignment:
    """Parse one Pharaoh-format line: ``i-j`` sure links, ``i?j`` or ``ipj`` possible links.

    ``i`` indexes source words and ``j`` target words, 0-based unless ``one_based``. An
    empty line is a sentence without links.
    """
    sure, possible = set(), set()
    shift = 1 if one_based else 0
    for token in line.split():
        match = _PHARAOH_LINK.match(token)
        if match is None:
            raise IWSLTFormatError(
                f"bad alignment link {token!r} in {line!r}: expected i-j (sure) or i?j / ipj "
                "(possible)"
            )
        link = (int(match.group(1)) - shift, int(match.group(3)) - shift)
        if min(link) < 0:
            raise IWSLTFormatError(f"negative position in link {token!r} (one_based={one_based})")
        possible.add(link)
        if match.group(2) == "-":
            sure.add(link)
    return WordAlignment(frozenset(sure), frozenset(possible))


def parse_rwth_alignments(lines: Iterable[str], one_based: bool = False) -> list[WordAlignment]:
    """Parse the RWTH De-En gold alignment file (``alignmentDeEn``).

    The file is a sequence of blocks ``SENT: <id>`` followed by lines ``S <src> <tgt>`` (sure)
    or ``P <src> <tgt>`` (possible), German (source) position first, 0-based as the original
    ``evaluate_alignment_rationales.py`` reads them (``one_based`` shifts by one). Blank
    lines are ignored; a block without links is a sentence without links.
    """
    alignments: list[WordAlignment] = []
    current: tuple[str, set, set] | None = None
    shift = 1 if one_based else 0

    def flush():
        if current is not None:
            alignments.append(
                WordAlignment(frozenset(current[1]), frozenset(current[1] | current[2]),
                              current[0])
            )

    for number, raw in enumerate(lines, 1):
        fields = raw.split()
        if not fields:
            continue
        if fields[0].startswith("SENT"):
            flush()
            rest = " ".join(fields)[4:].lstrip(":").strip()
            current = (rest, set(), set())
            continue
        if current is None:
            raise IWSLTFormatError(f"line {number}: link {raw.strip()!r} before any 'SENT:' line")
        if len(fields) != 3 or fields[0] not in ("S", "P"):
            raise IWSLTFormatError(
                f"line {number}: expected 'S i j' or 'P i j', got {raw.strip()!r}"
            )
        try:
            link = (int(fields[1]) - shift, int(fields[2]) - shift)
        except ValueError as exc:
            raise IWSLTFormatError(f"line {number}: non-integer position in {raw!r}") from exc
        if min(link) < 0:
            raise IWSLTFormatError(f"line {number}: negative position in {raw.strip()!r}")
        (current[1] if fields[0] == "S" else current[2]).add(link)
    flush()
    return alignments


def read_word_alignments(
    path: str | os.PathLike, fmt: str = "auto", one_based: bool = False
) -> list[WordAlignment]:
    """Read a gold alignment file: ``fmt`` is ``"rwth"``, ``"pharaoh"`` or ``"auto"``.

    ``auto`` picks RWTH when a non-blank line starts with ``SENT``, else Pharaoh (one line per
    sentence; trailing blank lines at the end of the file are ignored).
    """
    lines = read_lines(path)
    if fmt == "auto":
        fmt = "rwth" if any(line.lstrip().startswith("SENT") for line in lines) else "pharaoh"
    if fmt == "rwth":
        return parse_rwth_alignments(lines, one_based)
    if fmt == "pharaoh":
        while lines and not lines[-1].strip():
            lines.pop()
        return [parse_pharaoh_alignment(line, one_based) for line in lines]
    raise ValueError(f"unknown alignment format {fmt!r}; use 'rwth', 'pharaoh' or 'auto'")


def bpe_word_index(bpe_line: str, separator: str = "@@") -> list[int]:
    """Word index of every BPE piece: a piece ending in ``@@`` continues into the next piece.

    ``"das hau@@ s ist"`` -> ``[0, 1, 1, 2]``.
    """
    indices = []
    word = 0
    for piece in bpe_line.split():
        indices.append(word)
        if not piece.endswith(separator):
            word += 1
    return indices


def map_word_alignments_to_bpe(
    bpe_source_line: str,
    bpe_target_line: str,
    alignments: WordAlignment | str | Iterable[tuple[int, int]],
) -> BpeAlignment:
    """Map word-level links to BPE pieces.

    A word link ``(s, t)`` becomes links between every piece of source word ``s`` and every
    piece of target word ``t``. ``alignments`` is a :class:`WordAlignment`, a Pharaoh line
    (``"0-0 1?2"``) or an iterable of ``(s, t)`` pairs (taken as sure). Raises
    :class:`IWSLTFormatError` when a link names a word the BPE line does not have (the gold
    text and the BPE'd text disagree on the words).
    """
    if isinstance(alignments, str):
        alignments = parse_pharaoh_alignment(alignments)
    elif not isinstance(alignments, WordAlignment):
        links = frozenset((int(s), int(t)) for s, t in alignments)
        alignments = WordAlignment(links, links)
    src_index = bpe_word_index(bpe_source_line)
    tgt_index = bpe_word_index(bpe_target_line)
    src_pieces: dict[int, list[int]] = {}
    tgt_pieces: dict[int, list[int]] = {}
    for piece, word in enumerate(src_index):
        src_pieces.setdefault(word, []).append(piece)
    for piece, word in enumerate(tgt_index):
        tgt_pieces.setdefault(word, []).append(piece)

    def expand(links):
        out = set()
        for s, t in links:
            if s not in src_pieces or t not in tgt_pieces:
                raise IWSLTFormatError(
                    f"link {s}-{t} is out of range: the source has {len(src_pieces)} words and "
                    f"the target {len(tgt_pieces)} words after joining BPE pieces "
                    f"(source {bpe_source_line!r}, target {bpe_target_line!r})"
                )
            out.update((ps, pt) for ps in src_pieces[s] for pt in tgt_pieces[t])
        return frozenset(out)

    return BpeAlignment(
        sure=expand(alignments.sure),
        possible=expand(alignments.possible | alignments.sure),
        source_word_index=tuple(src_index),
        target_word_index=tuple(tgt_index),
    )

