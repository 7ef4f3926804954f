"""Synthetic data with known rationales.

Majority Class (Vafa et al., 2021, Sec. 8.1): each sentence is ``num_bits`` i.i.d. fair bits,
then ``=``, then the majority bit, e.g. ``0 1 1 0 ... 1 = 1``. For a model that predicts the
label from a subset of the bits, the true probability of label 1 is binomial in the hidden
bits (:func:`majority_class_true_probability`), and the minimal rationale of the label is
``=`` plus one bit of the label's value.
"""

from __future__ import annotations

import math

import torch

MAJORITY_SEPARATOR = "="


def majority_class_sentences(num_sentences: int, num_bits: int = 17,
                             generator: torch.Generator | None = None) -> list[str]:
    """``num_sentences`` lines of ``num_bits`` bits, ``=`` and the majority label."""
    if num_bits < 1 or num_bits % 2 == 0:
        raise ValueError(f"num_bits must be odd and positive (so a majority exists), got "
                         f"{num_bits}")
    bits = torch.randint(0, 2, (num_sentences, num_bits), generator=generator)
    labels = (bits.sum(1) * 2 > num_bits).long()
    return [" ".join(map(str, row)) + f" {MAJORITY_SEPARATOR} {label}"
            for row, label in zip(bits.tolist(), labels.tolist())]


def majority_class_true_probability(visible_bits: list[int], num_bits: int = 17) -> float:
    """P(label = 1 | the visible bits), the hidden bits being i.i.d. fair coins."""
    ones = sum(visible_bits)
    hidden = num_bits - len(visible_bits)
    need = num_bits // 2 + 1 - ones  # ones still needed among the hidden bits
    if need <= 0:
        return 1.0
    if need > hidden:
        return 0.0
    return sum(math.comb(hidden, k) for k in range(need, hidden + 1)) / 2 ** hidden
