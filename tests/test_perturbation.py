"""The occlusion and random orderings: occlusion scores equal a plain per-candidate loop through
the model itself, the occlusion rationale is the one the hand-made order gives, random orders
are seeded permutations, and both methods run through ``rationalize``, the seed functions of
Hugging Face and fairseq, and the ``rationalize`` command."""

from __future__ import annotations

import copy
import json
import random
import sys

import pytest
import torch

from huggingface.rationalization import baseline_rationalize_lm
from sequential_rationales import (
    BASELINE_METHODS,
    RationalizationProblem,
    rationalize,
    rationalize_sequence,
)
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.perturbation import occlusion_scores, random_order, random_orders
from sequential_rationales.search import build_batch

from .fairseq_helpers import REPO_ROOT, random_tokens, tiny_lm, tiny_translation

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def gpt2_log_prob(model, ids: torch.Tensor, kept: list[int], goal: int) -> float:
    """log p(goal | the kept positions), straight from the model with their position ids."""
    pos = torch.tensor(sorted(kept))
    with torch.no_grad():
        logits = model(input_ids=ids[pos][None], position_ids=pos[None]).logits[0, -1]
    return float(torch.log_softmax(logits.double(), -1)[goal])


def adapter_log_prob(adapter, problem, kept: list[int], goal: int) -> float:
    """log p(goal | the kept codes): one row, one forward pass of the adapter."""
    with torch.no_grad():
        return float(adapter.log_probs(build_batch(problem, [tuple(kept)]))[0, goal])


def loop_occlusion(log_prob, problem: RationalizationProblem, t: int) -> list[float]:
    """The leave-one-out scores of target ``t`` by a plain loop over its candidates."""
    context = list(range(problem.context_size(t)))
    full = log_prob(context, problem.goal(t))
    prev = problem.previous_code(t)
    return [full - log_prob([d for d in context if d != c], problem.goal(t))
            for c in context if c != prev]


# -- occlusion --------------------------------------------------------------------------------
@pytest.mark.parametrize("budget", [None, 7])
def test_occlusion_equals_a_per_candidate_loop_on_gpt2(tiny_gpt2, budget):
    problem = RationalizationProblem(IDS)
    scores = occlusion_scores(HuggingFaceCausalLM(tiny_gpt2), problem, problem.targets,
                              max_tokens_per_batch=budget)
    assert sorted(scores) == list(problem.targets)
    for t in problem.targets:
        expected = loop_occlusion(lambda kept, goal: gpt2_log_prob(tiny_gpt2, IDS, kept, goal),
                                  problem, t)
        assert scores[t].shape == (t,)
        assert scores[t][-1] == float("inf")  # the previous token is never left out
        assert scores[t][:-1].tolist() == pytest.approx(expected, abs=1e-5)


def test_occlusion_equals_a_per_candidate_loop_on_seq2seq(toy_seq2seq):
    source, target = torch.tensor([4, 5, 6, 2]), torch.tensor([2, 7, 8, 3, 9])
    problem = RationalizationProblem(target, source)
    scores = occlusion_scores(toy_seq2seq, problem, [1, 3, 4], max_tokens_per_batch=11)
    assert sorted(scores) == [1, 3, 4]
    for t in [1, 3, 4]:
        expected = loop_occlusion(
            lambda kept, goal: adapter_log_prob(toy_seq2seq, problem, kept, goal), problem, t)
        assert scores[t].shape == (4 + t,)  # source codes, then target codes
        assert scores[t][:-1].tolist() == pytest.approx(expected, abs=1e-5)


def test_occlusion_rationale_follows_the_order_of_its_scores(tiny_gpt2):
    """Known answer: add tokens by decreasing loop score (previous token first, ties to the
    earliest) until the model's argmax, computed directly, is the observed token."""
    problem = RationalizationProblem(IDS)
    result = rationalize(HuggingFaceCausalLM(tiny_gpt2), problem, "occlusion")
    assert result.method == "occlusion"
    for r in result.rationales:
        t = r.target_position
        loop = loop_occlusion(lambda kept, goal: gpt2_log_prob(tiny_gpt2, IDS, kept, goal),
                              problem, t)
        order = [t - 1] + sorted(range(t - 1), key=lambda c: (-loop[c], c))
        expected, reached = order, False
        for k in range(1, t + 1):
            pos = torch.tensor(sorted(order[:k]))
            with torch.no_grad():
                logits = tiny_gpt2(input_ids=IDS[pos][None], position_ids=pos[None]).logits
            if int(logits[0, -1].argmax()) == int(IDS[t]):
                expected, reached = order[:k], True
                break
        assert r.target_rationale == expected
        assert r.reached_argmax == reached


def test_occlusion_on_a_nan_model_is_an_error(tiny_gpt2):
    model = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    for method in ["occlusion", "random"]:
        with pytest.raises(ValueError, match="NaN"):
            rationalize_sequence(HuggingFaceCausalLM(model), IDS, str, method)


