"""Word dropout for compatibility training (Vafa et al., 2021, Sec. 5).

Tokens are dropped with attention masks, not deleted: every query still attends to itself and
to the kept keys (and only to earlier ones in a decoder), and every position is still
predicted. With probability `mixture` a batch is word-dropped, otherwise trained as usual.

* `uniform_length`: the number of kept tokens is uniform on `0..T` and that many tokens are
  chosen uniformly at random. Recommended for language models.
* `inverse_length`: each token is kept independently with probability `1/T`. Recommended for
  translation.

`T` is each example's own (unpadded) length. With `per_head=True` every attention head draws
its own keep-set; the paper's code did so for `inverse_length` (its default here), which the
authors found helpful at large drop rates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .validation import check_choice, check_probability

WORD_DROPOUT_TYPES = ("uniform_length", "inverse_length")


def word_dropout_keep_mask(valid: Tensor, kind: str, generator: torch.Generator | None = None,
                           num_heads: int | None = None, always_keep: Tensor | None = None
                           ) -> Tensor:
    """Sample which key positions stay visible.

    Args:
        valid: `[B, T]` bool, `True` on real (non-padding) tokens.
        kind: `"uniform_length"` or `"inverse_length"`.
        generator: source of randomness (on `valid`'s device); `None`: the global one.
        num_heads: draw an independent keep-set per head (output `[B, H, T]`); `None` (or 0):
            one keep-set per example.
        always_keep: `[B, T]` bool, positions that are never dropped (e.g. a source `</s>`, so
            a cross-attention query always has a key); padding stays dropped.

    Returns:
        Bool keep mask `[B, T]`, or `[B, H, T]` with `num_heads`; padding is never kept.

    Raises:
        ValueError: an unknown `kind`, or `valid` is not a 2-D bool tensor.
    """
    check_choice(kind, "word-dropout type", WORD_DROPOUT_TYPES)
    if valid.dim() != 2 or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a [batch, seq_len] bool tensor, got {valid.dtype} "
                         f"{list(valid.shape)}")
    shape = (valid.shape[0],) + ((num_heads,) if num_heads else ()) + (valid.shape[1],)
    expand = (lambda x: x[:, None]) if num_heads else (lambda x: x)
    valid_e = expand(valid)
    lengths = expand(valid.sum(-1, keepdim=True))  # [B, (1,) 1]
    u = torch.rand(shape, generator=generator, device=valid.device)
    if kind == "inverse_length":
        keep = u < 1.0 / lengths.clamp(min=1)
    else:
        # Kept count k ~ Uniform{0..T}; keep the k valid tokens with the smallest random keys.
        k = torch.floor(torch.rand(lengths.shape, generator=generator, device=valid.device)
                        * (lengths + 1))
        ranks = u.masked_fill(~valid_e, 2.0).argsort(-1).argsort(-1)
        keep = ranks < k
    keep = keep & valid_e
    if always_keep is not None:
        keep = keep | (expand(always_keep) & valid_e)
    return keep


def self_attention_mask(keep: Tensor, causal: bool = True, window: int | None = None,
                        positions: Tensor | None = None) -> Tensor:
    """Build the self-attention mask of a word-dropped batch.

    Query `i` sees key `j` when `j` is kept or `j == i`, and `j <= i` if `causal`.

    Args:
        keep: `[B, T]` or `[B, H, T]` bool keep mask (see
            [`word_dropout_keep_mask`][sequential_rationales.word_dropout.word_dropout_keep_mask]).
        causal: only let a query see keys at or before it (a decoder).
        window: sliding-window attention: query `i` also needs `pos(i) - pos(j) < window`, so
            a window counts positions, never kept tokens; `None`: no window.
        positions: `[B, T]` the tokens' original positions, on which `window` is measured;
            `None`: their columns.

    Returns:
        Bool mask `[B, T, T]` or `[B, H, T, T]` (query, then key), `True` where a query may
            attend.
    """
    t = keep.shape[-1]
    eye = torch.eye(t, dtype=torch.bool, device=keep.device)
    allowed = keep[..., None, :] | eye
    if causal:
        allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=keep.device).tril()
    if window is not None:
        pos = (torch.arange(t, device=keep.device) if positions is None else positions)
        near = (pos[..., :, None] - pos[..., None, :]) < window  # [(B,) T, T]
        if near.dim() == 3 and allowed.dim() == 4:
            near = near[:, None]
        allowed = allowed & near
    return allowed


@dataclass
class WordDropout:
    """Word-dropout settings plus the per-batch draw.

    Attributes:
        mixture: the probability that a batch is word-dropped, in `[0, 1]` (0, the default:
            never).
        kind: `"uniform_length"` or `"inverse_length"`.
        per_head: draw a keep-set per attention head. `None` picks the paper's behaviour for
            the type: per-head draws for `inverse_length`, one draw per example for
            `uniform_length`.

    Raises:
        ValueError: `mixture` is not a probability, or `kind` is unknown.
    """

    mixture: float = 0.0
    kind: str = "uniform_length"
    per_head: bool | None = None

    def __post_init__(self) -> None:
        self.mixture = check_probability(self.mixture, "word_dropout_mixture")
        check_choice(self.kind, "word_dropout_type", WORD_DROPOUT_TYPES)

    @property
    def independent_heads(self) -> bool:
        """Whether each attention head draws its own keep-set (`per_head`, or its default)."""
        return self.kind == "inverse_length" if self.per_head is None else self.per_head

    def apply_to_batch(self, generator: torch.Generator | None = None) -> bool:
        """Draw whether the next batch is word-dropped (probability `mixture`).

        No random number is drawn when `mixture` is 0 or 1.

        Args:
            generator: source of randomness; `None`: the global one.

        Returns:
            `True` when the batch is word-dropped.
        """
        if self.mixture == 0.0:
            return False
        if self.mixture == 1.0:
            return True
        return bool(torch.rand((), generator=generator) < self.mixture)

    def sample_keep(self, valid: Tensor, num_heads: int,
                    generator: torch.Generator | None = None,
                    always_keep: Tensor | None = None) -> Tensor | None:
        """Draw the keep mask of one batch.

        Args:
            valid: `[B, T]` bool, `True` on real (non-padding) tokens.
            num_heads: the number of attention heads, used when heads draw independently.
            generator: source of randomness (on `valid`'s device); `None`: the global one.
            always_keep: `[B, T]` bool, positions that are never dropped.

        Returns:
            The keep mask, `[B, H, T]` when heads draw independently, else `[B, T]` (see
                [`word_dropout_keep_mask`][sequential_rationales.word_dropout.word_dropout_keep_mask]);
                `None` when this batch is trained on the full context.
        """
        if not self.apply_to_batch(generator):
            return None
        heads = num_heads if self.independent_heads else None
        return word_dropout_keep_mask(valid, self.kind, generator, heads, always_keep)
