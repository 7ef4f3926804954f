"""Seed-compatible rationalization functions for fairseq models.

Run from this folder (or put it on ``sys.path``) as in the original project::

    from fairseq.models.transformer import TransformerModel
    from rationalization import rationalize_conditional_model

Importing this module registers the project's fairseq plugin, so checkpoints of its
architectures load with ``from_pretrained`` without ``--user-dir``. Models must come from the
plugin (``compatible_transformer*`` / ``compatible_transformer_lm`` architectures), whose
encoders and decoders accept original position ids. The search lives in
``sequential_rationales``; this module converts arguments and logs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:  # the package is importable when run from a checkout
    sys.path.insert(0, str(_ROOT))

from torch import Tensor, nn  # noqa: E402

import sequential_rationales.fairseq_plugin  # noqa: E402,F401  (registers the architectures)
from sequential_rationales import (  # noqa: E402
    BASELINE_METHODS,
    RationalizationProblem,
    conditional_log,
    format_rationales,
    rationalize,
    rationalize_lm_sequence,
)
from sequential_rationales.adapters.fairseq import (  # noqa: E402
    FairseqLanguageModel,
    FairseqTranslationModel,
    unwrap_model,
)
from sequential_rationales.validation import (  # noqa: E402
    check_choice,
    check_token_ids,
)

__all__ = ["rationalize_lm", "baseline_rationalize_lm", "exhaustive_rationalize_lm",
           "rationalize_conditional_model", "baseline_rationalize_conditional_model"]


def _lm(model: nn.Module, input_ids: Tensor, method: str, verbose: bool, max_steps: int,
        start_step: int, max_tokens_per_batch: int | None, **options: Any
        ) -> tuple[list[list[int]], dict[str, Any]]:
    adapter = FairseqLanguageModel(model)
    dictionary = adapter.decoder.dictionary

    def decode(i: int) -> str:
        return dictionary[i]

    return rationalize_lm_sequence(adapter, input_ids, decode, method, verbose, max_steps,
                                   start_step, max_tokens_per_batch, **options)


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
                            integrated_gradient_steps: int = 100
                            ) -> tuple[list[list[int]], dict[str, Any]]:
    """A baseline ordering (see ``sequential_rationales.BASELINE_METHODS``) for an LM."""
    check_choice(method, "baseline method", BASELINE_METHODS)
    return _lm(model, input_ids, method, verbose, max_steps, start_step, max_tokens_per_batch,
               integrated_gradient_steps=integrated_gradient_steps)


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
    inner = unwrap_model(model)
    src_dict, tgt_dict = inner.encoder.dictionary, inner.decoder.dictionary
    if not hasattr(source_tokens, "__len__"):
        raise TypeError("source_tokens must be a 1-D torch.Tensor of token ids")
    adapter = FairseqTranslationModel(model, source_length=len(source_tokens))
    src = check_token_ids(source_tokens, "source_tokens", adapter.source_vocab_size,
                          adapter.max_source_positions, 1)
    tgt = check_token_ids(target_tokens, "target_tokens", adapter.vocab_size,
                          adapter.max_positions, 2)
    if int(src[-1]) != src_dict.eos():
        raise ValueError(f"source_tokens must end with </s> (id {src_dict.eos()}), as fairseq "
                         "encodes sources; use task.source_dictionary.encode_line(...)")
    if len(src) < 2:
        raise ValueError("source_tokens is empty: it holds only </s>")
    if int(tgt[0]) != tgt_dict.eos():
        raise ValueError(
            f"target_tokens must start with </s> (id {tgt_dict.eos()}), the decoder's begin "
            "token: prepend it to the translation, e.g. torch.cat([torch.tensor([eos]), hyp])")
    if (src == src_dict.pad()).any() or (tgt == tgt_dict.pad()).any():
        raise ValueError("source_tokens and target_tokens must not contain padding")
    # The final source </s> is always visible (see the adapter), so it is not a candidate.
    problem = RationalizationProblem(tgt, src[:-1])
    result = rationalize(adapter, problem, method, max_steps=max_steps,
                         max_tokens_per_batch=max_tokens_per_batch, top_1=top_1, **options)
    result.source_ids = [int(i) for i in src]

    def decode_src(i: int) -> str:
        return src_dict[i]

    def decode_tgt(i: int) -> str:
        return tgt_dict[i]

    if verbose:
        print(format_rationales(result, decode_tgt, decode_src))
    log = conditional_log(result, decode_src, decode_tgt)
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
                                           integrated_gradient_steps: int = 100
                                           ) -> tuple[list[list[int]], list[list[int]],
                                                      dict[str, Any]]:
    """A baseline ordering for a translation (``gradient_norm``, ``signed_gradient``,
    ``integrated_gradient``, ``attention_rollout``, ``last_attention``, ``all_attention``).
    Attention scores use cross-attention for source and self-attention for target tokens."""
    check_choice(method, "baseline method", BASELINE_METHODS)
    return _conditional(model, source_tokens, target_tokens, method, verbose, max_steps, top_1,
                        max_tokens_per_batch,
                        integrated_gradient_steps=integrated_gradient_steps)
