"""Majority Class data and its true label probabilities."""

from __future__ import annotations

import math

import pytest
import torch

from sequential_rationales_experiments.majority_class import (
    majority_class_sentences,
    majority_class_true_probability,
)


def test_sentences_have_bits_separator_and_majority_label():
    lines = majority_class_sentences(200, 17, torch.Generator().manual_seed(0))
    for line in lines:
        tokens = line.split()
        assert len(tokens) == 19 and tokens[17] == "="
        bits = [int(b) for b in tokens[:17]]
        assert tokens[18] == str(int(sum(bits) >= 9))
    again = majority_class_sentences(200, 17, torch.Generator().manual_seed(0))
    assert lines == again
    with pytest.raises(ValueError, match="odd"):
        majority_class_sentences(3, 4)


def test_true_probability_hand_computed():
    # Nothing visible: a fair majority of 17 coins is 1 with probability 1/2.
    assert majority_class_true_probability([], 17) == pytest.approx(0.5)
    # One visible 1: need >= 8 ones among 16 hidden coins.
    expected = sum(math.comb(16, k) for k in range(8, 17)) / 2 ** 16
    assert majority_class_true_probability([1], 17) == pytest.approx(expected)
    assert expected == pytest.approx(0.5982, abs=1e-4)
    # Nine visible ones decide the label; nine visible zeros too.
    assert majority_class_true_probability([1] * 9, 17) == 1.0
    assert majority_class_true_probability([0] * 9, 17) == 0.0
    # 3 bits: visible [1, 0] leaves the last coin to decide.
    assert majority_class_true_probability([1, 0], 3) == pytest.approx(0.5)
