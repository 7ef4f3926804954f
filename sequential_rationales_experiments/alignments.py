"""Gold word alignments (the paper's Table 4) and their mapping to BPE pieces.

:func:`read_word_alignments` parses the RWTH De-En format (``SENT: n`` blocks of ``S i j`` /
``P i j`` lines) and Pharaoh lines (``i-j`` sure, ``i?j`` / ``ipj`` possible);
:func:`map_word_alignments_to_bpe` maps word links to BPE pieces (``@@`` continuation
marker), since the models rationalize pieces, not words.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sequential_rationales.validation import InputError

from .iwslt14.lines import IWSLTFormatError, read_lines


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
    raise InputError(f"unknown alignment format {fmt!r}; use 'rwth', 'pharaoh' or 'auto'")


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
