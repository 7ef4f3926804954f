"""Seed-compatible rationalization functions for Hugging Face causal language models.

    from huggingface.rationalization import rationalize_lm
    rationales, log = rationalize_lm(model, input_ids, tokenizer, verbose=True)

``rationales[i]`` lists the context positions of the rationale of target position
``start_step + i + 1`` in the order they were added (the previous position first). ``log`` is
JSON-serializable (see ``sequential_rationales.results.lm_log``). The search itself lives in
``sequential_rationales``; this module only adapts the model and keeps the seed's signatures.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from sequential_rationales import (
    BASELINE_METHODS,
    format_rationales,
    rationalize_sequence,
    rationalize_translation,
)
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq
from sequential_rationales.methods import TRAINED_METHODS
from sequential_rationales.search import DEFAULT_MAX_SUBSETS
from sequential_rationales.validation import check_choice, check_tokenizer

__all__ = ["rationalize_lm", "baseline_rationalize_lm", "exhaustive_rationalize_lm",
           "rationalize_conditional_model", "baseline_rationalize_conditional_model"]


def _run(model: nn.Module, input_ids: Tensor, tokenizer: Any, method: str, verbose: bool,
         max_steps: int, start_step: int, max_tokens_per_batch: int | None,
         **options: Any) -> tuple[list[list[int]], dict[str, Any]]:
    check_tokenizer(tokenizer)
    adapter = HuggingFaceCausalLM(model)

    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id])

    result, log = rationalize_sequence(
        adapter, input_ids, decode, method, start_step, max_steps=max_steps,
        max_tokens_per_batch=max_tokens_per_batch, **options)
    if verbose:
        print(format_rationales(result, decode))
    return log["all_rationales"], log


def rationalize_lm(model: nn.Module, input_ids: Tensor, tokenizer: Any, verbose: bool = True,
                   max_steps: int = 1024, start_step: int = 0,
                   max_tokens_per_batch: int | None = None
                   ) -> tuple[list[list[int]], dict[str, Any]]:
    """Greedy rationalization of every token of ``input_ids`` (1-D) after ``start_step``.

    All targets are searched together; candidate subsets are scored in batches of at most
    ``max_tokens_per_batch`` tokens. The model should be fine-tuned for compatibility (word
    dropout) for the rationales to be meaningful.
    """
    return _run(model, input_ids, tokenizer, "greedy", verbose, max_steps, start_step,
                max_tokens_per_batch)


def baseline_rationalize_lm(model: nn.Module, input_ids: Tensor, tokenizer: Any, method: str,
                            verbose: bool = True, max_steps: int = 1024, start_step: int = 0,
                            max_tokens_per_batch: int | None = None,
                            integrated_gradient_steps: int | None = None,
                            extractor: Any = None, top_k: int | None = None
                            ) -> tuple[list[list[int]], dict[str, Any]]:
    """Rationales from a baseline ordering (``gradient_norm``, ``signed_gradient``,
    ``integrated_gradient``, ``attention_rollout``, ``last_attention``, ``all_attention``, or
    ``amortized`` with a trained ``extractor``): context tokens are added by decreasing
    importance until the argmax condition holds (``top_k``: the first ``top_k`` of them, with
    no search)."""
    check_choice(method, "baseline method", BASELINE_METHODS + TRAINED_METHODS)
    return _run(model, input_ids, tokenizer, method, verbose, max_steps, start_step,
                max_tokens_per_batch, integrated_gradient_steps=integrated_gradient_steps,
                extractor=extractor, top_k=top_k)


def exhaustive_rationalize_lm(model: nn.Module, input_ids: Tensor, tokenizer: Any,
                              verbose: bool = True, max_steps: int = 6, start_step: int = 0,
                              max_tokens_per_batch: int | None = None,
                              max_subsets: int = DEFAULT_MAX_SUBSETS, progress: Any = None
                              ) -> tuple[list[list[int]], dict[str, Any]]:
    """Exact minimum-size rationales by enumerating subsets of size up to ``max_steps``.

    A search of more than ``max_subsets`` subsets is refused before it starts; ``progress``
    (``True``, a ``(done, total)`` callback, or ``None``: when stderr is a terminal) reports
    how far it is."""
    return _run(model, input_ids, tokenizer, "exhaustive", verbose, max_steps, start_step,
                max_tokens_per_batch, max_subsets=max_subsets, progress=progress)


def _conditional(model: nn.Module, source_tokens: Tensor, target_tokens: Tensor,
                 tokenizer: Any, method: str, verbose: bool, max_steps: int, top_1: bool,
                 max_tokens_per_batch: int | None, **options: Any
                 ) -> tuple[list[list[int]], list[list[int]], dict[str, Any]]:
    check_tokenizer(tokenizer)
    if not hasattr(source_tokens, "__len__"):
        raise TypeError("source_tokens must be a 1-D torch.Tensor of token ids")
    adapter = HuggingFaceSeq2Seq(model, source_length=len(source_tokens))
    pad = model.config.pad_token_id
    if isinstance(target_tokens, Tensor) and target_tokens.dim() == 1:
        # Marian and T5 begin the decoder with the pad id: only later pads are padding.
        where = (target_tokens[1:] == pad).nonzero().flatten().add(1).tolist()
        if where:
            raise ValueError(f"target_tokens holds the pad id {pad} at positions {where[:10]}; "
                             "pass one unpadded sequence (strip generate()'s batch padding)")

    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id])

    result, log = rationalize_translation(
        adapter, source_tokens, target_tokens, decode, decode, method, max_steps=max_steps,
        max_tokens_per_batch=max_tokens_per_batch, top_1=top_1, **options)
    if verbose:
        print(format_rationales(result, decode, decode))
    return log["all_source_rationales"], log["all_target_rationales"], log


def rationalize_conditional_model(model: nn.Module, source_tokens: Tensor,
                                  target_tokens: Tensor, tokenizer: Any, verbose: bool = True,
                                  max_steps: int = 1024, top_1: bool = False,
                                  max_tokens_per_batch: int | None = None
                                  ) -> tuple[list[list[int]], list[list[int]], dict[str, Any]]:
    """Greedy rationalization of a translation by a Hugging Face encoder-decoder (Marian,
    BART, T5): each greedy step may add a source or a target token.

    Args:
        source_tokens: ``[src_len]`` ids as the tokenizer encodes the source, ending with
            ``</s>`` (always visible, never part of a rationale).
        target_tokens: ``[tgt_len]`` decoder ids starting with ``decoder_start_token_id``, as
            ``model.generate`` returns them; every later position is rationalized.
        top_1: stop each search at the first source token added.
    Returns:
        ``(all_source_rationales, all_target_rationales, log)``, one entry per target token
        ``1 .. tgt_len - 1``, positions in the order they were added.
    """
    return _conditional(model, source_tokens, target_tokens, tokenizer, "greedy", verbose,
                        max_steps, top_1, max_tokens_per_batch)


def baseline_rationalize_conditional_model(model: nn.Module, source_tokens: Tensor,
                                           target_tokens: Tensor, tokenizer: Any, method: str,
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
    return _conditional(model, source_tokens, target_tokens, tokenizer, method, verbose,
                        max_steps, top_1, max_tokens_per_batch,
                        integrated_gradient_steps=integrated_gradient_steps,
                        extractor=extractor, top_k=top_k)
