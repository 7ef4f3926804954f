"""The ``iba`` ordering: the bottleneck and its capacity against their definitions, a token that
a trained model copies ranked first where the prediction depends on it (language model and
translation), no state left in the model, seeded determinism, scores independent of chunking
and of the adapter's layout, and the method through ``rationalize`` and the seed functions on
every model family."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from huggingface.rationalization import baseline_rationalize_lm
from sequential_rationales import BASELINE_METHODS, RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq
from sequential_rationales.baselines import importance_order
from sequential_rationales.iba import _on_input, bottleneck, capacity, iba_scores
from sequential_rationales.perturbation import occlusion_scores
from sequential_rationales.search import build_batch, ordered_search
from sequential_rationales.sequences import conditional_problem

from .conftest import VOCAB
from .fairseq_helpers import REPO_ROOT, random_tokens, tiny_lm, tiny_translation

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])
COPIED = 2  # the trained models copy the token at this (source) position


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and the training below keeps the file quick."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(model, batches, steps: int = 200, lr: float = 1e-2):
    """Adam on ``batches(generator) -> loss``; returns the model in eval mode."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss = batches(model, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


@pytest.fixture(scope="module")
def copy_gpt2():
    """A tiny GPT-2 whose prediction at position 7 copies the token at position 2."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB,
                                       n_positions=32, bos_token_id=0, eos_token_id=0,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))

    def batches(model, generator):
        x = torch.randint(2, VOCAB, (64, 7), generator=generator)
        logits = model(input_ids=x).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits, x[:, COPIED])

    return train(model, batches, steps=200)


def copy_sequences(count: int, seed: int = 1) -> torch.Tensor:
    x = torch.randint(2, VOCAB, (count, 8), generator=torch.Generator().manual_seed(seed))
    x[:, -1] = x[:, COPIED]
    return x


def rank_of(scores: torch.Tensor, code: int, prev: int) -> int:
    """How many codes other than the previous token score above ``code``."""
    others = scores.clone()
    others[prev] = -float("inf")
    return int((others > others[code]).sum())


# -- the bottleneck -----------------------------------------------------------------------------


def test_an_open_bottleneck_is_the_identity(tiny_gpt2):
    gen = torch.Generator().manual_seed(0)
    hidden, noise = torch.randn(3, 5, 32, generator=gen), torch.randn(3, 5, 32, generator=gen)
    mu, sigma = torch.randn(32, generator=gen), torch.rand(32, generator=gen) + 0.5
    assert torch.equal(bottleneck(hidden, torch.ones(3, 5), mu, sigma, noise), hidden)
    closed = bottleneck(hidden, torch.zeros(3, 5), mu, sigma, noise)
    torch.testing.assert_close(closed, mu + sigma * noise)

    adapter = HuggingFaceCausalLM(tiny_gpt2)
    batch = build_batch(RationalizationProblem(IDS), [range(7), range(4)])
    expected = adapter.logits(batch)
    blocks = adapter.layers()["target"]

    def run(lam: float) -> torch.Tensor:
        def fn(h):
            return bottleneck(h, torch.full(h.shape[:2], lam), mu, sigma,
                              torch.randn(h.shape, generator=gen))
        with _on_input(blocks[0], fn), _on_input(blocks[1], fn):
            return adapter.logits(batch)

    assert torch.equal(run(1.0), expected)
    assert not torch.allclose(run(0.0), expected)  # the hooks do reach the model
    assert torch.equal(adapter.logits(batch), expected)  # and are gone afterwards


def test_an_open_bottleneck_is_the_identity_in_the_fairseq_plugin():
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel

    model, _, _ = tiny_lm(seed=3)
    adapter = FairseqLanguageModel(model)
    ids = torch.cat([torch.tensor([2]), random_tokens(1, 6, torch.Generator())[0]])
    batch = build_batch(RationalizationProblem(ids), [range(7), range(3)])
    expected = adapter.logits(batch)
    layer = adapter.layers()["target"][1]
    for lam, same in [(1.0, True), (0.0, False)]:
        def fn(h, lam=lam):  # time-major [L, N, D] states
            return bottleneck(h, torch.full(h.shape[:2], lam), h.mean((0, 1)), h.std((0, 1)),
                              torch.randn(h.shape))
        with _on_input(layer, fn):
            assert torch.equal(adapter.logits(batch), expected) == same
    assert "forward_with_masks" not in vars(layer)  # the instance's wrapper is removed


def test_capacity_is_the_kl_divergence_of_the_noised_state():
    gen = torch.Generator().manual_seed(1)
    state, mu = torch.randn(6, 8, generator=gen), torch.randn(8, generator=gen)
    sigma = torch.rand(8, generator=gen) + 0.3
    alpha = torch.linspace(-6, 8, 6)
    lam = torch.sigmoid(alpha)[:, None]
    noised = Normal(lam * state + (1 - lam) * mu, (1 - lam) * sigma)
    expected = kl_divergence(noised, Normal(mu, sigma)).sum(-1)
    r2 = ((state - mu) / sigma).square().sum(-1)
    torch.testing.assert_close(capacity(alpha, r2, 8), expected, rtol=1e-4, atol=1e-5)


# -- known answers ------------------------------------------------------------------------------


def test_the_copied_token_ranks_first_in_a_language_model(copy_gpt2):
    adapter = HuggingFaceCausalLM(copy_gpt2)
    for ids in copy_sequences(10):
        problem = RationalizationProblem(ids, targets=[7])
        assert int(adapter.logits(build_batch(problem, [range(7)])).argmax()) == ids[COPIED]
        scores = iba_scores(adapter, problem, [7])[7]
        assert rank_of(scores, COPIED, problem.previous_code(7)) == 0, scores
    result = rationalize(adapter, problem, "iba")
    assert result.rationales[0].target_rationale[:2] == [6, COPIED]


@pytest.fixture(scope="module")
def copy_bart():
    """A tiny BART model whose first target token copies source token 2."""
    from .test_hf_seq2seq import EOS, tiny_model

    def batches(model, generator):
        src = torch.cat([torch.randint(3, 20, (32, 5), generator=generator),
                         torch.full((32, 1), EOS)], 1)
        start = torch.full((32, 1), model.config.decoder_start_token_id)
        logits = model(input_ids=src, decoder_input_ids=start).logits[:, -1]
        return torch.nn.functional.cross_entropy(logits, src[:, COPIED])

    return train(tiny_model("bart", seed=0), batches, steps=200)


def test_the_copied_source_token_ranks_first_in_a_translation_model(copy_bart):
    from .test_hf_seq2seq import EOS

    gen = torch.Generator().manual_seed(3)
    ranks = []
    for _ in range(10):
        src = torch.cat([torch.randperm(17, generator=gen)[:5] + 3, torch.tensor([EOS])])
        tgt = torch.tensor([copy_bart.config.decoder_start_token_id, int(src[COPIED]), 7])
        adapter = HuggingFaceSeq2Seq(copy_bart, len(src))
        problem = conditional_problem(adapter, src, tgt)
        # Only where the answer does depend on the token: leaving it out costs > 1 nat.
        if occlusion_scores(adapter, problem, [1])[1][COPIED] > 1:
            scores = iba_scores(adapter, problem, [1])[1]
            assert len(scores) == problem.context_size(1) == 6  # 5 source tokens, no </s>
            ranks.append(rank_of(scores, COPIED, problem.previous_code(1)))
    assert len(ranks) >= 7 and ranks == [0] * len(ranks)


# -- no state left, seeded ----------------------------------------------------------------------


def test_the_model_is_left_as_it_was_and_scores_are_seeded(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(IDS)
    batch = build_batch(problem, [range(8)])
    before = adapter.logits(batch)
    tiny_gpt2.train()  # dropout is 0: the same outputs, and the mode must come back
    tiny_gpt2.transformer.wte.weight.requires_grad_(False)
    flags = [p.requires_grad for p in tiny_gpt2.parameters()]

    def hooks():  # other tests share this model: compare with its hooks before the run
        return [(dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in tiny_gpt2.modules()]

    hooks_before = hooks()
    try:
        scores = iba_scores(adapter, problem, problem.targets, seed=0)
        assert tiny_gpt2.training
        assert [p.requires_grad for p in tiny_gpt2.parameters()] == flags
        assert all(p.grad is None for p in tiny_gpt2.parameters())
        assert hooks() == hooks_before
    finally:
        tiny_gpt2.transformer.wte.weight.requires_grad_(True)
        tiny_gpt2.eval()
    assert torch.equal(adapter.logits(batch), before)
    again = iba_scores(adapter, problem, problem.targets, seed=0)
    other = iba_scores(adapter, problem, problem.targets, seed=1)
    assert all(torch.equal(scores[t], again[t]) for t in problem.targets)
    assert any(not torch.equal(scores[t], other[t]) for t in problem.targets)
    assert [len(scores[t]) for t in problem.targets] == list(problem.targets)


def test_scores_do_not_depend_on_chunking_or_the_adapter_layout(tiny_gpt2):
    problem = RationalizationProblem(IDS, targets=[2, 5, 7])
    whole = iba_scores(HuggingFaceCausalLM(tiny_gpt2), problem, problem.targets)
    chunked = iba_scores(HuggingFaceCausalLM(tiny_gpt2), problem, problem.targets,
                         max_tokens_per_batch=24)  # one row per pass
    # Target rows scattered to their positions with a mask, not left-padded sparse rows.
    masked = iba_scores(HuggingFaceCausalLM(tiny_gpt2, use_position_ids=False), problem,
                        problem.targets)
    for t in problem.targets:
        torch.testing.assert_close(chunked[t], whole[t], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(masked[t], whole[t], rtol=1e-4, atol=1e-5)


def test_refusals(tiny_gpt2, toy_seq2seq):
    problem = RationalizationProblem(IDS)
    with pytest.raises(ValueError, match="layers()"):
        iba_scores(toy_seq2seq, RationalizationProblem(IDS[:4], IDS[4:]), [1])
    with pytest.raises(ValueError, match="out of range"):
        iba_scores(HuggingFaceCausalLM(tiny_gpt2), problem, [3], layer=2)
    with pytest.raises(ValueError, match="steps"):
        iba_scores(HuggingFaceCausalLM(tiny_gpt2), problem, [3], steps=0)
    with pytest.raises(ValueError, match="layers()"):
        rationalize(toy_seq2seq, RationalizationProblem(IDS[:4], IDS[4:]), "iba")
    model = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        rationalize(HuggingFaceCausalLM(model), problem, "iba")


# -- every model family, through rationalize ----------------------------------------------------


def _family(name: str, tiny_gpt2, tiny_llama):
    """An adapter and a problem of model family ``name``."""
    gen = torch.Generator().manual_seed(4)
    if name in ("gpt2", "llama"):
        model = tiny_gpt2 if name == "gpt2" else tiny_llama
        return HuggingFaceCausalLM(model), RationalizationProblem(IDS)
    if name in ("marian", "bart"):
        from .test_hf_seq2seq import sentence_pair, tiny_model

        model = tiny_model(name, seed=5)
        src, tgt = sentence_pair(model, seed=6, source_len=5, target_len=4)
        adapter = HuggingFaceSeq2Seq(model, len(src))
        return adapter, conditional_problem(adapter, src, tgt)
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import (
        FairseqLanguageModel,
        FairseqTranslationModel,
    )

    if name == "fairseq_lm":
        model, _, _ = tiny_lm(seed=6)
        ids = torch.cat([torch.tensor([model.decoder.dictionary.eos()]),
                         random_tokens(1, 6, gen)[0]])
        return FairseqLanguageModel(model), RationalizationProblem(ids)
    model, _, _ = tiny_translation(seed=5, normalize_before=True)
    eos = model.decoder.dictionary.eos()
    src = torch.cat([random_tokens(1, 5, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 4, gen)[0]])
    adapter = FairseqTranslationModel(model, len(src))
    return adapter, conditional_problem(adapter, src, tgt)


@pytest.mark.parametrize("name", ["gpt2", "llama", "marian", "bart", "fairseq_lm",
                                  "fairseq_translation"])
def test_rationalize_runs_on_every_family(name, tiny_gpt2, tiny_llama):
    adapter, problem = _family(name, tiny_gpt2, tiny_llama)
    scores = iba_scores(adapter, problem, problem.targets, seed=3)
    result = rationalize(adapter, problem, "iba", seed=3)
    assert "iba" in BASELINE_METHODS and result.method == "iba"
    orders = {t: importance_order(problem, t, scores[t]) for t in problem.targets}
    expected = ordered_search(adapter, problem, orders, 1024, None)
    assert [r.rationale for r in result.rationales] == [r.rationale for r in expected]
    for r in result.rationales:
        t = r.target_position
        codes = [problem.num_source + c.position if c.stream == "target" else c.position
                 for c in r.rationale]
        assert codes[0] == problem.previous_code(t) and len(set(codes)) == len(codes)
        assert all(0 <= c < problem.context_size(t) for c in codes)
        assert r.reached_argmax or len(codes) == problem.context_size(t)
        assert bool(torch.isfinite(scores[t]).all()) and bool((scores[t] >= 0).all())


# -- the seed functions -------------------------------------------------------------------------


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def test_hugging_face_seed_functions(tiny_gpt2):
    from huggingface import rationalization

    from .test_hf_seq2seq import Tokenizer, sentence_pair, tiny_model

    rationales, log = baseline_rationalize_lm(tiny_gpt2, IDS, CharTokenizer(), "iba",
                                              verbose=False, start_step=2)
    assert log["method"] == "iba" and [r[0] for r in rationales] == list(range(2, 7))
    model = tiny_model("bart", seed=7)
    src, tgt = sentence_pair(model, seed=8, source_len=4, target_len=3)
    sources, targets, log = rationalization.baseline_rationalize_conditional_model(
        model, src, tgt, Tokenizer(), "iba", verbose=False)
    assert [g[0] for g in targets] == list(range(len(tgt) - 1)) and log["method"] == "iba"
    assert all(0 <= p < len(src) - 1 for s in sources for p in s)


class Hub:
    """The one attribute of a fairseq hub interface that the seed functions use."""

    def __init__(self, model):
        self.models = [model]


def test_fairseq_seed_functions():
    pytest.importorskip("fairseq")
    sys.path.insert(0, str(REPO_ROOT / "fairseq"))
    fairseq_rationalization = pytest.importorskip("rationalization")
    model, _, _ = tiny_lm(seed=6)
    eos = model.decoder.dictionary.eos()
    ids = torch.cat([torch.tensor([eos]), random_tokens(1, 5, torch.Generator())[0]])
    rationales, log = fairseq_rationalization.baseline_rationalize_lm(Hub(model), ids, "iba",
                                                                      verbose=False)
    assert [r[0] for r in rationales] == list(range(len(ids) - 1)) and log["method"] == "iba"
    model, _, _ = tiny_translation(seed=5)
    gen = torch.Generator().manual_seed(2)
    src = torch.cat([random_tokens(1, 6, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 4, gen)[0]])
    sources, targets, log = fairseq_rationalization.baseline_rationalize_conditional_model(
        Hub(model), src, tgt, "iba", verbose=False)
    assert [g[0] for g in targets] == list(range(len(tgt) - 1)) and log["method"] == "iba"
    assert all(0 <= p < len(src) - 1 for s in sources for p in s)
