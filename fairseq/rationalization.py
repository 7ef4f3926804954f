"""Seed-compatible rationalization functions for fairseq models.

Run from this folder (or put it on ``sys.path``) as in the original project::

    from fairseq.models.transformer import TransformerModel
    from rationalization import rationalize_conditional_model

Importing this module registers the project's fairseq plugin, so checkpoints of its
architectures load with ``from_pretrained`` without ``--user-dir``. Models must come from the
plugin (``compatible_transformer*`` / ``compatible_transformer_lm`` architectures), whose
encoders and decoders accept original position ids. The search lives in
``sequential_rationales``; this module keeps the seed's signatures and its printing.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

import sequential_rationales_integrations.fairseq  # noqa: F401  (registers the architectures)
from sequential_rationales import (
    BASELINE_METHODS,
    format_rationales,
    rationalize_sequence,
    rationalize_translation,
)
from sequential_rationales.adapters.fairseq import (
    FairseqLanguageModel,
    FairseqTranslationModel,
    unwrap_model,
)
from sequential_rationales.methods import TRAINED_METHODS
from sequential_rationales.validation import check_choice

__all__ = ["rationalize_lm", "baseline_rationalize_lm", "exhaustive_rationalize_lm",
           "rationalize_conditional_model", "baseline_rationalize_conditional_model"]


def _check_no_padding(input_ids: Tensor, pad: int) -> None:
    """A pad id inside the sequence would be embedded as a real token and the rationale
    computed over it silently; fairseq's batches pad, a single sequence must not be padded."""
    if isinstance(input_ids, Tensor) and input_ids.dim() == 1:
        where = (input_ids == pad).nonzero().flatten().tolist()
        if where:
            raise ValueError(
                f"input_ids holds the pad id {pad} at positions {where[:10]}; pass one "
                "unpadded sequence (strip fairseq's batch padding first)")


def _lm(model: nn.Module, input_ids: Tensor, method: str, verbose: bool, max_steps: int,
        start_step: int, max_tokens_per_batch: int | None, **options: Any
        ) -> tuple[list[list[int]], dict[str, Any]]:
    adapter = FairseqLanguageModel(model)
    _check_no_padding(input_ids, adapter.pad)
    decode = adapter.decoder.dictionary.__getitem__
    result, log = rationalize_sequence(adapter, input_ids, decode, method, start_step,
                                       max_steps=max_steps,
                                       max_tokens_per_batch=max_tokens_per_batch, **options)
    if verbose:
        print(format_rationales(result, decode))
    return log["all_rationales"], log


def rationalize_lm(model: nn.Module, input_ids: Tensor, verbose: bool = True,
                   max_steps: int = 1024, start_step: int = 0,
                   max_tokens_per_batch: int | None = None
                   ) -> tuple[list[list[int]], dict[str, Any]]:
    """Greedy rationalization of a fairseq language model's sequence (1-D token ids, usually
    starting with ``</s>`` as fairseq's LM inputs do). Returns ``(all_rationales, log)`` as the
    Hugging Face version."""
    return _lm(model, input_ids, "greedy", verbose, max_steps, start_step, max_tokens_per_batch)


def baseline_rationalize_lm(model: nn.Module, input_ids: Tensor, method: str,
                            verbose: bool = True, max_steps: int = 1024, start_step: int = 0,
                            max_tokens_per_batch: int | None = None,
                            integrated_gradient_steps: int | None = None,
                            extractor: Any = None, top_k: int | None = None
                            ) -> tuple[list[list[int]], dict[str, Any]]:
    """A baseline ordering (see ``sequential_rationales.BASELINE_METHODS``, or ``amortized``
    with a trained ``extractor``) for an LM; ``top_k``: the first ``top_k`` tokens of the
    order, with no search."""
    check_choice(method, "baseline method", BASELINE_METHODS + TRAINED_METHODS)
    return _lm(model, input_ids, method, verbose, max_steps, start_step, max_tokens_per_batch,
               integrated_gradient_steps=integrated_gradient_steps, extractor=extractor,
               top_k=top_k)


