"""The core API checks its input at the door (one clear message, nothing computed) and gives
the model back in exactly the modes it received, module by module."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

from .conftest import VOCAB

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])


@pytest.mark.parametrize("ids, error, message", [
    (torch.tensor([5]), ValueError, r"target_ids has 1 token\(s\); at least 2"),
    (torch.tensor([], dtype=torch.long), ValueError, r"target_ids has 0 token\(s\)"),
    (IDS[None], ValueError, r"target_ids must be 1-D \[seq_len\], got shape \[1, 8\]"),
    (IDS.float(), TypeError, r"target_ids must hold integer token ids, got dtype"),
    ([3, 7, 1], TypeError, r"target_ids must be a torch.Tensor of token ids, got list"),
])
def test_problem_ids_are_checked(ids, error, message):
    with pytest.raises(error, match=message):
        RationalizationProblem(ids)


@pytest.mark.parametrize("targets, error, message", [
    ([3, 3], ValueError, r"target positions \[3\] are given more than once"),
    ([0], ValueError, r"target positions \[0\] are outside \[1, 7\]"),
    ([8], ValueError, r"target positions \[8\] are outside \[1, 7\]"),
    ([True], TypeError, r"targets must be integer positions"),
    ([1.5], TypeError, r"targets must be integer positions"),
])
def test_problem_targets_are_checked(targets, error, message):
    with pytest.raises(error, match=message):
        RationalizationProblem(IDS, targets=targets)


def test_integer_like_targets_are_accepted():
    problem = RationalizationProblem(IDS, targets=[torch.tensor(2), 5])
    assert problem.targets == [2, 5]


def test_ids_outside_the_vocabulary_or_positions_are_named(tiny_gpt2):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    with pytest.raises(ValueError, match=rf"target_ids contains id {VOCAB}, outside the "
                                         rf"vocabulary \[0, {VOCAB}\)"):
        rationalize(adapter, RationalizationProblem(torch.tensor([1, 2, VOCAB])))
    with pytest.raises(ValueError, match=r"target_ids contains id -1"):
        rationalize(adapter, RationalizationProblem(torch.tensor([1, -1, 2])))
    too_long = torch.ones(adapter.max_positions + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=rf"has {adapter.max_positions + 1} tokens but the "
                                         rf"model accepts at most {adapter.max_positions}"):
        rationalize(adapter, RationalizationProblem(too_long))


@pytest.mark.parametrize("method", ["integrated_gradient", "gradient_norm", "lrp"])
def test_gradient_methods_under_inference_mode_say_why(tiny_gpt2, method):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    with torch.inference_mode(), pytest.raises(ValueError, match=rf"^{method} needs gradients, "
                                                                 r"which torch.inference_mode"):
        rationalize(adapter, RationalizationProblem(IDS), method)
    with torch.no_grad():  # no_grad is fine: the gradient methods enable what they need
        assert rationalize(adapter, RationalizationProblem(IDS), method).rationales


def _dropouts(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]


@pytest.fixture
def dropout_gpt2(tiny_gpt2):
    """The tiny GPT-2 with dropout that matters (p = 0.5 everywhere)."""
    import copy

    model = copy.deepcopy(tiny_gpt2)
    for module in _dropouts(model):
        module.p = 0.5
    return model.eval()


def test_dropout_matters_in_that_model(dropout_gpt2):
    dropout_gpt2.train()
    with torch.no_grad():
        assert not torch.equal(dropout_gpt2(IDS[None]).logits, dropout_gpt2(IDS[None]).logits)


def test_every_module_gets_its_own_mode_back(dropout_gpt2):
    model = dropout_gpt2
    adapter = HuggingFaceCausalLM(model)
    reference = rationalize(adapter, RationalizationProblem(IDS)).rationales
    # Training with one dropout frozen in eval mode: it must stay in eval mode.
    model.train()
    _dropouts(model)[0].eval()
    before = [m.training for m in model.modules()]
    assert rationalize(adapter, RationalizationProblem(IDS)).rationales == reference
    assert [m.training for m in model.modules()] == before
    # Eval mode with one dropout left in train mode (MC dropout): the search still turns it
    # off, so rationales are deterministic, and it comes back in train mode.
    model.eval()
    _dropouts(model)[-1].train()
    before = [m.training for m in model.modules()]
    for _ in range(2):
        assert rationalize(adapter, RationalizationProblem(IDS)).rationales == reference
    assert [m.training for m in model.modules()] == before
