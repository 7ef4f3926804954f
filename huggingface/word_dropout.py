"""Word dropout for Hugging Face causal language models (compatibility training).

Hugging Face causal LMs (GPT-2, Llama, ... with the ``sdpa`` or ``eager`` attention) accept a
boolean 4-D ``attention_mask`` of shape ``[B, 1, T, T]`` or ``[B, H, T, T]`` (``True`` = may
attend) and use it as given. Word dropout is therefore purely a data-collator concern:
:class:`WordDropoutCollator` replaces the batch's attention mask, no model code is patched.
:class:`WordDropoutTrainer` applies it to training batches only, so evaluation sees the full
context.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, get_worker_info
from transformers import Trainer

from sequential_rationales.word_dropout import WordDropout, self_attention_mask

__all__ = ["WordDropoutCollator", "WordDropoutTrainer", "num_attention_heads"]


def num_attention_heads(config: Any) -> int:
    """Number of attention heads of a Hugging Face config (``num_attention_heads`` or
    ``n_head``; for composite configs, those of the text model)."""
    configs = [config]
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        configs.append(get_text_config())
    for cfg in configs:
        for name in ("num_attention_heads", "n_head"):
            heads = getattr(cfg, name, None)
            if heads is None:
                continue
            if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
                raise ValueError(
                    f"{type(config).__name__}.{name} must be a positive integer to draw "
                    f"per-head word-dropout masks, got {heads!r}; use per_head=False")
            return heads
    raise ValueError(
        f"{type(config).__name__} has neither `num_attention_heads` nor `n_head`, so per-head "
        "word-dropout masks cannot be built; use per_head=False (one mask per example)")


class WordDropoutCollator:
    """Wrap a data collator so that word-dropped batches get a 4-D boolean attention mask.

    The base collator's batch is returned unchanged when the batch is not word-dropped (see
    :meth:`WordDropout.sample_keep`). Otherwise ``attention_mask`` becomes
    ``[B, H, T, T]`` (per-head draws) or ``[B, 1, T, T]``, causal, with the diagonal always
    allowed; positions where an existing 2-D ``attention_mask`` is 0 (padding) are never
    attended to by real tokens.

    Randomness comes from a private ``torch.Generator`` seeded with ``seed``, so the masks are
    reproducible and independent of the global RNG. Inside a ``DataLoader`` worker the
    generator is reseeded from ``seed`` and the worker's own seed, so workers (and epochs
    with fresh workers) draw different masks. The generator state is not checkpointed.
    """

    def __init__(self, base_collator: Callable[[list[Any]], Mapping[str, Any]],
                 word_dropout: WordDropout, num_heads: int, seed: int) -> None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be an integer >= 1, got {num_heads!r}")
        self.base_collator = base_collator
        self.word_dropout = word_dropout
        self.num_heads = num_heads
        self.seed = int(seed)
        self._generator: torch.Generator | None = None
        self._worker_seed: int | None = None

    def _rng(self) -> torch.Generator:
        worker = get_worker_info()
        worker_seed = None if worker is None else worker.seed
        if self._generator is None or worker_seed != self._worker_seed:
            # Mix the worker's seed in (crc32 keeps it deterministic across processes).
            mixed = self.seed if worker_seed is None else zlib.crc32(
                f"{self.seed}:{worker_seed}".encode())
            self._generator = torch.Generator().manual_seed(mixed)
            self._worker_seed = worker_seed
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        # Generators are rebuilt lazily from the seed (e.g. in spawned DataLoader workers).
        state = dict(self.__dict__)
        state["_generator"] = None
        state["_worker_seed"] = None
        return state

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        batch = dict(self.base_collator(features))
        input_ids = batch.get("input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise ValueError("word dropout needs a batch with 2-D `input_ids` [batch, seq_len]")
        mask = batch.get("attention_mask")
        if mask is None:
            valid = torch.ones(input_ids.shape, dtype=torch.bool)
        elif isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
            valid = mask.to("cpu", torch.bool)
        else:
            raise ValueError(
                "word dropout expects a 2-D `attention_mask` shaped like `input_ids` "
                f"{list(input_ids.shape)}, got {getattr(mask, 'shape', type(mask).__name__)}")
        keep = self.word_dropout.sample_keep(valid, self.num_heads, self._rng())
        if keep is None:
            return batch
        # Padding is never kept, so real tokens never see it; a padding query sees only itself
        # (an all-False row would give NaN attention outputs).
        allowed = self_attention_mask(keep, causal=True)  # [B, (H,) T, T]
        batch["attention_mask"] = allowed if allowed.dim() == 4 else allowed[:, None]
        return batch


class WordDropoutTrainer(Trainer):
    """``Trainer`` that collates training batches with ``train_data_collator`` (e.g. a
    :class:`WordDropoutCollator`) while evaluation and prediction keep ``data_collator``."""

    def __init__(self, *args: Any, train_data_collator: Callable | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator

    def get_train_dataloader(self) -> DataLoader:
        if self.train_data_collator is None:
            return super().get_train_dataloader()
        # The DataLoader captures the collator at creation, so a temporary swap is enough.
        eval_collator = self.data_collator
        self.data_collator = self.train_data_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator
