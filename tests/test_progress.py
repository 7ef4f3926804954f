"""Progress of greedy search within one sequence: a report after every step (the core), a line
on stderr, and the ``rationalize`` command's bar moved step by step."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, greedy_search, rationalize
from sequential_rationales_integrations.rationalize_cli import StepReport

from .test_rationalize_cli import TEXTS, run, save_tiny_lm

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def adapter(lm_dir):
    from transformers import AutoModelForCausalLM

    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

    return HuggingFaceCausalLM(AutoModelForCausalLM.from_pretrained(lm_dir).eval())


def test_greedy_reports_after_every_step(adapter):
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9, 4, 6, 8, 10, 11]))
    calls = []
    rationales = greedy_search(adapter, problem, progress=lambda done, total: calls.append(
        (done, total)))
    total = len(problem.targets)
    # One call per step: as many as the longest rationale has tokens.
    assert len(calls) == max(len(r.rationale) for r in rationales)
    assert all(t == total for _, t in calls) and calls[-1] == (total, total)
    done = [d for d, _ in calls]
    assert done == sorted(done)
    # After step k every target whose rationale has at most k tokens is finished.
    for step, (finished, _) in enumerate(calls, 1):
        assert finished == sum(len(r.rationale) <= step for r in rationales)
    quiet = greedy_search(adapter, problem)
    assert [r.rationale for r in quiet] == [r.rationale for r in rationales]


def test_a_line_on_stderr_when_asked(adapter, capsys):
    problem = RationalizationProblem(torch.tensor([3, 5, 7, 2, 9]))
    result = rationalize(adapter, problem, "greedy", progress=True)
    err = capsys.readouterr().err
    steps = max(len(r.rationale) for r in result.rationales)
    assert f"\rgreedy search: step {steps}, 4/4 targets (100%)\n" in err
    assert err.count("\r") == steps
    rationalize(adapter, problem, "greedy")  # stderr is not a terminal here: nothing
    assert capsys.readouterr().err == ""


class FakeBar:
    def __init__(self) -> None:
        self.n, self.postfix = 0, []

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.postfix.append(text)


def test_the_commands_bar_moves_with_every_step():
    steps, bar = StepReport(), FakeBar()
    steps.start(bar)
    for done in (0, 1, 1, 3):
        steps(done, 3)
    assert bar.n == 3 and bar.postfix == ["step 1", "step 2", "step 3", "step 4"]
    steps.start(bar)
    assert steps.done == 0 and steps.steps == 0


def test_the_command_shows_the_steps(lm_dir, capsys):
    run(lm_dir, "--text", TEXTS[1])
    err = capsys.readouterr().err
    assert "step 1" in err and "rationalizing: 100%" in err
