"""The extractor's evaluation: metrics against greedy with known answers (greedy against itself),
forward tokens counted from the model's body, the table and the figure."""

from __future__ import annotations

import pytest
import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.extractor import ExtractorConfig, TeacherSequence, train_extractor
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
    teacher = [TeacherSequence(p, {BITS + 1: rationalize(adapter, p, "greedy")
                                   .rationales[0].target_rationale}) for p in problems]
    extractor = train_extractor(adapter, teacher, ExtractorConfig(0, rank=4), steps=5)
    rows = evaluation.evaluate(adapter, tiny_gpt2, problems, sentences,
                               ["greedy", "amortized", "random"], extractor)
    greedy = rows["greedy"]
    assert greedy["f1_vs_greedy"] == greedy["exact_vs_greedy"] == 1.0
    assert greedy["speedup"] == greedy["forward_tokens_ratio"] == greedy["length_ratio"] == 1.0
    lengths = [len(t.orders[BITS + 1]) for t in teacher]
    assert greedy["mean_length"] == pytest.approx(sum(lengths) / len(lengths))
    # Greedy scores more subsets than an ordered search of the same model.
    assert greedy["forward_tokens_per_target"] > rows["amortized"]["forward_tokens_per_target"]
    for row in rows.values():
        assert 0 <= row["f1_vs_greedy"] <= 1 and 0 <= row["label_bit_precision"] <= 1
    summaries = {"tiny": {"methods": rows}}
    table = evaluation.markdown(summaries)
    assert table.count("\n") == 1 + len(rows) and "| tiny | amortized |" in table
    evaluation.figure(summaries, tmp_path / "figure.png")
    assert (tmp_path / "figure.png").stat().st_size > 0


def test_forward_tokens_count_what_the_body_runs(tiny_gpt2):
    counter = evaluation.ForwardTokens(tiny_gpt2)
    with torch.no_grad():
        tiny_gpt2(input_ids=torch.zeros(3, 4, dtype=torch.long))
    counter.close()
    with torch.no_grad():
        tiny_gpt2(input_ids=torch.zeros(1, 2, dtype=torch.long))  # after close: not counted
    assert counter.tokens == 12


def test_f1_of_position_sets():
    assert evaluation.f1([1, 2], [2, 1]) == 1.0
    assert evaluation.f1([1, 2], [3]) == 0.0
    assert evaluation.f1([1, 2, 3], [3, 4]) == pytest.approx(2 * 1 / 5)
