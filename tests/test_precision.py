"""``precision="bf16-exact"``: greedy and exhaustive rows screened by a bfloat16 twin, decided
in float32. The rationales must be those of float32 search on random and trained models, on
near-ties below bfloat16's resolution, and when the screen's errors are made larger than its
margin on purpose (the margin must widen); plain ``bf16`` stays available; ``auto`` picks."""

from __future__ import annotations

import pytest
import torch

import sequential_rationales.search as search
from sequential_rationales import RationalizationProblem, greedy_search, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import Screen, exhaustive_search, resolve_precision

from .conftest import VOCAB

transformers = pytest.importorskip("transformers")


def positions(rationales) -> list[list[tuple[str, int]]]:
    """Each rationale's context tokens (stream, position), in the order added."""
    return [[(c.stream, c.position) for c in r.rationale] for r in rationales]


def probabilities(rationales) -> list[list[float]]:
    return [[s.true_token_prob for s in r.steps] for r in rationales]


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_exact_gives_the_float32_rationales(model_name, seed, request):
    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    ids = torch.randint(0, VOCAB, (14,), generator=torch.Generator().manual_seed(seed))
    problem = RationalizationProblem(ids)
    same_rationales(greedy_search(adapter, problem, precision="bf16-exact"),
                    greedy_search(adapter, problem, precision="fp32"))
    assert adapter.with_dtype(torch.bfloat16).dtype == torch.bfloat16
    assert adapter.with_dtype(torch.bfloat16) is adapter.with_dtype(torch.bfloat16)  # kept


class Noisy:
    """A stand-in twin: the float32 adapter's scores with a seeded error of up to ``size``
    nats on ``log p(goal)``, larger than the screen's first margin: near-ties flip."""

    def __init__(self, adapter: HuggingFaceCausalLM, size: float) -> None:
        self.adapter, self.size = adapter, size
        self.generator = torch.Generator().manual_seed(0)
        for name in ("vocab_size", "max_positions", "is_conditional", "device", "dtype"):
            setattr(self, name, getattr(adapter, name))

    def score(self, batch, goals):
        scores = self.adapter.score(batch, goals).clone()
        noise = (torch.rand(len(scores), generator=self.generator) * 2 - 1) * self.size
        scores[:, 0] += noise.to(scores.dtype)
        return scores

    def log_probs(self, batch, embeddings=None):  # unused: score comes first
        return self.adapter.log_probs(batch, embeddings)


def test_errors_beyond_the_margin_widen_it_and_keep_the_float32_choice(tiny_gpt2, monkeypatch):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.randint(0, VOCAB, (16,), generator=torch.Generator().manual_seed(7))
    problem = RationalizationProblem(ids)
    exact = greedy_search(adapter, problem)
    screens: list[Screen] = []
    real_init = Screen.__init__

    def record(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        screens.append(self)

    monkeypatch.setattr(Screen, "__init__", record)
    monkeypatch.setattr(HuggingFaceCausalLM, "with_dtype", lambda self, dtype: Noisy(self, 0.05))
    assert positions(greedy_search(adapter, problem, precision="bf16-exact")) == (
        positions(exact))
    (screen,) = screens
    assert screen.largest_error > 0.05 / 4 and screen.delta >= 4 * screen.largest_error
    assert 0 < screen.rescored <= screen.scored and screen.delta > 0.05  # widened
    # The same errors decide differently without the float32 re-scoring: the test has teeth.
    noisy = Noisy(adapter, 0.05)
    assert positions(greedy_search(noisy, problem)) != positions(exact)


def test_plain_bf16_runs_on_the_twin(tiny_llama):
    adapter = HuggingFaceCausalLM(tiny_llama)
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9, 4]))
    plain = rationalize(adapter, problem, "greedy", precision="bf16")
    twin = rationalize(adapter.with_dtype(torch.bfloat16), problem, "greedy")
    assert positions(plain.rationales) == positions(twin.rationales)
    baseline = rationalize(adapter, problem, "last_attention", precision="bf16")
    assert len(baseline.rationales) == 5


