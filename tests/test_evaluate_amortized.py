"""The extractor's evaluation: metrics against greedy with known answers (greedy against itself),
forward tokens counted from the model's body, NRG on hand-computed rows, and a whole quick run
on tiny settings that writes the summary the goals are stated in."""

from __future__ import annotations

import json

import pytest
import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.extractor import ExtractorConfig, TeacherSequence, train_extractor
from sequential_rationales_experiments import amortized
from sequential_rationales_experiments.commands import evaluate_amortized as evaluation

pytest.importorskip("transformers")

BITS = 5


def sentences_and_problems(count: int, seed: int):
    """Majority-Class-shaped id sequences: BITS bits (ids 0, 1), '=' (3), the label."""
    generator = torch.Generator().manual_seed(seed)
    sentences, problems = [], []
    for _ in range(count):
        bits = torch.randint(0, 2, (BITS,), generator=generator)
        label = int(int(bits.sum()) > BITS // 2)
        ids = torch.cat([bits, torch.tensor([3, label])])
        sentences.append(" ".join(str(int(i)) for i in ids))
        problems.append(RationalizationProblem(ids, targets=[BITS + 1]))
    return sentences, problems


def test_metrics_against_greedy_have_known_answers(tiny_gpt2, tmp_path):
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    sentences, problems = sentences_and_problems(8, seed=0)
    greedy_results = [rationalize(adapter, p, "greedy") for p in problems]
    teacher = [TeacherSequence.from_result(p, r)
               for p, r in zip(problems, greedy_results, strict=True)]
    extractor = train_extractor(adapter, teacher, ExtractorConfig(0, rank=4), steps=5)
    rows = evaluation.evaluate([(adapter, p) for p in problems],
                               amortized.counted_modules(tiny_gpt2),
                               ["greedy", "amortized", "amortized_top_k", "random"], extractor,
                               2, evaluation.label_bits(sentences))
    greedy = rows["greedy"]
    assert greedy["f1_vs_greedy"] == greedy["exact_vs_greedy"] == 1.0
    assert greedy["speedup"] == greedy["forward_tokens_ratio"] == greedy["length_ratio"] == 1.0
    lengths = [len(r.rationales[0].rationale) for r in greedy_results]
    assert greedy["mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    # Greedy scores more subsets than an ordered search of the same model; top-k runs one
    # pass for the hidden states and one for its subsets.
    assert greedy["forward_tokens_per_target"] > rows["amortized"]["forward_tokens_per_target"]
    assert rows["amortized_top_k"]["mean_length"] == 2.0
    assert rows["amortized_top_k"]["forward_tokens_per_target"] == (BITS + 2) + 2
    for row in rows.values():
        assert 0 <= row["f1_vs_greedy"] <= 1 and 0 <= row["label_bit_precision"] <= 1
        assert 0 <= row["nrg"] <= 1
    results = {"tiny": {"methods": rows, "mean_context_tokens": BITS + 1.0}}
    table = evaluation.markdown(results)
    assert table.count("\n") == 1 + len(rows) and "| tiny | Amortized (learned) |" in table
    evaluation.figure(results, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_nrg_normalizes_each_metric_over_the_methods():
    rows = {"a": {"sufficiency": 0.1, "comprehensiveness": 0.5, "label_bit_precision": 1.0},
            "b": {"sufficiency": 0.3, "comprehensiveness": 0.3, "label_bit_precision": 0.5},
            "c": {"sufficiency": 0.2, "comprehensiveness": 0.4, "label_bit_precision": 0.0}}
    evaluation.add_nrg(rows)
    # a: best on every metric. b: worst faithfulness, plausibility 0.5. c: 0.5 and 0.
    assert rows["a"]["nrg"] == 1.0
    assert rows["b"]["nrg_faithfulness"] == 0.0 and rows["b"]["nrg_plausibility"] == 0.5
    assert rows["c"]["nrg_faithfulness"] == pytest.approx(0.5)
    assert rows["c"]["nrg"] == pytest.approx(0.25)


def test_forward_tokens_count_what_the_body_runs(tiny_gpt2):
    counter = amortized.ForwardTokens(amortized.counted_modules(tiny_gpt2))
    with torch.no_grad():
        tiny_gpt2(input_ids=torch.zeros(3, 4, dtype=torch.long))
    counter.close()
    with torch.no_grad():
        tiny_gpt2(input_ids=torch.zeros(1, 2, dtype=torch.long))  # after close: not counted
    assert counter.tokens == 12


def test_forward_tokens_of_a_translation_model_count_both_sides():
    pytest.importorskip("fairseq")
    from .fairseq_helpers import tiny_translation

    model, _, _ = tiny_translation()
    counter = amortized.ForwardTokens(amortized.counted_modules(model))
    with torch.no_grad():
        model(torch.full((2, 5), 5), torch.tensor([5, 5]), torch.full((2, 3), 6))
    counter.close()
    assert counter.tokens == 2 * 5 + 2 * 3


def test_f1_of_position_sets():
    assert evaluation.f1([1, 2], [2, 1]) == 1.0
    assert evaluation.f1([1, 2], [3]) == 0.0
    assert evaluation.f1([1, 2, 3], [3, 4]) == pytest.approx(2 * 1 / 5)


def test_a_tiny_run_writes_the_summary_of_the_goals(tmp_path, monkeypatch):
    tiny = {"lm_steps": {"majority_class": 30, "long": 30, "copy": 30}, "teacher": 6,
            "test": 3, "translation_teacher": 2, "translation_test": 1, "copy_teacher": 2,
            "copy_test": 2, "extractor_steps": 5}
    monkeypatch.setattr(evaluation, "QUICK", tiny)
    monkeypatch.setattr(evaluation, "LONG_FILLER", 6)
    monkeypatch.setattr(evaluation, "HELD_OUT_FILLER", 2)
    monkeypatch.setattr(evaluation, "COPY_HALF", 5)  # the adapter probes 10 positions
    out = tmp_path / "out"
    evaluation.main(["--quick", "--out", str(out), "--settings", "majority_class", "held_out",
                     "long_context", "--methods", "greedy", "greedy_paper", "amortized",
                     "amortized_top_k", "last_attention"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"majority_class", "held_out", "long_context"}
    for name, setting in summary.items():
        assert {"mean_context_tokens", "f1_vs_greedy", "forward_tokens_ratio", "speedup",
                "length_ratio", "argmax_reached", "greedy_argmax_reached", "topk_speedup",
                "topk_f1_vs_greedy", "forward_tokens_ratio_vs_paper"} <= set(setting)
        assert ("label_bit_precision" in setting) == (name != "long_context")
    assert summary["majority_class"]["mean_context_tokens"] == 18
    assert summary["held_out"]["mean_context_tokens"] == 6 + 18
    assert summary["long_context"]["mean_context_tokens"] == (5 + 6 + 7 + 8 + 9) / 5
    results = json.loads((out / "long_context" / "results.json").read_text())
    assert results["methods"]["greedy_paper"]["exact_vs_greedy"] == 1.0  # from scratch
    teacher = json.loads((out / "held_out" / "extractor" / "teacher.json").read_text())
    assert teacher["mean_context_tokens"] <= 2 + 18  # trained on shorter contexts only
    assert (out / "amortized.png").stat().st_size > 0
    assert "| held_out | Greedy |" in (out / "amortized.md").read_text()
