"""The faithfulness probabilities of a result, computed in batches through an adapter, equal a
plain per-row computation (through the model itself for GPT-2), for greedy, random, exhaustive
and conditional results; the metric formulas have hand-computed cases in test_metrics.py."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, metrics, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.metrics import faithfulness_scores, faithfulness_table_row
from sequential_rationales.perturbation import faithfulness
from sequential_rationales.results import SOURCE
from sequential_rationales.search import build_batch

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])


def expected_scores(prob, problem: RationalizationProblem, result) -> dict[int, dict]:
    """Per target, :func:`faithfulness_scores` of probabilities computed one row at a time;
    ``prob(kept codes, goal)``. The previous token is shown in every row."""
    s = problem.num_source
    out = {}
    for r in result.rationales:
        t, goal = r.target_position, problem.goal(r.target_position)
        codes = [c.position if c.stream == SOURCE else s + c.position for c in r.rationale]
        context, prev = set(range(problem.context_size(t))), problem.previous_code(t)
        prefixes = [set(codes[:k]) | {prev} for k in range(1, len(codes) + 1)]
        out[t] = faithfulness_scores(prob(context, goal),
                                     [prob(p, goal) for p in prefixes],
                                     [prob(context - p | {prev}, goal) for p in prefixes])
    return out


def assert_close(actual: dict, expected: dict) -> None:
    assert sorted(actual) == sorted(expected)
    for t in expected:
        assert set(actual[t]) == set(expected[t])
        for key, value in expected[t].items():
            assert actual[t][key] == pytest.approx(value, abs=1e-6), (t, key)


@pytest.mark.parametrize("method,budget", [("greedy", None), ("random", 9),
                                           ("exhaustive", 16)])
def test_lm_faithfulness_equals_per_row_probabilities(tiny_gpt2, method, budget):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(IDS)
    result = rationalize(adapter, problem, method, max_steps=3)

    def prob(kept, goal):
        pos = torch.tensor(sorted(kept))
        with torch.no_grad():
            logits = tiny_gpt2(input_ids=IDS[pos][None], position_ids=pos[None]).logits
        return float(torch.softmax(logits[0, -1].double(), -1)[goal])

    actual = faithfulness(adapter, problem, result, max_tokens_per_batch=budget)
    assert_close(actual, expected_scores(prob, problem, result))
    if method == "greedy":  # the search's own record of p(y_t | R) gives the sufficiency
        for r in result.rationales:
            f = actual[r.target_position]
            assert f["sufficiency"] == pytest.approx(
                f["p_full"] - r.steps[-1].true_token_prob, abs=1e-6)
    row = faithfulness_table_row(actual.values())
    assert row["n"] == len(problem.targets)
    assert row["comprehensiveness"] == pytest.approx(
        sum(f["comprehensiveness"] for f in actual.values()) / len(actual))


def test_seq2seq_faithfulness_equals_per_row_probabilities(toy_seq2seq):
    source, target = torch.tensor([4, 5, 6, 2]), torch.tensor([2, 7, 8, 3, 9])
    problem = RationalizationProblem(target, source, targets=[1, 2, 4])
    result = rationalize(toy_seq2seq, problem, "random", max_steps=4)

    def prob(kept, goal):
        with torch.no_grad():
            return float(toy_seq2seq.log_probs(build_batch(problem, [tuple(kept)]))[0, goal]
                         .exp())

    actual = faithfulness(toy_seq2seq, problem, result, max_tokens_per_batch=10)
    assert_close(actual, expected_scores(prob, problem, result))
    assert_close(metrics.faithfulness(toy_seq2seq, problem, result), actual)


def test_a_result_of_another_sequence_is_refused(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    result = rationalize(adapter, RationalizationProblem(IDS), "greedy", max_steps=2)
    with pytest.raises(ValueError, match="other target ids"):
        faithfulness(adapter, RationalizationProblem(IDS.flip(0)), result)
    with pytest.raises(ValueError, match="not a target of the problem"):
        faithfulness(adapter, RationalizationProblem(IDS, targets=[2, 3]), result)
