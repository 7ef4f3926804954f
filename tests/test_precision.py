"""``precision="bf16-exact"``: greedy candidates screened by a bfloat16 twin, decided in float32.
The rationales must be those of float32 search, also when the screen's errors are made larger
than its margin on purpose (the margin must widen), and plain ``bf16`` stays available."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, greedy_search, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import Screen

from .conftest import VOCAB

transformers = pytest.importorskip("transformers")


def positions(rationales) -> list[list[int]]:
    return [[c.position for c in r.rationale] for r in rationales]


def probabilities(rationales) -> list[list[float]]:
    return [[s.true_token_prob for s in r.steps] for r in rationales]


@pytest.mark.parametrize("model_name", ["tiny_gpt2", "tiny_llama"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_exact_gives_the_float32_rationales(model_name, seed, request):
    adapter = HuggingFaceCausalLM(request.getfixturevalue(model_name))
    ids = torch.randint(0, VOCAB, (14,), generator=torch.Generator().manual_seed(seed))
    problem = RationalizationProblem(ids)
    exact = greedy_search(adapter, problem)
    screened = greedy_search(adapter, problem, precision="bf16-exact")
    assert positions(screened) == positions(exact)
    assert [r.reached_argmax for r in screened] == [r.reached_argmax for r in exact]
    for got, expected in zip(probabilities(screened), probabilities(exact), strict=True):
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-9)  # decided in float32
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
    (lambda a, p: rationalize(a, p, "exhaustive", precision="bf16-exact"),
     "implemented for greedy search"),
    (lambda a, p: rationalize(a, p, "greedy", precision="half"), "unknown precision 'half'"),
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
