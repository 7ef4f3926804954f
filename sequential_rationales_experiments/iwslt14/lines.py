"""Plain-text lines as perl/awk see them, and the two XML/tag filters of prepare-iwslt14.sh.

Lines are split on ``\\n`` only: a stray ``\\r`` or ``\\u2028`` inside a sentence must never
create an extra line, or the two sides of a parallel corpus drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

TRAIN_DROP_MARKERS = ("<url>", "<talkid>", "<keywords>")
TRAIN_STRIP_TAGS = ("<title>", "</title>", "<description>", "</description>")
EXTRA_META_PREFIXES = ("<speaker", "<reviewer", "<translator", "<doc", "</doc")


class IWSLTFormatError(ValueError):
    """An input file does not have the expected IWSLT / alignment layout."""


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


def decode_lines(data: bytes, name: str) -> list[str]:
    """The lines of UTF-8 ``data`` (a file read from an archive), split as :func:`read_lines`."""
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


def filter_train_tags_lines(lines: Iterable[str], drop_extra_meta: bool = False) -> list[str]:
    """Remove the TED meta data from a ``train.tags.*`` file as prepare-iwslt14.sh does.

    Drops lines containing ``<url>``, ``<talkid>`` or ``<keywords>`` anywhere (``grep -v``)
    and deletes the tags ``<title>``, ``</title>``, ``<description>``, ``</description>``
    while keeping the text between them (``sed s/<title>//g`` ...). With
    ``drop_extra_meta`` also drops lines that start (after leading whitespace) with
    ``<speaker``, ``<reviewer``, ``<translator``, ``<doc`` or ``</doc`` — not in the original
    script, see :mod:`sequential_rationales_experiments.iwslt14`.
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