# -- random -----------------------------------------------------------------------------------
def test_random_orders_are_seeded_permutations_starting_with_the_previous_token():
    problem = RationalizationProblem(torch.arange(12) % 5, torch.tensor([1, 2, 3]))
    orders = random_orders(problem, problem.targets, seed=0)
    for t, order in orders.items():
        assert order[0] == problem.previous_code(t)
        assert sorted(order) == list(range(problem.context_size(t)))
    # Deterministic, whatever the global RNGs hold, and leaving them untouched.
    random.seed(123)
    torch.manual_seed(123)
    state, torch_state = random.getstate(), torch.get_rng_state()
    assert random_orders(problem, problem.targets, seed=0) == orders
    assert random.getstate() == state and torch.equal(torch.get_rng_state(), torch_state)
    # An order depends on the seed and its target, not on which other targets are asked for.
    assert random_order(problem, 9, seed=0) == orders[9]
    assert random_orders(problem, problem.targets, seed=1) != orders
    # A known value, so that a change of generator shows up as a change of results.
    assert random_order(RationalizationProblem(torch.arange(6)), 5, seed=0) == \
        [4] + _shuffled(4, "0/5")


def _shuffled(n: int, key: str) -> list[int]:
    rest = list(range(n))
    random.Random(key).shuffle(rest)
    return rest


def test_random_method_is_reproducible_and_follows_its_order(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(IDS)
    first = rationalize(adapter, problem, "random", seed=3)
    torch.manual_seed(99)
    random.seed(99)
    again = rationalize(adapter, problem, "random", seed=3)
    assert first.rationales == again.rationales
    orders = random_orders(problem, problem.targets, seed=3)
    for r in first.rationales:
        order = orders[r.target_position]
        assert r.target_rationale == order[:len(r.target_rationale)]
    others = [rationalize(adapter, problem, "random", seed=s, max_steps=2) for s in range(4)]
    assert len({str([r.target_rationale for r in o.rationales]) for o in others}) > 1


def test_seed_is_recorded_and_checked(tiny_gpt2):
    _, log = rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), IDS, str, "random", seed=5)
    assert log["settings"]["seed"] == 5
    with pytest.raises(ValueError, match="seed must be an integer"):
        rationalize(HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS), "random",
                    seed=1.5)


# -- through the entry points -----------------------------------------------------------------
def test_both_are_baseline_methods_of_the_seed_function(tiny_gpt2):
    assert {"occlusion", "random"} <= set(BASELINE_METHODS)
    for method in ["occlusion", "random"]:
        rationales, log = baseline_rationalize_lm(tiny_gpt2, IDS, CharTokenizer(), method,
                                                  verbose=False, start_step=2)
        assert log["method"] == method and len(rationales) == len(IDS) - 3
        assert [r[0] for r in rationales] == list(range(2, len(IDS) - 1))
        core = rationalize(HuggingFaceCausalLM(tiny_gpt2),
                           RationalizationProblem(IDS, targets=range(3, len(IDS))), method)
        assert rationales == [r.target_rationale for r in core.rationales]
        json.dumps(log)


class Hub:
    """The one attribute of a fairseq hub interface that the seed functions use."""

    def __init__(self, model):
        self.models = [model]


@pytest.fixture(scope="module")
def fairseq_rationalization():
    pytest.importorskip("fairseq")
    sys.path.insert(0, str(REPO_ROOT / "fairseq"))
    return pytest.importorskip("rationalization")


@pytest.mark.parametrize("method", ["occlusion", "random"])
def test_fairseq_seed_functions(fairseq_rationalization, method):
    model, _, _ = tiny_lm(seed=6)
    eos = model.decoder.dictionary.eos()
    ids = torch.cat([torch.tensor([eos]), random_tokens(1, 5, torch.Generator())[0]])
    rationales, log = fairseq_rationalization.baseline_rationalize_lm(Hub(model), ids, method,
                                                                      verbose=False)
    assert [r[0] for r in rationales] == list(range(len(ids) - 1)) and log["method"] == method

    model, _, _ = tiny_translation(seed=5)
    gen = torch.Generator().manual_seed(2)
    src = torch.cat([random_tokens(1, 6, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 4, gen)[0]])
    sources, targets, log = fairseq_rationalization.baseline_rationalize_conditional_model(
        Hub(model), src, tgt, method, verbose=False)
    assert len(targets) == len(tgt) - 1
    for t, (s, g) in enumerate(zip(sources, targets), start=1):
        assert g[0] == t - 1
        assert all(0 <= p < len(src) - 1 for p in s)  # the source </s> is never a candidate
    json.dumps(log)


@pytest.mark.parametrize("method", ["occlusion", "random"])
def test_the_rationalize_command(tmp_path, method):
    from sequential_rationales_integrations import rationalize_cli as command

    from .test_rationalize_cli import save_tiny_lm

    model_dir = save_tiny_lm(tmp_path / "lm")
    out = tmp_path / "out.jsonl"
    command.main(["--model", str(model_dir), "--device", "cpu", "--text", "the cat sat on a mat",
                  "--out", str(out), "--method", method])
    record = json.loads(out.read_text().splitlines()[0])
    assert record["method"] == method
    assert [t["rationale"][0] for t in record["rationalization"]] == [0, 1, 2, 3, 4]
