"""Distractor test sets (the paper's Table 3): two examples concatenated on both sides.

A faithful rationale of a token of one sentence should not reach into the other sentence, so
each example records where its second sentence starts on both sides.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sequential_rationales.validation import InputError

from .iwslt14.lines import write_lines


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
        raise InputError(
            f"sources and targets must be parallel: {len(sources)} vs {len(targets)} lines"
        )
    n = len(sources)
    if n < 2:
        raise InputError(f"need at least two examples to build distractors, got {n}")
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
            raise InputError(
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


def write_distractors_jsonl(examples: Iterable[DistractorExample],
                            path: str | os.PathLike) -> None:
    """``distractors.jsonl``: per example ``{"index", "first_index", "second_index",
    "source_break", "target_break"}``, what the Table 3 evaluation reads."""
    write_lines(path, (
        json.dumps({"index": k, "first_index": e.first_index, "second_index": e.second_index,
                    "source_break": e.source_break, "target_break": e.target_break})
        for k, e in enumerate(examples)))