@pytest.mark.parametrize("call, message", [
    (lambda a, p: rationalize(a, p, "greedy", precision="half"), "unknown precision 'half'"),
    (lambda a, p: exhaustive_search(a, p, 2, precision="fp16"), "unknown precision 'fp16'"),
])
def test_precision_refusals_are_one_sentence(tiny_gpt2, call, message):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    with pytest.raises(ValueError, match=message):
        call(adapter, RationalizationProblem(torch.tensor([3, 5, 7, 2])))


def test_an_adapter_without_a_twin_is_refused(tiny_gpt2):
    without = Noisy(HuggingFaceCausalLM(tiny_gpt2), 0.0)  # has no with_dtype
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2]))
    with pytest.raises(ValueError, match="needs an adapter with a bfloat16 twin"):
        greedy_search(without, problem, precision="bf16-exact")


def same_rationales(got, expected) -> None:
    """Positions in the order added, the stop, and the float32 probabilities of each step."""
    assert positions(got) == positions(expected)
    assert [r.reached_argmax for r in got] == [r.reached_argmax for r in expected]
    for g, e in zip(probabilities(got), probabilities(expected), strict=True):
        assert g == pytest.approx(e, rel=1e-5, abs=1e-9)
    assert [[s.prediction for s in r.steps] for r in got] == (
        [[s.prediction for s in r.steps] for r in expected])


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_exhaustive_bf16_exact_gives_the_float32_rationales(model_name, seed, request):
    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    ids = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(seed))
    problem = RationalizationProblem(ids)
    screening: dict = {}
    screened = exhaustive_search(adapter, problem, 4, precision="bf16-exact",
                                 screening=screening)
    same_rationales(screened, exhaustive_search(adapter, problem, 4, precision="fp32"))
    assert [[s.subset for s in r.steps] for r in screened] == (
        [[s.subset for s in r.steps] for r in exhaustive_search(adapter, problem, 4)])
    assert 0 < screening["rescored"] <= screening["rows"]


def test_exhaustive_errors_beyond_the_margin_search_the_size_again(tiny_gpt2, monkeypatch):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    ids = torch.randint(0, VOCAB, (9,), generator=torch.Generator().manual_seed(5))
    problem = RationalizationProblem(ids)
    exact = exhaustive_search(adapter, problem, 3, precision="fp32")
    monkeypatch.setattr(HuggingFaceCausalLM, "with_dtype", lambda self, dtype: Noisy(self, 0.05))
    screening: dict = {}
    same_rationales(exhaustive_search(adapter, problem, 3, precision="bf16-exact",
                                      screening=screening), exact)
    assert screening["margin"] > 0.05 and screening["largest_error"] > 0.05 / 4  # widened


