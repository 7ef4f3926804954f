"""A subset fed sparsely with its original positions == the full sequence with a 4-D mask."""

from __future__ import annotations

import itertools

import pytest
import torch

from sequential_rationales import RationalizationProblem, greedy_search
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import build_batch

from .conftest import VOCAB


def subsets_of(length: int, limit: int = 40):
    """Subsets of 0..length-2 that always contain the last context position."""
    out = []
    for size in range(0, length - 1):
        for combo in itertools.combinations(range(length - 2), size):
            out.append((*combo, length - 2))
    return out[:limit]


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_sparse_equals_masked_full_sequence(model_name, request):
    model = request.getfixturevalue(model_name)
    ids = torch.tensor([5, 3, 8, 1, 9, 2, 7, 4]) % VOCAB
    problem = RationalizationProblem(ids)
    subsets = subsets_of(len(ids))
    batch = build_batch(problem, subsets)
    sparse = HuggingFaceCausalLM(model, use_position_ids=True).log_probs(batch)
    masked = HuggingFaceCausalLM(model, use_position_ids=False).log_probs(batch)
    assert torch.allclose(sparse, masked, atol=1e-5)
    # And against a direct call: the whole prefix with a hand-built 4-D mask.
    for i, sub in enumerate(subsets):
        length = sub[-1] + 1
        kept = torch.zeros(length, dtype=torch.bool)
        kept[list(sub)] = True
        allowed = (kept[None, :] | torch.eye(length, dtype=torch.bool)) & torch.ones(
            length, length, dtype=torch.bool).tril()
        with torch.no_grad():
            logits = model(input_ids=ids[:length][None],
                           attention_mask=allowed[None, None]).logits[0, -1]
        assert torch.allclose(torch.log_softmax(logits, -1), sparse[i], atol=1e-5)
    # Left-padded rows of different lengths in one batch give the same answers as alone.
    for i, sub in enumerate(subsets[:10]):
        alone = HuggingFaceCausalLM(model).log_probs(build_batch(problem, [sub]))
        assert torch.allclose(alone[0], sparse[i], atol=1e-5)


def test_masked_fallback_gives_the_same_rationales(tiny_llama):
    ids = torch.tensor([5, 3, 8, 1, 9, 2, 7, 4, 4, 1]) % VOCAB
    sparse = greedy_search(HuggingFaceCausalLM(tiny_llama, use_position_ids=True),
                           RationalizationProblem(ids))
    masked = greedy_search(HuggingFaceCausalLM(tiny_llama, use_position_ids=False),
                           RationalizationProblem(ids))
    assert [r.rationale for r in sparse] == [r.rationale for r in masked]


def test_masked_fallback_gradients_match_sparse(tiny_gpt2):
    from sequential_rationales.baselines import gradient_norm_scores

    ids = torch.tensor([5, 3, 8, 1, 9, 2, 7]) % VOCAB
    problem = RationalizationProblem(ids)
    a = gradient_norm_scores(HuggingFaceCausalLM(tiny_gpt2, use_position_ids=True), problem,
                             problem.targets)
    b = gradient_norm_scores(HuggingFaceCausalLM(tiny_gpt2, use_position_ids=False), problem,
                             problem.targets)
    for t in problem.targets:
        assert torch.allclose(a[t], b[t], atol=1e-5)


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_masked_rows_are_exact_under_every_attention_implementation(family, implementation):
    """Padded sparse rows and the masked fallback against rows run one by one, unpadded and
    unmasked: transformers 5 passes a 4-D mask to eager attention as it is, so the mask must be
    additive there (a boolean one silently shifts the scores)."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB,
                                           n_positions=32, attn_implementation=implementation))
    else:
        model = LlamaForCausalLM(LlamaConfig(
            num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
            intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=32,
            attn_implementation=implementation))
    model.eval()
    ids = torch.tensor([5, 3, 8, 1, 9, 2, 7, 4]) % VOCAB
    subsets = [(6,), (2, 6), (0, 3, 5, 6), (1, 2, 4, 6)]  # unequal lengths: padded and masked
    batch = build_batch(RationalizationProblem(ids), subsets)
    for sparse in (True, False):
        got = HuggingFaceCausalLM(model, use_position_ids=sparse).log_probs(batch)
        for row, sub in enumerate(subsets):
            with torch.no_grad():
                alone = model(ids[list(sub)][None], position_ids=torch.tensor([sub]),
                              attention_mask=torch.ones(1, len(sub), dtype=torch.long)
                              ).logits[0, -1].log_softmax(-1)
            assert torch.allclose(got[row], alone, atol=1e-5), (sparse, row)
