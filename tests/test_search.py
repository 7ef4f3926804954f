"""Greedy, ordered and exhaustive search against plain brute-force re-implementations."""

from __future__ import annotations

import itertools

import pytest
import torch

from sequential_rationales import (
    RationalizationProblem,
    SubsetBatch,
    exhaustive_search,
    greedy_search,
    ordered_search,
)
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import token_budget_chunks

from .conftest import VOCAB


def lm_log_prob(model, ids, subset, goal):
    """log p(goal | ids[subset]) by one direct call with the original positions."""
    sub = torch.tensor(sorted(subset))
    with torch.no_grad():
        logits = model(input_ids=ids[sub][None], position_ids=sub[None]).logits[0, -1]
    return torch.log_softmax(logits, -1)


def model_sequences(model, seed, n=3, length=10):
    """Random sequences and sequences the model generates greedily (whose tokens it predicts,
    so rationales of many sizes occur)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        out.append(torch.randint(0, VOCAB, (length,), generator=gen))
        prefix = torch.randint(1, VOCAB, (1, 3), generator=gen)
        with torch.no_grad():
            generated = model.generate(prefix, max_length=length, min_length=length,
                                       do_sample=False, pad_token_id=0)[0]
        out.append(generated)
    return out


def brute_force_greedy_lm(model, ids, t, max_steps=100):
    """The paper's Algorithm 1 for one target, one candidate at a time."""
    goal = int(ids[t])
    chosen = [t - 1]
    lp = lm_log_prob(model, ids, chosen, goal)
    while int(lp.argmax()) != goal and len(chosen) < min(t, max_steps):
        best, best_lp = None, None
        for c in range(t):
            if c in chosen:
                continue
            cand = lm_log_prob(model, ids, chosen + [c], goal)
            if best is None or cand[goal] > best_lp[goal]:
                best, best_lp = c, cand
        chosen.append(best)
        lp = best_lp
    return chosen, int(lp.argmax()) == goal


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_greedy_matches_brute_force_lm(model_name, request):
    model = request.getfixturevalue(model_name)
    adapter = HuggingFaceCausalLM(model)
    sizes = []
    for ids in model_sequences(model, seed=3):
        results = greedy_search(adapter, RationalizationProblem(ids), max_tokens_per_batch=64)
        for r in results:
            expected, reached = brute_force_greedy_lm(model, ids, r.target_position)
            assert r.target_rationale == expected
            assert r.reached_argmax == reached
            assert r.target_rationale[0] == r.target_position - 1
            assert len(r.steps) == len(r.rationale)
            if reached:
                sizes.append(len(expected))
    # The check is only meaningful if the search stopped early at several different sizes.
    assert len(set(sizes)) >= 2


def seq2seq_log_prob(model, src, tgt, src_subset, tgt_subset):
    s = sorted(src_subset)
    t = sorted(tgt_subset)
    batch = SubsetBatch(
        target_ids=tgt[t][None], target_positions=torch.tensor(t)[None],
        target_mask=torch.ones(1, len(t), dtype=torch.bool),
        source_ids=src[s][None] if s else torch.zeros(1, 1, dtype=torch.long),
        source_positions=torch.tensor(s)[None] if s else torch.zeros(1, 1, dtype=torch.long),
        source_mask=torch.ones(1, len(s), dtype=torch.bool) if s else
        torch.zeros(1, 1, dtype=torch.bool))
    with torch.no_grad():
        return model.log_probs(batch)[0]


def brute_force_greedy_conditional(model, src, tgt, t, top_1=False):
    goal = int(tgt[t])
    chosen = [("target", t - 1)]
    context = [("source", i) for i in range(len(src))] + [("target", j) for j in range(t)]

    def lp_of(items):
        return seq2seq_log_prob(model, src, tgt, [p for s, p in items if s == "source"],
                                [p for s, p in items if s == "target"])

    lp = lp_of(chosen)
    while len(chosen) < len(context):
        if top_1 and any(s == "source" for s, _ in chosen):
            break
        if not top_1 and int(lp.argmax()) == goal:
            break
        best, best_lp = None, None
        for c in context:
            if c in chosen:
                continue
            cand = lp_of(chosen + [c])
            if best is None or cand[goal] > best_lp[goal]:
                best, best_lp = c, cand
        chosen.append(best)
        lp = best_lp
    return chosen


@pytest.mark.parametrize("top_1", [False, True])
def test_greedy_matches_brute_force_conditional(toy_seq2seq, top_1):
    gen = torch.Generator().manual_seed(4)
    for _ in range(3):
        src = torch.randint(0, VOCAB, (6,), generator=gen)
        tgt = torch.randint(0, VOCAB, (6,), generator=gen)
        problem = RationalizationProblem(tgt, src)
        results = greedy_search(toy_seq2seq, problem, max_tokens_per_batch=50, top_1=top_1)
        for r in results:
            expected = brute_force_greedy_conditional(toy_seq2seq, src, tgt, r.target_position,
                                                      top_1)
            assert [(c.stream, c.position) for c in r.rationale] == expected


