"""Word-dropout masks: distributions, visibility rules, determinism, bad settings."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import WordDropout, self_attention_mask, word_dropout_keep_mask


def test_uniform_length_kept_count_is_uniform():
    t, n = 7, 40_000
    valid = torch.ones(n, t, dtype=torch.bool)
    keep = word_dropout_keep_mask(valid, "uniform_length", torch.Generator().manual_seed(0))
    counts = torch.bincount(keep.sum(-1), minlength=t + 1).float() / n
    # Uniform on 0..T: each count has probability 1/8; 4 standard errors ~ 0.0066.
    assert counts.shape[0] == t + 1
    assert torch.allclose(counts, torch.full((t + 1,), 1 / (t + 1)), atol=0.007)
    # Each position equally likely to be kept (probability 1/2 overall).
    assert torch.allclose(keep.float().mean(0), torch.full((t,), 0.5), atol=0.012)


def test_uniform_length_respects_each_examples_length():
    valid = torch.zeros(20_000, 6, dtype=torch.bool)
    valid[:, :3] = True  # every example has 3 real tokens and 3 padding slots
    keep = word_dropout_keep_mask(valid, "uniform_length", torch.Generator().manual_seed(1))
    assert not keep[:, 3:].any()
    counts = torch.bincount(keep.sum(-1), minlength=4).float() / keep.shape[0]
    assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.015)


@pytest.mark.parametrize("lengths", [[4], [10], [3, 12]])
def test_inverse_length_keep_rate_is_one_over_length(lengths):
    n, width = 30_000, max(lengths)
    valid = torch.zeros(n * len(lengths), width, dtype=torch.bool)
    for i, length in enumerate(lengths):
        valid[i * n:(i + 1) * n, :length] = True
    keep = word_dropout_keep_mask(valid, "inverse_length", torch.Generator().manual_seed(2))
    for i, length in enumerate(lengths):
        rows = keep[i * n:(i + 1) * n]
        assert rows[:, :length].float().mean().item() == pytest.approx(1 / length, abs=0.006)
        assert not rows[:, length:].any()


def test_per_head_draws_are_independent():
    valid = torch.ones(4000, 8, dtype=torch.bool)
    keep = word_dropout_keep_mask(valid, "inverse_length", torch.Generator().manual_seed(3),
                                  num_heads=4)
    assert keep.shape == (4000, 4, 8)
    same = (keep[:, 0] == keep[:, 1]).all(-1).float().mean().item()
    assert same < 0.5  # shared draws would make this exactly 1
    # Per-head agreement matches independence: P(equal position) = p^2 + (1-p)^2.
    p = 1 / 8
    agree = (keep[:, 0] == keep[:, 1]).float().mean().item()
    assert agree == pytest.approx(p * p + (1 - p) ** 2, abs=0.01)


@pytest.mark.parametrize("kind", ["uniform_length", "inverse_length"])
@pytest.mark.parametrize("heads", [None, 3])
def test_attention_mask_is_causal_and_self_is_always_visible(kind, heads):
    valid = torch.ones(64, 9, dtype=torch.bool)
    keep = word_dropout_keep_mask(valid, kind, torch.Generator().manual_seed(4), heads)
    mask = self_attention_mask(keep, causal=True)
    t = 9
    assert mask.shape == keep.shape[:-1] + (t, t)
    assert mask.diagonal(dim1=-2, dim2=-1).all()
    assert not (mask & ~torch.ones(t, t, dtype=torch.bool).tril()).any()
    off_diagonal = ~torch.eye(t, dtype=torch.bool)
    lower = torch.ones(t, t, dtype=torch.bool).tril() & off_diagonal
    # Below the diagonal, query i sees key j exactly when j was kept.
    expected = keep[..., None, :].expand_as(mask) & lower
    assert torch.equal(mask & lower, expected)


def test_always_keep_positions_survive():
    valid = torch.ones(500, 5, dtype=torch.bool)
    always = torch.zeros(500, 5, dtype=torch.bool)
    always[:, -1] = True
    keep = word_dropout_keep_mask(valid, "inverse_length", torch.Generator().manual_seed(5),
                                  num_heads=2, always_keep=always)
    assert keep[..., -1].all()


def test_same_seed_same_masks_and_mixture_rate():
    valid = torch.ones(8, 6, dtype=torch.bool)
    wd = WordDropout(mixture=0.5, kind="uniform_length")
    a = [wd.sample_keep(valid, 2, torch.Generator().manual_seed(7)) for _ in range(3)]
    b = [wd.sample_keep(valid, 2, torch.Generator().manual_seed(7)) for _ in range(3)]
    for x, y in zip(a, b):
        assert (x is None and y is None) or torch.equal(x, y)
    gen = torch.Generator().manual_seed(8)
    rate = sum(wd.apply_to_batch(gen) for _ in range(4000)) / 4000
    assert rate == pytest.approx(0.5, abs=0.03)
    assert WordDropout(0.0).sample_keep(valid, 2) is None
    assert WordDropout(1.0).sample_keep(valid, 2) is not None


def test_default_head_behaviour_follows_the_paper():
    assert WordDropout(1.0, "inverse_length").independent_heads
    assert not WordDropout(1.0, "uniform_length").independent_heads
    valid = torch.ones(2, 5, dtype=torch.bool)
    assert WordDropout(1.0, "inverse_length").sample_keep(valid, 4).shape == (2, 4, 5)
    assert WordDropout(1.0, "inverse_length", per_head=False).sample_keep(valid, 4).shape == (2, 5)


@pytest.mark.parametrize("mixture", [-0.1, 1.5, "0.5", True])
def test_mixture_outside_unit_interval_is_rejected(mixture):
    with pytest.raises(ValueError, match="word_dropout_mixture"):
        WordDropout(mixture=mixture)


def test_unknown_type_is_rejected():
    with pytest.raises(ValueError, match="word_dropout_type.*bogus"):
        WordDropout(0.5, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        word_dropout_keep_mask(torch.ones(1, 3, dtype=torch.bool), "bogus")