def trained_gpt2(seed: int):
    """A tiny GPT-2 trained briefly on sequences where token t repeats token t - 3 plus one:
    its rationales are far from random, with clear winners and close runners-up."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0, loss_type="ForCausalLM")
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(60):
        start = torch.randint(0, VOCAB, (32, 3), generator=generator)
        ids = torch.cat([(start + k) % VOCAB for k in range(5)], 1)
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), generator


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_exact_on_trained_models(seed):
    model, generator = trained_gpt2(seed)
    adapter = HuggingFaceCausalLM(model)
    for _ in range(3):
        start = torch.randint(0, VOCAB, (3,), generator=generator)
        ids = torch.cat([(start + k) % VOCAB for k in range(4)])
        ids[torch.randint(0, len(ids), (2,), generator=generator)] = 0  # some noise
        problem = RationalizationProblem(ids)
        same_rationales(greedy_search(adapter, problem, precision="bf16-exact"),
                        greedy_search(adapter, problem, precision="fp32"))
        small = RationalizationProblem(ids[:12])
        screening: dict = {}
        same_rationales(exhaustive_search(adapter, small, 3, precision="bf16-exact",
                                          screening=screening),
                        exhaustive_search(adapter, small, 3, precision="fp32"))
        assert screening["rescored"] < screening["rows"] / 2  # most rows decided by the screen


def near_tie_gpt2(tiny_gpt2, scale: float):
    """``tiny_gpt2`` with its position embeddings shrunk by ``scale``: the same token at two
    positions then scores almost alike (``scale=0``: exactly alike, a tie broken by position)."""
    import copy

    model = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        model.transformer.wpe.weight.mul_(scale)
    return model


@pytest.mark.parametrize("scale", [0.0, 1e-4, 1e-3])
def test_near_ties_below_bfloat16_resolution(tiny_gpt2, scale):
    adapter = HuggingFaceCausalLM(near_tie_gpt2(tiny_gpt2, scale))
    ids = torch.tensor([3, 5, 3, 7, 5, 3, 9, 7, 3, 5, 2, 3])  # repeated tokens: near-ties
    problem = RationalizationProblem(ids)
    exact = greedy_search(adapter, problem, precision="fp32")
    same_rationales(greedy_search(adapter, problem, precision="bf16-exact"), exact)
    small = RationalizationProblem(ids[:8])
    same_rationales(exhaustive_search(adapter, small, 3, precision="bf16-exact"),
                    exhaustive_search(adapter, small, 3, precision="fp32"))
    if scale:  # the ties are real for float32 but below bfloat16's resolution: teeth
        assert positions(greedy_search(adapter, problem, precision="bf16")) != positions(exact)


def test_ordered_methods_run_in_full_precision_under_bf16_exact(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9, 4, 1]))
    screened = rationalize(adapter, problem, "last_attention", precision="bf16-exact")
    exact = rationalize(adapter, problem, "last_attention", precision="fp32")
    same_rationales(screened.rationales, exact.rationales)
    assert screened.extra == {"precision": "fp32"}
    greedy = rationalize(adapter, problem, "greedy", precision="bf16-exact")
    assert greedy.extra["precision"] == "bf16-exact"
    assert greedy.extra["screening"]["rescored"] <= greedy.extra["screening"]["rows"]


def test_auto_screens_where_bfloat16_is_fast(tiny_gpt2, monkeypatch):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    assert resolve_precision(adapter) == "fp32"  # too small to gain on a CPU
    monkeypatch.setattr(search, "CPU_SCREEN_PARAMETERS", 1000)
    assert resolve_precision(adapter) == "bf16-exact"
    assert resolve_precision(adapter.with_dtype(torch.bfloat16)) == "fp32"  # own precision
    assert resolve_precision(adapter, "bf16") == "bf16"
    monkeypatch.setattr(tiny_gpt2, "hf_device_map", {"": "cpu"}, raising=False)
    assert resolve_precision(adapter) == "fp32"  # spread by device_map: no twin is made
    monkeypatch.delattr(tiny_gpt2, "hf_device_map")
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9]))
    assert rationalize(adapter, problem).extra["precision"] == "bf16-exact"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert resolve_precision(adapter) == "fp32"  # no bfloat16 instructions
    assert rationalize(adapter, problem).extra["precision"] == "fp32"


def test_the_twin_follows_changed_weights(tiny_gpt2):
    import copy

    model = copy.deepcopy(tiny_gpt2)
    adapter = HuggingFaceCausalLM(model)
    twin = adapter.with_dtype(torch.bfloat16)
    assert HuggingFaceCausalLM(model).with_dtype(torch.bfloat16).model is twin.model  # shared
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    model(input_ids=torch.tensor([[3, 5, 7]]), labels=torch.tensor([[3, 5, 7]])).loss.backward()
    optimizer.step()  # weights changed in place: the copy is stale
    fresh = adapter.with_dtype(torch.bfloat16)
    assert fresh is not twin and fresh.model is not twin.model
    for old, new in zip(model.parameters(), fresh.model.parameters(), strict=True):
        assert torch.equal(old.to(torch.bfloat16), new)
    assert adapter.with_dtype(torch.bfloat16) is fresh  # unchanged since: kept
