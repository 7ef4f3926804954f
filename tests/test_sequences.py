"""The seed's two contracts in the core (``sequential_rationales.sequences``): they print
nothing, and the seed functions of both frameworks are exactly them plus optional printing."""

from __future__ import annotations

import sys

import pytest
import torch

from sequential_rationales import format_rationales, rationalize_sequence, rationalize_translation
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

IDS = torch.tensor([3, 7, 1, 9, 4, 2, 8])


class DigitTokenizer:
    def decode(self, ids: list[int]) -> str:
        return str(ids[0])


def _without_duration(log: dict) -> dict:
    return {k: v for k, v in log.items() if k != "duration"}


def test_lm_contract_prints_nothing_and_is_the_seed_function(tiny_gpt2, capsys):
    from huggingface.rationalization import baseline_rationalize_lm

    result, log = rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), IDS, str, "gradient_norm",
                                       start_step=2)
    assert capsys.readouterr().out == ""
    assert [r.target_position for r in result.rationales] == list(range(3, len(IDS)))

    rationales, seed_log = baseline_rationalize_lm(tiny_gpt2, IDS, DigitTokenizer(),
                                                   "gradient_norm", verbose=True, start_step=2)
    printed = capsys.readouterr().out.strip().splitlines()
    expected = format_rationales(result, str).strip().splitlines()
    assert printed[1:] == expected[1:]  # the first line holds the run's duration
    assert _without_duration(seed_log) == _without_duration(log)
    assert rationales == log["all_rationales"]


def test_translation_contract_prints_nothing_and_is_the_seed_function(capsys):
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    from .fairseq_helpers import REPO_ROOT, tiny_translation

    sys.path.insert(0, str(REPO_ROOT / "fairseq"))  # the seed's way: run from fairseq/
    try:
        from rationalization import rationalize_conditional_model
    finally:
        sys.path.remove(str(REPO_ROOT / "fairseq"))

    model, _, task = tiny_translation(seed=3)
    eos = task.source_dictionary.eos()
    source = torch.tensor([5, 9, 6, 11, eos])
    target = torch.tensor([eos, 7, 4, 10])
    src_words, tgt_words = task.source_dictionary.__getitem__, task.target_dictionary.__getitem__
    adapter = FairseqTranslationModel(model, source_length=len(source))
    result, log = rationalize_translation(adapter, source, target, src_words, tgt_words)
    assert capsys.readouterr().out == ""
    assert log["source_tokens"] == source.tolist()  # the final </s> is kept in the log
    assert result.source_ids == source[:-1].tolist()  # ... but is never a candidate

    source_rationales, target_rationales, seed_log = rationalize_conditional_model(
        model, source, target, verbose=False)
    assert capsys.readouterr().out == ""
    assert _without_duration(seed_log) == _without_duration(log)
    assert (source_rationales, target_rationales) == (
        log["all_source_rationales"], log["all_target_rationales"])
