"""The seed's two contracts, for any adapter: rationalize every token of a sequence (language
models) or of a translation (source-target models).

Both are built the same way: check the token ids, build the
[`RationalizationProblem`][sequential_rationales.search.RationalizationProblem], run the method
by name and return the typed result with the seed's JSON log. Nothing is printed: callers that
want the rationales on screen pass the result to
[`format_rationales`][sequential_rationales.render.format_rationales].
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from torch import Tensor

from .adapter import ModelAdapter
from .methods import default_max_steps, rationalize
from .results import SequenceRationales, conditional_log, lm_log
from .search import RationalizationProblem
from .validation import check_decoder, check_start_step, check_token_ids

Decoder = Callable[[int], str]
# Options that cannot change the rationales are not settings worth recording.
_NOT_SETTINGS = ("adapter", "problem", "method", "progress")


def _provenance(adapter: ModelAdapter, method: str, options: dict[str, Any],
                **more: Any) -> dict[str, Any]:
    """What a log needs to be reproduced: the package version, the method, every search
    setting (defaults included) and the device."""
    from . import __version__

    defaults = {name: p.default for name, p in inspect.signature(rationalize).parameters.items()
                if name not in _NOT_SETTINGS}
    settings = {**defaults, **{k: v for k, v in options.items() if k not in _NOT_SETTINGS},
                **more}
    if settings.get("max_steps") is None:  # the method's own default, as it ran
        settings["max_steps"] = default_max_steps(method)
    settings["top_1_skip_source"] = [int(c) for c in settings.get("top_1_skip_source", ())]
    if settings.get("extractor") is not None:  # a model of its own: its configuration
        settings["extractor"] = asdict(settings["extractor"].config)
    return {"version": __version__, "method": method, "settings": settings,
            "device": str(adapter.device)}


def lm_problem(adapter: ModelAdapter, input_ids: object, start_step: int = 0
               ) -> RationalizationProblem:
    """Build the problem of a language model's sequence: every position after `start_step` is
    a target.

    Args:
        adapter: the language model; its `vocab_size` and `max_positions` bound the ids.
        input_ids: the sequence's token ids, a 1-D integer tensor `[T]` with `T >= 2`.
        start_step: the last position that is not rationalized, in `[0, T - 2]`; the targets
            are positions `start_step + 1 .. T - 1`.

    Returns:
        The problem, its ids as a CPU `int64` tensor.

    Raises:
        TypeError: `input_ids` is not an integer tensor.
        ValueError: `input_ids` is not 1-D, is too short or too long for the model, holds an
            id outside the vocabulary, or `start_step` is out of range.
    """
    ids = check_token_ids(input_ids, "input_ids", adapter.vocab_size, adapter.max_positions, 2)
    check_start_step(start_step, len(ids))
    return RationalizationProblem(ids, targets=range(start_step + 1, len(ids)))


def conditional_problem(adapter: ModelAdapter, source_tokens: object, target_tokens: object
                        ) -> RationalizationProblem:
    """Build the problem of a translation: every target position after the first (the
    decoder's begin token) is a target.

    The adapter names its conventions: `source_eos` ends every source and stays visible, so it
    is not a candidate; `target_bos` begins every target; `source_pad` and `pad` must not
    occur.

    Args:
        adapter: the conditional model; its vocabularies and position limits bound the ids.
        source_tokens: the source's token ids, a 1-D integer tensor `[S]` ending with the
            adapter's `source_eos`, with at least one token before it.
        target_tokens: the decoder's token ids, a 1-D integer tensor `[T]` (`T >= 2`)
            starting with the adapter's `target_bos`.

    Returns:
        The problem, its source without the final `source_eos`.

    Raises:
        TypeError: the tokens are not integer tensors.
        ValueError: the tokens are not 1-D, too short or too long, hold ids outside the
            vocabularies or padding, or do not end (source) or start (target) as the adapter
            requires.
    """
    src = check_token_ids(source_tokens, "source_tokens", adapter.source_vocab_size,
                          adapter.max_source_positions, 1)
    tgt = check_token_ids(target_tokens, "target_tokens", adapter.vocab_size,
                          adapter.max_positions, 2)
    if int(src[-1]) != adapter.source_eos:
        raise ValueError(f"source_tokens must end with </s> (id {adapter.source_eos}), as "
                         "fairseq encodes sources; use task.source_dictionary.encode_line(...)")
    if len(src) < 2:
        raise ValueError("source_tokens is empty: it holds only </s>")
    if int(tgt[0]) != adapter.target_bos:
        raise ValueError(
            f"target_tokens must start with </s> (id {adapter.target_bos}), the decoder's begin "
            "token: prepend it to the translation, e.g. torch.cat([torch.tensor([eos]), hyp])")
    if (src == adapter.source_pad).any() or (tgt == adapter.pad).any():
        raise ValueError("source_tokens and target_tokens must not contain padding")
    return RationalizationProblem(tgt, src[:-1])


def rationalize_sequence(adapter: ModelAdapter, input_ids: object, decode: Decoder,
                         method: str = "greedy", start_step: int = 0, **options: Any
                         ) -> tuple[SequenceRationales, dict[str, Any]]:
    """Rationalize every token of a language model's sequence after `start_step`.

    Args:
        adapter: the language model.
        input_ids: the sequence's token ids, a 1-D integer tensor `[T]` (see
            [`lm_problem`][sequential_rationales.sequences.lm_problem]).
        decode: turns a token id into its text, for the log.
        method: the method's registered name.
        start_step: the last position that is not rationalized, in `[0, T - 2]`.
        **options: passed on to
            [`rationalize`][sequential_rationales.methods.rationalize] (`max_steps`,
            `max_tokens_per_batch`, ...).

    Returns:
        The typed result, its `extra["target_text"]` holding the decoded tokens, and the
            seed's log ([`lm_log`][sequential_rationales.results.lm_log]) with the keys
            `version`, `settings` (every search setting, defaults included) and `device`
            added, so that the run can be reproduced.

    Raises:
        TypeError: `decode` is not callable, or `input_ids` is not an integer tensor.
        ValueError: the ids or options are invalid (see
            [`rationalize`][sequential_rationales.methods.rationalize]), or the log would hold
            NaN or infinite numbers.
    """
    check_decoder(decode)
    result = rationalize(adapter, lm_problem(adapter, input_ids, start_step), method, **options)
    result.extra["target_text"] = [decode(int(i)) for i in result.target_ids]
    log = lm_log(result, decode)
    _add_new_keys(log, _provenance(adapter, method, options, start_step=start_step))
    return result, log


def rationalize_translation(adapter: ModelAdapter, source_tokens: Tensor, target_tokens: Tensor,
                            decode_source: Decoder, decode_target: Decoder,
                            method: str = "greedy", **options: Any
                            ) -> tuple[SequenceRationales, dict[str, Any]]:
    """Rationalize every target token of a translation after the begin token, each step
    choosing a source or a target token.

    Args:
        adapter: the conditional model.
        source_tokens: the source's token ids `[S]`, ending with the adapter's `source_eos`
            (see [`conditional_problem`][sequential_rationales.sequences.conditional_problem]).
        target_tokens: the decoder's token ids `[T]`, starting with the adapter's
            `target_bos`.
        decode_source: turns a source token id into its text, for the log.
        decode_target: turns a target token id into its text, for the log.
        method: the method's registered name.
        **options: passed on to
            [`rationalize`][sequential_rationales.methods.rationalize] (`max_steps`, `top_1`,
            ...).

    Returns:
        The typed result, its `extra["target_text"]` and `extra["source_text"]` holding the
            decoded tokens (the source's with the final `</s>`), and the seed's log
            ([`conditional_log`][sequential_rationales.results.conditional_log], whose
            `source_tokens` keep the final `</s>`) with the keys `version`, `settings` and
            `device` added.

    Raises:
        TypeError: a decoder is not callable, or the tokens are not integer tensors.
        ValueError: the ids or options are invalid (see
            [`conditional_problem`][sequential_rationales.sequences.conditional_problem] and
            [`rationalize`][sequential_rationales.methods.rationalize]), or the log would hold
            NaN or infinite numbers.
    """
    check_decoder(decode_source, "decode_source")
    check_decoder(decode_target, "decode_target")
    problem = conditional_problem(adapter, source_tokens, target_tokens)
    result = rationalize(adapter, problem, method, **options)
    full_source = [int(i) for i in source_tokens]
    result.extra["target_text"] = [decode_target(int(i)) for i in result.target_ids]
    result.extra["source_text"] = [decode_source(i) for i in full_source]
    log = conditional_log(result, decode_source, decode_target, full_source)
    _add_new_keys(log, _provenance(adapter, method, options))
    return result, log


def _add_new_keys(log: dict[str, Any], keys: dict[str, Any]) -> None:
    """Add provenance to the seed's log without changing any key it already has, and refuse a
    log holding NaN or infinity: JSON cannot hold them, and such numbers are no result."""
    for key, value in keys.items():
        log.setdefault(key, value)
    if not _all_finite(log):
        raise ValueError("the rationalization log holds NaN or infinite numbers; check the "
                         "model's weights and inputs")


def _all_finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_all_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_all_finite(v) for v in value)
    return True