def exhaustive_rationalize_lm(model: nn.Module, input_ids: Tensor, verbose: bool = True,
                              max_steps: int = 6, start_step: int = 0,
                              max_tokens_per_batch: int | None = None
                              ) -> tuple[list[list[int]], dict[str, Any]]:
    """Exact minimum rationales by enumerating subsets up to ``max_steps`` tokens."""
    return _lm(model, input_ids, "exhaustive", verbose, max_steps, start_step,
               max_tokens_per_batch)


def _conditional(model: nn.Module, source_tokens: Tensor, target_tokens: Tensor, method: str,
                 verbose: bool, max_steps: int, top_1: bool, max_tokens_per_batch: int | None,
                 **options: Any) -> tuple[list[list[int]], list[list[int]], dict[str, Any]]:
    if not hasattr(source_tokens, "__len__"):
        raise TypeError("source_tokens must be a 1-D torch.Tensor of token ids")
    adapter = FairseqTranslationModel(model, source_length=len(source_tokens))
    inner = unwrap_model(model)
    decode_source = inner.encoder.dictionary.__getitem__
    decode_target = inner.decoder.dictionary.__getitem__
    result, log = rationalize_translation(
        adapter, source_tokens, target_tokens, decode_source, decode_target, method,
        max_steps=max_steps, max_tokens_per_batch=max_tokens_per_batch, top_1=top_1, **options)
    if verbose:
        print(format_rationales(result, decode_target, decode_source))
    return log["all_source_rationales"], log["all_target_rationales"], log


def rationalize_conditional_model(model: nn.Module, source_tokens: Tensor,
                                  target_tokens: Tensor, verbose: bool = True,
                                  max_steps: int = 1024, top_1: bool = False,
                                  max_tokens_per_batch: int | None = None
                                  ) -> tuple[list[list[int]], list[list[int]], dict[str, Any]]:
    """Greedy rationalization of a translation: each greedy step may add a source or a target
    token.

    Args:
        source_tokens: ``[src_len]`` ids ending with ``</s>`` (always visible, never part of a
            rationale).
        target_tokens: ``[tgt_len]`` decoder ids starting with ``</s>``; every later position
            is rationalized.
        top_1: stop each search at the first source token added.
    Returns:
        ``(all_source_rationales, all_target_rationales, log)``, one entry per target token
        ``1 .. tgt_len - 1``, positions in the order they were added.
    """
    return _conditional(model, source_tokens, target_tokens, "greedy", verbose, max_steps,
                        top_1, max_tokens_per_batch)


def baseline_rationalize_conditional_model(model: nn.Module, source_tokens: Tensor,
                                           target_tokens: Tensor, method: str,
                                           verbose: bool = True, max_steps: int = 1024,
                                           top_1: bool = False,
                                           max_tokens_per_batch: int | None = None,
                                           integrated_gradient_steps: int | None = None,
                                           extractor: Any = None, top_k: int | None = None
                                           ) -> tuple[list[list[int]], list[list[int]],
                                                      dict[str, Any]]:
    """A baseline ordering for a translation (``gradient_norm``, ``signed_gradient``,
    ``integrated_gradient``, ``attention_rollout``, ``last_attention``, ``all_attention``).
    Attention scores use cross-attention for source and self-attention for target tokens.
    ``amortized`` takes a trained ``extractor``; ``top_k`` returns the first ``top_k`` tokens
    of the order, with no search."""
    check_choice(method, "baseline method", BASELINE_METHODS + TRAINED_METHODS)
    return _conditional(model, source_tokens, target_tokens, method, verbose, max_steps, top_1,
                        max_tokens_per_batch,
                        integrated_gradient_steps=integrated_gradient_steps,
                        extractor=extractor, top_k=top_k)
