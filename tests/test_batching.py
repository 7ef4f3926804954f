"""How subsets are batched never changes what the search finds.

Tensor-built batches against a per-row reference, device-side scores against host-side ones,
the mask-free path against the masked one, cached prefixes against full rows, every grouping
and budget against each other, and out-of-memory backoff against an undisturbed run.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from sequential_rationales import RationalizationProblem, greedy_search
from sequential_rationales.adapters.fairseq import FairseqLanguageModel, FairseqTranslationModel
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import (
    SubsetScorer,
    batch_from_codes,
    build_batch,
    exhaustive_search,
    ordered_search,
    score_subsets,
    scores_from_logits,
)

from .conftest import VOCAB
from .fairseq_helpers import random_tokens, tiny_lm, tiny_translation


def reference_layout(problem, subset):
    """One row laid out by hand: (target positions, source positions) of a sorted subset."""
    s = problem.num_source
    return [c - s for c in sorted(subset) if c >= s], [c for c in sorted(subset) if c < s]


def test_batch_layout_matches_per_row_reference():
    rng = random.Random(0)
    problem = RationalizationProblem(torch.arange(10) % VOCAB, torch.arange(6) % VOCAB + 1)
    subsets = [tuple(rng.sample(range(problem.context_size(9)), rng.randint(1, 8)))
               for _ in range(30)]
    batch = build_batch(problem, subsets)
    for i, sub in enumerate(subsets):
        target, source = reference_layout(problem, sub)
        row_t = batch.target_positions[i][batch.target_mask[i]].tolist()
        row_s = batch.source_positions[i][batch.source_mask[i]].tolist()
        assert (row_t, row_s) == (target, source)
        # Left-padded targets (the predicting token last), right-padded sources.
        assert batch.target_mask[i, -len(target):].all() if target else True
        assert batch.source_mask[i, :len(source)].all()
        assert batch.target_ids[i][batch.target_mask[i]].tolist() == \
            problem.target_ids[target].tolist()
        assert batch.source_ids[i][batch.source_mask[i]].tolist() == \
            problem.source_ids[source].tolist()
    assert not batch.equal_lengths


def test_equal_lengths_is_claimed_only_when_true():
    problem = RationalizationProblem(torch.arange(8) % VOCAB, torch.arange(5) % VOCAB)
    same = torch.tensor([[0, 6, 9], [1, 5, 10], [3, 7, 12]])  # one source, two target tokens
    assert batch_from_codes(problem, same).equal_lengths
    assert not batch_from_codes(problem, torch.tensor([[0, 6, 9], [1, 2, 10]])).equal_lengths
    lm = RationalizationProblem(torch.arange(8) % VOCAB)
    batch = batch_from_codes(lm, torch.tensor([[0, 3], [2, 6]]))
    assert batch.equal_lengths and batch.target_mask.all()


def test_device_side_scores_equal_host_side(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.tensor([5, 3, 8, 1, 9, 2, 7, 4]) % VOCAB)
    codes = torch.tensor([sorted(c) for c in itertools.combinations(range(7), 3)])
    goals = torch.randint(0, VOCAB, (len(codes),), generator=torch.Generator().manual_seed(0))
    batch = batch_from_codes(problem, codes)
    with torch.no_grad():
        table = adapter.score(batch, goals)
        host = adapter.log_probs(batch).cpu()
    assert table.shape == (len(codes), 3) and table.dtype == torch.float64
    assert torch.allclose(table[:, 0].float(), host.gather(1, goals[:, None])[:, 0], atol=1e-6)
    assert table[:, 1].long().tolist() == host.argmax(1).tolist()
    assert torch.allclose(table[:, 2].float(), host.max(1).values, atol=1e-6)
    # The reduction itself, on a hand-made distribution.
    logits = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    reduced = scores_from_logits(logits, torch.tensor([2, 1]))
    log = torch.tensor([0.3, 0.6, 0.2, 0.5]).double().log()
    expected = torch.tensor([[log[0], 1, log[1]], [log[2], 0, log[3]]], dtype=torch.float64)
    assert torch.allclose(reduced, expected, atol=1e-6)

def test_score_subsets_of_mixed_lengths_equal_one_row_at_a_time(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.tensor([5, 3, 8, 1, 9, 2, 7, 4]) % VOCAB)
    subsets = [(6,), (2, 6), (0, 3, 6), (1, 6), (4,), (0, 1, 2, 3, 4)]
    goals = [7, 4, 1, 7, 2, 9]
    scores = score_subsets(adapter, problem, subsets, goals, max_tokens_per_batch=4)
    for i, (sub, goal) in enumerate(zip(subsets, goals)):
        with torch.no_grad():
            alone = adapter.log_probs(build_batch(problem, [sub]))[0]
        assert float(scores.goal_prob[i]) == pytest.approx(float(alone[goal].exp()), abs=1e-6)
        assert int(scores.prediction[i]) == int(alone.argmax())
        assert float(scores.prediction_prob[i]) == pytest.approx(float(alone.max().exp()),
                                                                 abs=1e-6)


def assert_mask_free_equals_masked(adapter, problem, codes):
    """Rows of equal lengths run without masks; the same rows flagged as padded run masked."""
    fast = batch_from_codes(problem, codes)
    assert fast.equal_lengths
    slow = build_batch(problem, [tuple(c) for c in codes.tolist()])
    slow.equal_lengths = False
    with torch.no_grad():
        assert torch.allclose(adapter.log_probs(fast), adapter.log_probs(slow), atol=1e-5)


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_mask_free_path_equals_masked_path(model_name, request):
    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    problem = RationalizationProblem(torch.tensor([5, 3, 8, 1, 9, 2, 7, 4, 6, 2]) % VOCAB)
    # Gaps in the positions: without the all-ones mask transformers would read packed sequences.
    codes = torch.tensor([[0, 4, 8], [1, 2, 8], [3, 6, 8], [0, 7, 8]])
    assert_mask_free_equals_masked(adapter, problem, codes)


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_cached_prefixes_equal_full_rows(model_name, request):
    """Every prefix grouping (one pass per prefix length, merged lengths, the cache of single
    tokens) gives the scores of the plain rows."""
    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    ids = torch.randint(0, VOCAB, (24,), generator=torch.Generator().manual_seed(1))
    problem = RationalizationProblem(ids)
    targets = [9, 17, 23]
    gen = torch.Generator().manual_seed(2)
    base = torch.tensor([sorted(torch.randperm(t - 1, generator=gen)[:3].tolist() + [t - 1])
                         for t in targets])
    owners, candidates = zip(*[(a, c) for a, t in enumerate(targets) for c in range(t)
                               if c not in base[a]])
    owners, candidates = torch.tensor(owners), torch.tensor(candidates)
    goals = ids[torch.tensor(targets)][owners]
    plain = SubsetScorer(adapter, problem, 64, reuse_prefix=False)
    expected = plain.extensions(base, owners, candidates, goals)
    for pass_cost in (0, 3, 10):
        scorer = SubsetScorer(adapter, problem, 64)
        scorer.pass_cost = pass_cost
        got = scorer.extensions(base, owners, candidates, goals)
        assert scorer.reuse_prefix and scorer._singleton_cache is not None
        assert torch.allclose(got[:, 0], expected[:, 0], atol=1e-5)
        assert torch.equal(got[:, 1], expected[:, 1])


def generated(model, seed, length=12):
    prefix = torch.randint(1, VOCAB, (1, 3), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.generate(prefix, max_length=length, min_length=length, do_sample=False,
                              pad_token_id=0)[0]


def summary(results):
    return [(r.rationale, r.reached_argmax, [round(s.true_token_prob, 4) for s in r.steps])
            for r in results]


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_budget_and_prefix_reuse_never_change_lm_rationales(model_name, request):
    model = request.getfixturevalue(model_name)
    adapter = HuggingFaceCausalLM(model)
    random_ids = torch.randint(0, VOCAB, (10,), generator=torch.Generator().manual_seed(4))
    for ids in (generated(model, 0), random_ids):
        problem = RationalizationProblem(ids)
        # A huge budget never splits a step into passes by prefix length; a tiny one always does.
        expected = summary(greedy_search(adapter, problem, max_tokens_per_batch=10**6))
        for budget in (4, 64, None):
            assert summary(greedy_search(adapter, problem, max_tokens_per_batch=budget)) == \
                expected
    assert any(len(r[0]) > 3 for r in expected)  # targets that needed several steps


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
def test_slices_of_targets_and_capped_rows_never_change_rationales(model_name, request,
                                                                   monkeypatch):
    # Tiny limits make every step propose its candidates a few targets at a time and run a
    # few rows per pass; the rationales must be those of one slice and unbounded passes.
    import sequential_rationales.search as search

    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    ids = torch.randint(0, VOCAB, (12,), generator=torch.Generator().manual_seed(6))
    problem = RationalizationProblem(ids)
    expected = summary(greedy_search(adapter, problem))
    monkeypatch.setattr(search, "_ROWS_ELEMENTS", 30)  # 30 // 12: two targets per slice
    monkeypatch.setattr(search, "_HOST_LOGITS", 3 * VOCAB)  # three rows per pass
    assert summary(greedy_search(adapter, problem)) == expected
    assert search.SubsetScorer(adapter, problem).max_rows == 3


def test_grouping_and_budget_never_change_conditional_rationales(toy_seq2seq):
    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        problem = RationalizationProblem(torch.randint(0, VOCAB, (7,), generator=gen),
                                         torch.randint(0, VOCAB, (5,), generator=gen))
        expected = summary(greedy_search(toy_seq2seq, problem, max_tokens_per_batch=10**6,
                                         group_by_length=False))
        for budget, grouped in itertools.product((3, 17, None), (True, False)):
            got = greedy_search(toy_seq2seq, problem, max_tokens_per_batch=budget,
                                group_by_length=grouped)
            assert summary(got) == expected
        small = exhaustive_search(toy_seq2seq, problem, max_steps=3, max_tokens_per_batch=7)
        large = exhaustive_search(toy_seq2seq, problem, max_steps=3, group_by_length=False)
        assert summary(small) == summary(large)


def test_fairseq_fast_paths_equal_masked_paths():
    """The plugin skips masks when no row is padded; that must not change a prediction."""
    gen = torch.Generator().manual_seed(3)
    lm = FairseqLanguageModel(tiny_lm(seed=1)[0])
    problem = RationalizationProblem(random_tokens(1, 10, gen)[0])
    codes = torch.tensor([[0, 4, 8], [1, 2, 8], [3, 6, 8]])
    assert_mask_free_equals_masked(lm, problem, codes)
    model = tiny_translation(seed=2)[0]
    source = random_tokens(1, 6, gen)[0]
    problem = RationalizationProblem(random_tokens(1, 7, gen)[0], source[:-1])
    adapter = FairseqTranslationModel(model, source_length=len(source))
    codes = torch.tensor([[0, 2, 8, 10], [1, 4, 6, 10], [0, 3, 9, 10]])  # 2 source, 2 target
    assert_mask_free_equals_masked(adapter, problem, codes)


class OutOfMemoryAbove:
    """Wraps an adapter; raises CUDA's out-of-memory error for batches above ``limit`` tokens."""

    def __init__(self, adapter, limit):
        self.adapter, self.limit, self.failures = adapter, limit, 0
        self.vocab_size, self.max_positions = adapter.vocab_size, adapter.max_positions
        self.is_conditional, self.device = adapter.is_conditional, adapter.device

    def _check(self, batch):
        tokens = batch.target_ids.numel() + (0 if batch.source_ids is None
                                             else batch.source_ids.numel())
        if tokens > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError(f"{tokens} tokens")

    def log_probs(self, batch, embeddings=None):
        self._check(batch)
        return self.adapter.log_probs(batch, embeddings)

    def embed(self, batch):
        return self.adapter.embed(batch)

    def attentions(self, batch):
        return self.adapter.attentions(batch)


