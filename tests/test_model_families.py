"""Conformance over the whole model zoo of the pinned transformers: every causal LM and every
encoder-decoder that can be built from a config either gives the paper's objective exactly in
every batching mode (see :mod:`tests.families`) or is refused in one sentence that names it.

The families researchers use daily must be exact, with and without a small sliding window.
"""

from __future__ import annotations

import pytest

from tests import families
from tests.model_zoo import causal_lm_types, seq2seq_types

# Must be exact in every variant but ALiBi (Falcon and MPT are also built with alibi=True).
EXACT_CAUSAL = {
    "gpt2", "gpt_neo", "gpt_neox", "gptj", "opt", "falcon", "llama", "mistral", "mixtral",
    "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
    "stablelm", "starcoder2", "codegen", "xglm", "mpt", "biogpt", "olmo", "olmo2", "cohere",
    "cohere2", "granite", "smollm3", "gpt_bigcode", "persimmon", "ctrl", "gpt_oss",
}
# Refused whatever the variant, with the reason the refusal must give.
REFUSED_CAUSAL = {"bloom": "ALiBi", "mamba": "recurrent", "rwkv": "recurrent",
                  "recurrent_gemma": "recurrent", "bert": "not a causal language model"}
EXACT_SEQ2SEQ = {"marian", "bart", "mbart", "t5", "mt5", "pegasus", "m2m_100", "nllb-moe", "led"}

CAUSAL = [(model_type, variant) for model_type in causal_lm_types()
          for variant in families.causal_variants(model_type)]
SEQ2SEQ = [(model_type, attn) for model_type in seq2seq_types() for attn in ("eager", "sdpa")]


@pytest.mark.parametrize("model_type,variant", CAUSAL,
                         ids=[f"{m}-{v.label.replace(', ', '-').replace(' ', '')}"
                              for m, v in CAUSAL])
def test_causal_lm_is_exact_or_refused(model_type, variant):
    outcome = families.family_outcome(model_type, variant)
    if outcome.startswith("skipped"):
        pytest.skip(outcome)
    assert outcome == "exact" or outcome.startswith("refused: "), outcome
    if model_type in EXACT_CAUSAL and not variant.alibi:
        assert outcome == "exact", outcome
    if model_type in REFUSED_CAUSAL:
        assert REFUSED_CAUSAL[model_type] in outcome, outcome


@pytest.mark.parametrize("model_type,attn", SEQ2SEQ, ids=[f"{m}-{a}" for m, a in SEQ2SEQ])
def test_encoder_decoder_is_exact_or_refused(model_type, attn):
    outcome = families.seq2seq_outcome(model_type, attn)
    if outcome.startswith("skipped"):
        pytest.skip(outcome)
    assert outcome == "exact" or outcome.startswith("refused: "), outcome
    if model_type in EXACT_SEQ2SEQ:
        assert outcome == "exact", outcome


def test_the_zoo_is_the_whole_mapping():
    """The suite walks transformers' own mappings, not a hand-picked list."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    )

    assert set(causal_lm_types()) == set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    assert set(seq2seq_types()) == set(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
