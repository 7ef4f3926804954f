"""The one-pass ``top_k`` mode of the ranking methods: the first k tokens of the same order
ordered search grows, and a recorded prediction that is the model's own on that subset."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import build_batch

from .conftest import VOCAB

pytest.importorskip("transformers")


def problems(tiny_gpt2, toy_seq2seq):
    ids = torch.randint(1, VOCAB, (9,), generator=torch.Generator().manual_seed(3))
    return [(HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(ids, targets=range(2, 9))),
            (toy_seq2seq, RationalizationProblem(ids[:6], ids[3:]))]


@pytest.mark.parametrize("method", ["gradient_norm", "last_attention", "random"])
def test_top_k_is_the_prefix_ordered_search_grows(method, tiny_gpt2, toy_seq2seq):
    for adapter, problem in problems(tiny_gpt2, toy_seq2seq):
        ordered = rationalize(adapter, problem, method, progress=False)
        for k in (1, 2, 4):
            fast = rationalize(adapter, problem, method, top_k=k, progress=False)
            assert fast.extra["top_k"] == k
            for full, cut in zip(ordered.rationales, fast.rationales, strict=True):
                # Ordered search stops early: its rationale is a prefix of the whole order.
                if len(full.rationale) >= k:
                    assert cut.rationale == full.rationale[:k]
                else:
                    assert cut.rationale[:len(full.rationale)] == full.rationale
                    assert len(cut.rationale) == min(k, problem.context_size(
                        cut.target_position))


def test_top_k_records_the_models_prediction_on_its_subset(tiny_gpt2, toy_seq2seq):
    for adapter, problem in problems(tiny_gpt2, toy_seq2seq):
        fast = rationalize(adapter, problem, "gradient_norm", top_k=3, progress=False)
        for r in fast.rationales:
            codes = [c.position + (problem.num_source if c.stream == "target" else 0)
                     for c in r.rationale]
            row = RationalizationProblem(problem.target_ids, problem.source_ids,
                                         targets=[r.target_position])
            with torch.no_grad():
                log_probs = adapter.log_probs(build_batch(row, [codes]))[0]
            (step,) = r.steps
            assert step.subset == r.rationale and step.added is None
            assert step.prediction == int(log_probs.argmax())
            assert step.true_token_prob == pytest.approx(
                float(log_probs[r.goal_id].exp()), rel=1e-5)
            assert r.reached_argmax == (step.prediction == r.goal_id)


def test_top_k_matches_ordered_search_where_that_stops_at_k(tiny_gpt2):
    """Where ordered search stopped at size k, the top-k rationale of size k is the same and
    reaches the argmax with the same probabilities."""
    adapter, problem = problems(tiny_gpt2, None)[0]
    ordered = rationalize(adapter, problem, "gradient_norm", progress=False)
    compared = 0
    for full in ordered.rationales:
        k = len(full.rationale)
        cut = rationalize(adapter, problem, "gradient_norm", top_k=k, progress=False)
        (same,) = [r for r in cut.rationales if r.target_position == full.target_position]
        assert same.rationale == full.rationale
        assert same.reached_argmax == full.reached_argmax
        assert same.steps[0].true_token_prob == pytest.approx(full.steps[-1].true_token_prob,
                                                              rel=1e-5)
        compared += 1
    assert compared == len(problem.targets)


@pytest.mark.parametrize("method", ["greedy", "exhaustive"])
def test_top_k_is_refused_by_the_searches(method, tiny_gpt2):
    adapter, problem = problems(tiny_gpt2, None)[0]
    with pytest.raises(ValueError, match="top_k needs a method that ranks the context"):
        rationalize(adapter, problem, method, top_k=2, progress=False)
    with pytest.raises(ValueError, match="top_k must be an integer"):
        rationalize(adapter, problem, "gradient_norm", top_k=0, progress=False)
