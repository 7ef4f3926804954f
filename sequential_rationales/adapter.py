"""The one interface between the search algorithms and a concrete model.

Every framework (Hugging Face, fairseq, plain torch modules in tests) is reached through an
object implementing :class:`ModelAdapter`. The search code never sees framework types.

Conventions shared by all adapters
----------------------------------
* A *subset* of the context is fed sparsely: only its tokens, sorted by position, each with its
  **original** 0-based position id. Adapters add any framework offset (fairseq starts at
  ``padding_idx + 1``).
* Target (decoder) rows are **left-padded**, so the predicting token is always the last column.
  Source (encoder) rows are **right-padded**. Masks are ``True`` on real tokens. Padded slots
  hold token id 0 and position 0; adapters must ignore them.
* ``log_probs`` returns log-probabilities of the token that follows the last target token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass
class SubsetBatch:
    """A batch of N sparse context subsets.

    Shapes: ``target_*`` are ``[N, Lt]`` (left-padded), ``source_*`` are ``[N, Ls]``
    (right-padded) or ``None`` for language models.
    """

    target_ids: Tensor
    target_positions: Tensor
    target_mask: Tensor
    source_ids: Tensor | None = None
    source_positions: Tensor | None = None
    source_mask: Tensor | None = None

    def __len__(self) -> int:
        return self.target_ids.shape[0]

    def to(self, device: torch.device | str) -> SubsetBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return SubsetBatch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


@dataclass
class Embeddings:
    """Token embeddings (before positions are added) for a :class:`SubsetBatch`.

    ``target``: ``[N, Lt, D]``; ``source``: ``[N, Ls, D]`` or ``None``.
    """

    target: Tensor
    source: Tensor | None = None


@dataclass
class AttentionMaps:
    """Attention probabilities of one full (unmasked) sequence, heads not averaged.

    ``decoder_self``: ``[layers, heads, T, T]``; ``cross``: ``[layers, heads, T, S]``;
    ``encoder_self``: ``[layers, heads, S, S]``. The last two are ``None`` for language models.
    Row ``i`` is the query at target position ``i``.
    """

    decoder_self: Tensor
    cross: Tensor | None = None
    encoder_self: Tensor | None = None


@runtime_checkable
class ModelAdapter(Protocol):
    """What the search and the baselines need from a model.

    Attributes:
        vocab_size: number of output classes; ids must be below it.
        max_positions: largest sequence length the model accepts (``None``: unbounded).
        is_conditional: ``True`` when the model reads a source sequence (translation).
        device: where batches are sent.
    """

    vocab_size: int
    max_positions: int | None
    is_conditional: bool
    device: torch.device

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """``[N, V]`` log-probabilities of the next target token of each row.

        When ``embeddings`` is given, those token embeddings replace the embedding lookup
        (positions are still added by the model); used by the gradient baselines.
        """
        ...

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """Token embeddings of the batch, as the model's first layer receives them."""
        ...

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Attention maps of the single full sequence in ``batch`` (N must be 1)."""
        ...