def test_out_of_memory_halves_the_batch_with_the_same_results(tiny_gpt2, toy_seq2seq):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.randint(0, VOCAB, (10,),
                                                   generator=torch.Generator().manual_seed(4)))
    expected = summary(greedy_search(adapter, problem))
    flaky = OutOfMemoryAbove(adapter, limit=40)
    with pytest.warns(RuntimeWarning, match="out of memory"):
        assert summary(greedy_search(flaky, problem, max_tokens_per_batch=4096)) == expected
    assert flaky.failures > 0
    gen = torch.Generator().manual_seed(7)
    problem = RationalizationProblem(torch.randint(0, VOCAB, (6,), generator=gen),
                                     torch.randint(0, VOCAB, (4,), generator=gen))
    orders = {t: [problem.previous_code(t)] + [c for c in range(problem.context_size(t))
                                               if c != problem.previous_code(t)]
              for t in problem.targets}
    expected = summary(ordered_search(toy_seq2seq, problem, orders))
    with pytest.warns(RuntimeWarning):
        got = ordered_search(OutOfMemoryAbove(toy_seq2seq, limit=12), problem, orders,
                             max_tokens_per_batch=1000)
    assert summary(got) == expected


def test_out_of_memory_on_a_single_row_is_raised(tiny_gpt2):
    problem = RationalizationProblem(generated(tiny_gpt2, 0))
    with pytest.raises(torch.OutOfMemoryError):
        greedy_search(OutOfMemoryAbove(HuggingFaceCausalLM(tiny_gpt2), limit=0), problem)


def test_nan_model_is_a_clear_error():
    model = tiny_lm(seed=0)[0]
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    problem = RationalizationProblem(random_tokens(1, 6, torch.Generator().manual_seed(0))[0])
    with pytest.raises(ValueError, match="NaN"):
        greedy_search(FairseqLanguageModel(model), problem)
