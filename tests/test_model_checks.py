"""Models that cannot be rationalized exactly are refused in one sentence: bidirectional
encoders, recurrent models, ALiBi built from the mask, a model that ignores its position ids, a
tokenizer that does not belong to the model; and sliding windows count original positions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sequential_rationales import RationalizationProblem, greedy_search
from sequential_rationales.adapter import SubsetBatch
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM, attention_windows
from sequential_rationales.validation import InputError
from sequential_rationales_integrations import rationalize_cli as rationalize
from tests.families import check_exact, reference_log_probs
from tests.test_rationalize_cli import WORDS, save_tiny_lm

SMALL = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=100, max_position_embeddings=64)


def _bert(is_decoder: bool):
    from transformers import BertConfig, BertLMHeadModel

    torch.manual_seed(0)
    config = BertConfig(**SMALL, is_decoder=is_decoder, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    return BertLMHeadModel(config).eval()


def test_a_bidirectional_encoder_is_refused():
    with pytest.raises(ValueError, match=r"^BertLMHeadModel is not a causal language model"):
        HuggingFaceCausalLM(_bert(is_decoder=False))


def test_the_same_encoder_as_a_causal_decoder_is_exact():
    model = _bert(is_decoder=True)
    check_exact(model, HuggingFaceCausalLM(model), greedy=False)


def test_a_bert_masked_lm_folder_stops_the_command(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    tokenizer = build_word_level_tokenizer([" ".join(WORDS)])
    BertForMaskedLM(BertConfig(**{**SMALL, "vocab_size": len(tokenizer)})).save_pretrained(
        tmp_path)
    tokenizer.save_pretrained(tmp_path)
    with pytest.raises(InputError, match=r"^\w+ is not a causal language model[^\n]*$"):
        rationalize.main(["--model", str(tmp_path), "--device", "cpu", "--text", "the cat sat"])


@pytest.mark.parametrize("family", ["mamba", "bloom", "falcon_alibi"])
def test_families_without_original_positions_are_refused(family):
    from transformers import AutoModelForCausalLM, BloomConfig, FalconConfig, MambaConfig

    config = {
        "mamba": lambda: MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=100),
        "bloom": lambda: BloomConfig(hidden_size=32, n_layer=2, n_head=4, vocab_size=100),
        "falcon_alibi": lambda: FalconConfig(hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, vocab_size=100, alibi=True),
    }[family]()
    model = AutoModelForCausalLM.from_config(config).eval()
    why = {"mamba": "recurrent", "bloom": "ALiBi", "falcon_alibi": "ALiBi"}[family]
    with pytest.raises(ValueError, match=rf"^{type(model).__name__} cannot be rationalized "
                                         rf"exactly: [^\n]*{why}[^\n]*$"):
        HuggingFaceCausalLM(model)


class _IgnoresPositions(torch.nn.Module):
    """A causal LM wrapper that takes ``position_ids`` and throws them away."""

    def __init__(self, model):
        super().__init__()
        self.inner, self.config = model, model.config

    def get_output_embeddings(self):
        return self.inner.get_output_embeddings()

    def get_input_embeddings(self):
        return self.inner.get_input_embeddings()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, **kwargs):
        return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kwargs)


def test_a_model_that_ignores_position_ids_runs_masked(tiny_gpt2):
    adapter = HuggingFaceCausalLM(_IgnoresPositions(tiny_gpt2))
    assert not adapter.sparse
    check_exact(tiny_gpt2, adapter, greedy=False)


def _mistral(window: int, attn: str = "eager"):
    from transformers import AutoModelForCausalLM, MistralConfig

    torch.manual_seed(0)
    config = MistralConfig(**SMALL, num_key_value_heads=2, sliding_window=window)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn).eval()


def test_a_window_counts_positions_not_kept_tokens():
    """Keys 0 and 7 of a query at 8 are adjacent in a sparse row, but 8 positions apart."""
    model = _mistral(4)
    adapter = HuggingFaceCausalLM(model)
    ids = torch.randint(3, 100, (9,), generator=torch.Generator().manual_seed(1))
    subset = [0, 7, 8]
    got = adapter.log_probs(SubsetBatch(ids[subset][None], torch.tensor([subset]),
                                        torch.ones(1, 3, dtype=torch.bool)))[0]
    # Token 0 is outside the window of position 8: the prediction is that of {7, 8} alone.
    alone = reference_log_probs(model, ids, [7, 8], 9)
    assert torch.allclose(got, alone, atol=1e-5)
    assert torch.allclose(got, reference_log_probs(model, ids, subset, 9), atol=1e-5)


def test_results_do_not_depend_on_the_budget_with_a_window():
    model = _mistral(4)
    adapter = HuggingFaceCausalLM(model)
    ids = torch.randint(3, 100, (14,), generator=torch.Generator().manual_seed(2))
    runs = [greedy_search(adapter, RationalizationProblem(ids), max_steps=4,
                          max_tokens_per_batch=budget, group_by_length=grouped)
            for budget, grouped in ((4, True), (10_000, True), (10_000, False))]
    rationales = [[t.rationale for t in run] for run in runs]
    assert rationales[0] == rationales[1] == rationales[2]
    for run in runs[1:]:
        for got, first in zip(run, runs[0]):
            assert got.steps[-1].true_token_prob == pytest.approx(
                first.steps[-1].true_token_prob, rel=1e-4)


def test_windows_are_read_from_the_config():
    assert attention_windows(_mistral(4)).windows == {"": 4}
    assert attention_windows(_mistral(4)).smallest == 4


def _save_with_tokenizer(tmp_path: Path, words: list[str]) -> Path:
    from transformers import AutoTokenizer

    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    model_dir = save_tiny_lm(tmp_path / "model")
    other = tmp_path / "tokenizer"
    build_word_level_tokenizer([" ".join(words)]).save_pretrained(other)
    assert AutoTokenizer.from_pretrained(other) is not None
    return model_dir, other


def test_a_tokenizer_of_another_vocabulary_stops_the_command(tmp_path):
    model_dir, other = _save_with_tokenizer(tmp_path, ["ein", "zwei", "drei"])
    with pytest.raises(InputError, match=r"^input 0: every token is unknown"):
        rationalize.main(["--model", str(model_dir), "--tokenizer", str(other), "--device",
                          "cpu", "--text", "the cat sat"])


def test_a_larger_tokenizer_than_the_vocabulary_stops_the_command(tmp_path):
    model_dir, other = _save_with_tokenizer(tmp_path, [f"w{i}" for i in range(80)])
    with pytest.raises(InputError, match=r"^the tokenizer has \d+ tokens but the "
                                         r"model's vocabulary only \d+"):
        rationalize.main(["--model", str(model_dir), "--tokenizer", str(other), "--device",
                          "cpu", "--text", "w1 w2 w3"])


def test_attention_that_cannot_take_4d_masks_is_refused():
    from transformers import AutoModelForCausalLM, LlamaConfig

    model = AutoModelForCausalLM.from_config(
        LlamaConfig(**SMALL, num_key_value_heads=2), attn_implementation="flex_attention")
    with pytest.raises(ValueError, match=r"^LlamaForCausalLM runs attn_implementation="
                                         r"'flex_attention'[^\n]*set_attn_implementation"):
        HuggingFaceCausalLM(model)
    model.set_attn_implementation("sdpa")
    check_exact(model.eval(), HuggingFaceCausalLM(model), greedy=False)


def test_a_window_the_model_never_applies_is_not_applied():
    """Moshi declares a sliding_window that its masks never use: the adapter must not."""
    from tests.model_zoo import tiny_causal_lm

    model = tiny_causal_lm("moshi")
    model.config.sliding_window = 4
    assert attention_windows(model).smallest is None
    check_exact(model, HuggingFaceCausalLM(model), greedy=False)