@pytest.mark.parametrize("budget", [1, 7, 33, 10_000])
def test_results_do_not_depend_on_batch_budget(tiny_gpt2, toy_seq2seq, budget):
    ids = torch.tensor([1, 5, 7, 2, 9, 3, 3, 8, 4, 6])
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ref = greedy_search(adapter, RationalizationProblem(ids), max_tokens_per_batch=4096)
    got = greedy_search(adapter, RationalizationProblem(ids), max_tokens_per_batch=budget)
    assert [r.rationale for r in got] == [r.rationale for r in ref]
    for a, b in zip(got, ref):
        for sa, sb in zip(a.steps, b.steps):
            assert sa.true_token_prob == pytest.approx(sb.true_token_prob, abs=1e-5)
    problem = RationalizationProblem(ids[:6], ids[4:])
    ref_c = greedy_search(toy_seq2seq, problem, max_tokens_per_batch=4096)
    got_c = greedy_search(toy_seq2seq, problem, max_tokens_per_batch=budget)
    assert [r.rationale for r in got_c] == [r.rationale for r in ref_c]


def test_token_budget_chunks_cover_rows_within_budget():
    lengths = [3, 1, 4, 1, 5, 9, 2, 6]
    chunks = list(token_budget_chunks(lengths, 10))
    assert [i for c in chunks for i in range(c.start, c.stop)] == list(range(len(lengths)))
    for c in chunks:
        rows = lengths[c]
        assert len(rows) == 1 or len(rows) * max(rows) <= 10


def test_exhaustive_finds_a_minimum_sufficient_subset(tiny_llama):
    adapter = HuggingFaceCausalLM(tiny_llama)
    found_sizes = set()
    for ids in model_sequences(tiny_llama, seed=5, n=3, length=9):
        check_exhaustive(tiny_llama, adapter, ids, found_sizes)
    assert len(found_sizes) >= 2


def check_exhaustive(model, adapter, ids, found_sizes):
    results = exhaustive_search(adapter, RationalizationProblem(ids), max_steps=9)
    for r in results:
        t, goal = r.target_position, int(ids[r.target_position])
        minimum = None
        for size in range(1, t + 1):
            for combo in itertools.combinations([c for c in range(t) if c != t - 1], size - 1):
                if int(lm_log_prob(model, ids, [t - 1, *combo], goal).argmax()) == goal:
                    minimum = size
                    break
            if minimum:
                break
        if minimum is None:
            assert not r.reached_argmax
            continue
        assert r.reached_argmax
        assert len(r.rationale) == minimum
        assert r.target_rationale[0] == t - 1
        assert int(lm_log_prob(model, ids, r.target_rationale, goal).argmax()) == goal
        found_sizes.add(minimum)
    # Greedy can never beat the exact minimum.
    greedy = greedy_search(adapter, RationalizationProblem(ids))
    for g, e in zip(greedy, results):
        if e.reached_argmax and g.reached_argmax:
            assert len(g.rationale) >= len(e.rationale)


def test_exhaustive_conditional_mixes_source_and_target(toy_seq2seq):
    src = torch.tensor([3, 1, 4, 1])
    tgt = torch.tensor([0, 5, 9, 2])
    results = exhaustive_search(toy_seq2seq, RationalizationProblem(tgt, src), max_steps=7)
    for r in results:
        t = r.target_position
        context = [("source", i) for i in range(4)] + [("target", j) for j in range(t - 1)]
        found = None
        for size in range(0, len(context) + 1):
            for combo in itertools.combinations(context, size):
                items = [("target", t - 1), *combo]
                lp = seq2seq_log_prob(toy_seq2seq, src, tgt,
                                      [p for s, p in items if s == "source"],
                                      [p for s, p in items if s == "target"])
                if int(lp.argmax()) == int(tgt[t]):
                    found = size + 1
                    break
            if found:
                break
        assert r.reached_argmax == (found is not None)
        if found:
            assert len(r.rationale) == found


def test_ordered_search_follows_the_order_and_stops_at_argmax(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.tensor([2, 4, 6, 8, 10, 1, 3])
    problem = RationalizationProblem(ids, targets=[6])
    order = [5, 0, 1, 2, 3, 4]
    (r,) = ordered_search(adapter, problem, {6: order})
    n = len(r.rationale)
    assert r.target_rationale == order[:n]
    goal = int(ids[6])
    reached = [int(lm_log_prob(tiny_gpt2, ids, order[:k], goal).argmax()) == goal
               for k in range(1, 7)]
    expected_n = reached.index(True) + 1 if any(reached) else 6
    assert n == expected_n
    with pytest.raises(ValueError, match="previous token"):
        ordered_search(adapter, problem, {6: [0, 5, 1, 2, 3, 4]})


def test_max_steps_caps_the_rationale(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(9))
    for r in greedy_search(adapter, RationalizationProblem(ids), max_steps=2):
        assert len(r.rationale) <= 2
        if len(r.rationale) == 2 and r.target_position > 2:
            assert r.reached_argmax == (r.steps[-1].prediction == r.goal_id)
