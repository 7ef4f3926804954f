"""Synthetic data with known rationales.

Majority Class (Vafa et al., 2021, Sec. 8.1): each sentence is ``num_bits`` i.i.d. fair bits,
then ``=``, then the majority bit, e.g. ``0 1 1 0 ... 1 = 1``. For a model that predicts the
label from a subset of the bits, the true probability of label 1 is binomial in the hidden
bits (:func:`majority_class_true_probability`), and the minimal rationale of the label is
``=`` plus one bit of the label's value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

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


def write_majority_class_corpus(directory: Path, sizes: Iterable[tuple[str, int]],
                                seed: int = 0, num_bits: int = 17) -> None:
    """``DIRECTORY/SPLIT.tok`` for each ``(split, lines)`` of ``sizes``, drawn in that order
    from one generator seeded with ``seed``: the text ``fairseq-preprocess --only-source``
    reads."""
    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        lines = majority_class_sentences(n, num_bits, generator)
        (directory / f"{split}.tok").write_text("\n".join(lines) + "\n")


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


def majority_class_calibration(adapter, sequences: list[torch.Tensor], num_bits: int,
                               one_id: int, keep_probability: float = 0.5,
                               generator: torch.Generator | None = None,
                               first_bit_position: int = 0
                               ) -> tuple[list[float], list[float]]:
    """Model vs true ``p(label = 1)`` from random partial inputs (the paper's Figure 3).

    For each sequence (token ids of one sentence, the bits starting at
    ``first_bit_position``, then ``=``, then the label), each bit is kept with probability
    ``keep_probability``; every non-bit token before the label (``=``, a leading ``</s>``) is
    kept. Returns the model's probabilities and the binomial truth, one pair per sequence.
    """
    from sequential_rationales.search import RationalizationProblem, build_batch

    model_p, true_p = [], []
    for ids in sequences:
        label_position = first_bit_position + num_bits + 1
        keep = torch.rand(num_bits, generator=generator) < keep_probability
        bits = [first_bit_position + i for i in range(num_bits) if keep[i]]
        others = [p for p in range(label_position)
                  if not first_bit_position <= p < first_bit_position + num_bits]
        subset = tuple(sorted(bits + others))
        problem = RationalizationProblem(ids, targets=[label_position])
        with torch.inference_mode():
            lp = adapter.log_probs(build_batch(problem, [subset]).to(adapter.device))
        model_p.append(float(lp[0, one_id].exp()))
        visible = [int(ids[p] == one_id) for p in bits]
        true_p.append(majority_class_true_probability(visible, num_bits))
    return model_p, true_p
