"""The Moses steps of prepare-iwslt14.sh in Python: tokenize, lowercase, clean, split.

``tokenizer.perl``, ``lowercase.perl`` and ``clean-corpus-n.perl`` are reproduced rule for rule
(sacremoses plus the one rule it lacks), so the data match the paper's without perl or a
mosesdecoder checkout. ``sacremoses`` is imported only when tokenizing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from .lines import IWSLTFormatError

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
