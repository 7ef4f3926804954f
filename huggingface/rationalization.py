"""Seed-compatible rationalization functions for Hugging Face causal language models and
encoder-decoder (translation) models.

```python
from huggingface.rationalization import rationalize_lm
rationales, log = rationalize_lm(model, input_ids, tokenizer, verbose=True)
```

`rationales[i]` lists the context positions of the rationale of target position
`start_step + i + 1` in the order they were added (the previous position first). `log` is
JSON-serializable (see [`lm_log`][sequential_rationales.results.lm_log]). The search itself
lives in `sequential_rationales`; this module only adapts the model and keeps the seed's
signatures.
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
    """Greedy rationalization of every token of `input_ids` after `start_step`.

    All targets are searched together; candidate subsets are scored in batches of at most
    `max_tokens_per_batch` tokens. The model should be fine-tuned for compatibility (word
    dropout) for the rationales to be meaningful.

    Args:
        model: a Hugging Face causal language model (e.g. GPT-2).
        input_ids: the sequence's token ids, a 1-D integer tensor `[T]` (pass `ids[0]` for
            a `[1, T]` batch).
        tokenizer: the model's tokenizer; its `decode` gives the tokens' texts in the log.
        verbose: print the rationales (see
            [`format_rationales`][sequential_rationales.render.format_rationales]).
        max_steps: the largest rationale size; a target that has not reached its argmax by
            then stops there.
        start_step: the last position that is not rationalized, in `[0, T - 2]`.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.

    Returns:
        `(rationales, log)`. `rationales[i]` lists the positions of the rationale of target
            position `start_step + i + 1`, in the order they were added (the previous position
            first); `log` is the seed's JSON-serializable log
            ([`lm_log`][sequential_rationales.results.lm_log]) with the package version, the
            settings and the device added.

    Raises:
        TypeError: `tokenizer` has no `decode` method, or `input_ids` is not an integer
            tensor.
        ValueError: the ids or options are invalid (see
            [`rationalize`][sequential_rationales.methods.rationalize]).
    """
    return _run(model, input_ids, tokenizer, "greedy", verbose, max_steps, start_step,
                max_tokens_per_batch)


def baseline_rationalize_lm(model: nn.Module, input_ids: Tensor, tokenizer: Any, method: str,
                            verbose: bool = True, max_steps: int = 1024, start_step: int = 0,
                            max_tokens_per_batch: int | None = None,
                            integrated_gradient_steps: int | None = None,
                            extractor: Any = None, top_k: int | None = None
                            ) -> tuple[list[list[int]], dict[str, Any]]:
    """Rationales from a baseline ordering of the context.

    Context tokens are added by decreasing importance until the argmax condition holds (with
    `top_k`, the first `top_k` of them, with no search).

    Args:
        model: a Hugging Face causal language model (e.g. GPT-2).
        input_ids: the sequence's token ids, a 1-D integer tensor `[T]` (pass `ids[0]` for
            a `[1, T]` batch).
        tokenizer: the model's tokenizer; its `decode` gives the tokens' texts in the log.
        verbose: print the rationales (see
            [`format_rationales`][sequential_rationales.render.format_rationales]).
        method: the ordering: the paper's `gradient_norm`, `signed_gradient`,
            `integrated_gradient`, `attention_rollout`, `last_attention` or `all_attention`,
            another of `sequential_rationales.BASELINE_METHODS` (`occlusion`, `lrp`, `iba`,
            `random`, ...), or `amortized` with a trained `extractor`.
        max_steps: the largest rationale size.
        start_step: the last position that is not rationalized, in `[0, T - 2]`.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.
        integrated_gradient_steps: the integrated-gradients methods' number of steps; `None`:
            the adapter's default.
        extractor: the `amortized` method's trained
            [`RationaleExtractor`][sequential_rationales.extractor.RationaleExtractor].
        top_k: return the first `top_k` tokens of each order, with no search; `None`: grow
            the order until the argmax condition holds.

    Returns:
        `(rationales, log)`. `rationales[i]` lists the positions of the rationale of target
            position `start_step + i + 1`, in the order they were added (the previous position
            first); `log` is the seed's JSON-serializable log
            ([`lm_log`][sequential_rationales.results.lm_log]) with the package version, the
            settings and the device added.

    Raises:
        TypeError: `tokenizer` has no `decode` method, or `input_ids` is not an integer
            tensor.
        ValueError: an unknown method, or the ids or options are invalid (see
            [`rationalize`][sequential_rationales.methods.rationalize]).
        InputError: `amortized` without an `extractor`.
    """
    check_choice(method, "baseline method", BASELINE_METHODS + TRAINED_METHODS)
    return _run(model, input_ids, tokenizer, method, verbose, max_steps, start_step,
                max_tokens_per_batch, integrated_gradient_steps=integrated_gradient_steps,
                extractor=extractor, top_k=top_k)


def exhaustive_rationalize_lm(model: nn.Module, input_ids: Tensor, tokenizer: Any,
                              verbose: bool = True, max_steps: int = 6, start_step: int = 0,
                              max_tokens_per_batch: int | None = None,
                              max_subsets: int = DEFAULT_MAX_SUBSETS, progress: Any = None
                              ) -> tuple[list[list[int]], dict[str, Any]]:
    """Exact minimum-size rationales by enumerating subsets of size up to `max_steps`.

    See [`exhaustive_search`][sequential_rationales.search.exhaustive_search].

    Args:
        model: a Hugging Face causal language model (e.g. GPT-2).
        input_ids: the sequence's token ids, a 1-D integer tensor `[T]` (pass `ids[0]` for
            a `[1, T]` batch).
        tokenizer: the model's tokenizer; its `decode` gives the tokens' texts in the log.
        verbose: print the rationales (see
            [`format_rationales`][sequential_rationales.render.format_rationales]).
        max_steps: the largest subset size.
        start_step: the last position that is not rationalized, in `[0, T - 2]`.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.
        max_subsets: a search of more subsets is refused before it starts.
        progress: reports how far the search is: `True` for a line on stderr, a
            `(done, total)` callback, `False` for nothing, or `None` for a line only when
            stderr is a terminal.

    Returns:
        `(rationales, log)`. `rationales[i]` lists the positions of the rationale of target
            position `start_step + i + 1`, in the order they were added (the previous position
            first); `log` is the seed's JSON-serializable log
            ([`lm_log`][sequential_rationales.results.lm_log]) with the package version, the
            settings and the device added.

    Raises:
        TypeError: `tokenizer` has no `decode` method, or `input_ids` is not an integer
            tensor.
        ValueError: the search would score more than `max_subsets` subsets, or the ids or
            options are invalid.
    """
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
        model: a Hugging Face encoder-decoder model (Marian, BART, T5).
        source_tokens: `[src_len]` ids as the tokenizer encodes the source, ending with
            `</s>` (always visible, never part of a rationale).
        target_tokens: `[tgt_len]` decoder ids starting with `decoder_start_token_id`, as
            `model.generate` returns them, without padding; every later position is
            rationalized.
        tokenizer: the model's tokenizer; its `decode` gives the tokens' texts in the log.
        verbose: print the rationales (see
            [`format_rationales`][sequential_rationales.render.format_rationales]).
        max_steps: the largest rationale size.
        top_1: stop each search at the first source token added.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.

    Returns:
        `(all_source_rationales, all_target_rationales, log)`: one entry per target token
            `1 .. tgt_len - 1`, positions in the order they were added, and the seed's
            JSON-serializable log
            ([`conditional_log`][sequential_rationales.results.conditional_log]) with the
            package version, the settings and the device added.

    Raises:
        TypeError: `tokenizer` has no `decode` method, or the tokens are not integer tensors.
        ValueError: `target_tokens` holds the pad id after its first position (a padded
            batch row), or the ids or options are invalid (see
            [`rationalize_translation`][sequential_rationales.sequences.rationalize_translation]).
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
    """Rationales of a translation from a baseline ordering of the source and target context.

    Attention scores use cross-attention for source and self-attention for target tokens.

    Args:
        model: a Hugging Face encoder-decoder model (Marian, BART, T5).
        source_tokens: `[src_len]` ids as the tokenizer encodes the source, ending with
            `</s>` (always visible, never part of a rationale).
        target_tokens: `[tgt_len]` decoder ids starting with `decoder_start_token_id`, as
            `model.generate` returns them, without padding; every later position is
            rationalized.
        tokenizer: the model's tokenizer; its `decode` gives the tokens' texts in the log.
        method: the ordering: the paper's `gradient_norm`, `signed_gradient`,
            `integrated_gradient`, `attention_rollout`, `last_attention` or `all_attention`,
            another of `sequential_rationales.BASELINE_METHODS`, or `amortized` with a
            trained `extractor`.
        verbose: print the rationales.
        max_steps: the largest rationale size.
        top_1: stop each search at the first source token added.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.
        integrated_gradient_steps: the integrated-gradients methods' number of steps; `None`:
            the adapter's default.
        extractor: the `amortized` method's trained
            [`RationaleExtractor`][sequential_rationales.extractor.RationaleExtractor].
        top_k: return the first `top_k` tokens of each order, with no search.

    Returns:
        `(all_source_rationales, all_target_rationales, log)`: one entry per target token
            `1 .. tgt_len - 1`, positions in the order they were added, and the seed's
            JSON-serializable log
            ([`conditional_log`][sequential_rationales.results.conditional_log]) with the
            package version, the settings and the device added.

    Raises:
        TypeError: `tokenizer` has no `decode` method, or the tokens are not integer tensors.
        ValueError: an unknown method, `target_tokens` holds the pad id after its first
            position, or the ids or options are invalid.
        InputError: `amortized` without an `extractor`.
    """
    check_choice(method, "baseline method", BASELINE_METHODS + TRAINED_METHODS)
    return _conditional(model, source_tokens, target_tokens, tokenizer, method, verbose,
                        max_steps, top_1, max_tokens_per_batch,
                        integrated_gradient_steps=integrated_gradient_steps,
                        extractor=extractor, top_k=top_k)
