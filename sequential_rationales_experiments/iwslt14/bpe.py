"""Joint BPE as prepare-iwslt14.sh runs it: ``learn_bpe.py -s N`` then ``apply_bpe.py -c``.

Thin wrappers over subword-nmt (imported only when called) that keep its defaults, so the
codes and segmentations are the ones the script produces.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path


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
