"""ROAR and recursive ROAR on Majority Class (sequential_rationales_experiments.roar)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from sequential_rationales import list_methods, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import RationalizationProblem
from sequential_rationales.validation import InputError
from sequential_rationales_experiments import roar
from sequential_rationales_experiments.commands import run_roar

TINY = roar.Settings(train_sentences=40, test_sentences=20, k=(0, 30, 60, 90), train_steps=10,
                     batch_size=16, integrated_gradient_steps=4, seed=3)


def test_k_grid_and_bit_counts():
    assert [roar.bits_to_mask(k) for k in (0, 10, 20, 40, 50, 80, 100)] == [0, 2, 3, 7, 9, 14, 17]
    assert roar.check_k([40, 20, 40]) == (0, 20, 40)
    with pytest.raises(ValueError, match="0..100"):
        roar.check_k([20, 120])
    with pytest.raises(ValueError, match="above 0"):
        roar.check_k([0])


def test_bayes_accuracy_of_random_masks():
    assert roar.random_mask_bayes_accuracy(0) == 1.0
    assert roar.random_mask_bayes_accuracy(17) == 0.5
    # One visible bit: the label equals it when at least 8 of the 16 hidden bits do.
    assert roar.random_mask_bayes_accuracy(16) == pytest.approx(0.5 + math.comb(16, 8) / 2 ** 17)
    values = [roar.random_mask_bayes_accuracy(m) for m in range(18)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_masks_are_exactly_the_top_ranked_bits_and_never_separator_or_label():
    data = roar.make_data(TINY)["test"][:3]
    rankings = [list(range(17)), list(range(16, -1, -1)), [5, 0, 16, *range(1, 5), *range(6, 16)]]
    masks = roar.extend_masks(rankings, [[], [], []], 3)
    assert masks == [[0, 1, 2], [14, 15, 16], [0, 5, 16]]
    masked = roar.mask_sentences(data, masks)
    for row, positions in enumerate(masks):
        is_mask = masked[row] == roar.MASK_ID
        assert is_mask.nonzero().flatten().tolist() == positions
        keep = [p for p in range(19) if p not in positions]
        assert torch.equal(masked[row, keep], data[row, keep])  # "=" and the label included
    assert (masked[:, roar.SEPARATOR] == roar.VOCAB["="]).all()
    with pytest.raises(ValueError, match="only bits"):
        roar.mask_sentences(data, [[17], [], []])


def test_recursive_masks_keep_the_previous_ones():
    ranking = [5, 3, 0, 1, 2, 4, *range(6, 17)]
    # The previous masks stay; the best-ranked bits not masked yet are added.
    assert roar.extend_masks([ranking], [[9, 3]], 4) == [[0, 3, 5, 9]]
    assert roar.extend_masks([ranking], [[9, 3]], 2) == [[3, 9]]
    with pytest.raises(ValueError, match="masked already"):
        roar.extend_masks([ranking], [[1, 2, 3]], 2)


def test_default_methods_come_from_the_registry():
    methods = roar.default_methods()
    assert methods[:9] == ["greedy", "gradient_norm", "signed_gradient", "integrated_gradient",
                           "attention_rollout", "last_attention", "all_attention", "occlusion",
                           "random"]
    assert set(methods[9:]) == {"lrp", "iba"} & set(list_methods())
    with pytest.raises(ValueError, match="unknown method"):
        roar.check_methods(["greedy", "exhaustive"])


@pytest.fixture(scope="module")
def trained():
    """A model of the quick settings after 60 steps, and the test sentences."""
    settings = replace(roar.QUICK, train_steps=60)
    data = roar.make_data(settings)
    with roar.one_cpu_thread("cpu"):
        return HuggingFaceCausalLM(roar.train_model(data["train"], settings, "cpu")), data["test"]


def test_greedy_ranks_its_rationale_first_then_a_seeded_random_order(trained):
    adapter, test = trained
    checked = 0
    for ids in test[:6]:
        ranking = roar.bit_ranking("greedy", adapter, ids, 7, None)
        result = rationalize(adapter, RationalizationProblem(ids, targets=[roar.LABEL]))
        bits = [c.position for c in result.rationales[0].rationale if c.position < 17]
        assert sorted(ranking) == list(range(17))
        assert ranking[:len(bits)] == bits
        assert ranking == roar.bit_ranking("greedy", adapter, ids, 7, None)
        other = roar.bit_ranking("greedy", adapter, ids, 8, None)
        assert other[:len(bits)] == bits and other[len(bits):] != ranking[len(bits):]
        checked += bool(bits)
    assert checked >= 2  # rationales with bits were among them
    assert roar.ranking_kind("greedy") == "rationale+random"


@pytest.mark.parametrize("method", roar.default_methods())
def test_every_ranking_starts_with_the_registered_methods_rationale(trained, method):
    """The full ranking continues where the registered method (which stops at the argmax)
    ends: same scorer, same arguments, same seed."""
    adapter, test = trained
    for index, ids in enumerate(test[:1 if method == "iba" else 3]):  # IBA: seconds each
        ranking = roar.bit_ranking(method, adapter, ids, index, 5)
        result = rationalize(adapter, RationalizationProblem(ids, targets=[roar.LABEL]), method,
                             seed=index, integrated_gradient_steps=5)
        rationale = [c.position for c in result.rationales[0].rationale]
        assert rationale[0] == roar.SEPARATOR
        assert sorted(ranking) == list(range(17))
        assert ranking[:len(rationale) - 1] == rationale[1:]
    kind = "rationale+random" if method == "greedy" else "scores"
    assert roar.ranking_kind(method) == kind


def test_the_quick_schedule_learns_the_unmasked_task():
    data = roar.make_data(roar.QUICK)
    with roar.one_cpu_thread("cpu"):
        model = roar.train_model(data["train"], roar.QUICK, "cpu")
    result = roar.evaluate(model, data["test"])
    assert result["accuracy"] >= 0.9  # chance: about 0.5
    assert result["mean_log_prob"] > -0.3


def test_masking_every_bit_leaves_the_majority_label_rate():
    settings = replace(roar.QUICK, train_steps=60)
    data = roar.make_data(settings)
    everything = [list(range(17))]
    train = roar.mask_sentences(data["train"], everything * len(data["train"]))
    test = roar.mask_sentences(data["test"], everything * len(data["test"]))
    train_ones = float((data["train"][:, roar.LABEL] == 1).float().mean())
    assert abs(train_ones - 0.5) > 0.02  # the data has a majority label to learn
    with roar.one_cpu_thread("cpu"):
        result = roar.evaluate(roar.train_model(train, settings, "cpu"), test)
    # Every input is the same, so the model predicts the training set's majority label.
    test_ones = float((data["test"][:, roar.LABEL] == 1).float().mean())
    assert result["accuracy"] == pytest.approx(test_ones if train_ones > 0.5 else 1 - test_ones)
    assert result["mean_log_prob"] == pytest.approx(-math.log(2), abs=0.05)


def _records(out, mode, method):
    return {int(p.stem[1:]): json.loads(p.read_text())
            for p in (out / mode / method).glob("k*.json")}


def test_experiment_bookkeeping_of_both_modes(tmp_path):
    experiment = roar.Experiment(TINY, ["gradient_norm", "random"], tmp_path, "cpu",
                                 log=lambda line: None)
    results = experiment.run()
    assert experiment.trained == experiment.total == 1 + 2 * 5
    for method in ("gradient_norm", "random"):
        roar_steps = _records(tmp_path, "roar", method)
        recursive = _records(tmp_path, "recursive", method)
        assert sorted(roar_steps) == [30, 60, 90] and sorted(recursive) == [60, 90]
        assert results["recursive"][method][30] == roar_steps[30]  # the shared first step
        for mode, steps in (("roar", roar_steps), ("recursive", {30: roar_steps[30], **recursive})):
            for k, before in ((60, 30), (90, 60)):
                for split in ("train", "test"):
                    for now, then in zip(steps[k]["masks"][split], steps[before]["masks"][split]):
                        assert len(now) == roar.bits_to_mask(k)
                        assert set(then) <= set(now), (mode, method, k)
    # Random orders depend only on the seed and the sentence: both modes mask alike.
    assert _records(tmp_path, "roar", "random")[90]["masks"] == _records(
        tmp_path, "recursive", "random")[90]["masks"]


def test_command_writes_the_table_and_figure_and_resumes(tmp_path, capsys, monkeypatch):
    argv = ["--out", str(tmp_path), "--methods", "signed_gradient", "random", "--k", "50",
            "--train-sentences", "30", "--test-sentences", "20", "--train-steps", "8",
            "--seed", "1"]
    summary = run_roar.main(argv)
    for name in ("table.csv", "table.md", "roar.json", "roar.png", "roar.pdf"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "table.csv").read_text().splitlines()
    assert rows[0].startswith("mode,method,k,bits_masked,accuracy,mean_log_prob")
    assert len(rows) == 1 + 2 * 2 * 2  # modes x methods x k
    assert json.loads((tmp_path / "roar.json").read_text())["methods"] == [
        "signed_gradient", "random"]
    table = (tmp_path / "table.md").read_text()
    assert "| Grad x emb |" in table and "| Bayes, random masks | 1.000 | 0.731 |" in table
    capsys.readouterr()

    trained = []
    original = roar.train_model
    monkeypatch.setattr(roar, "train_model", lambda *a: trained.append(1) or original(*a))
    assert run_roar.main(argv)["rows"] == summary["rows"]
    # base + ROAR at 50 per method (recursive ROAR at the first k is ROAR's)
    assert not trained and capsys.readouterr().out.count("finished earlier") == 3
    (tmp_path / "roar" / "random" / "k050.json").write_text("{")  # a torn step is redone
    run_roar.main(argv)
    assert len(trained) == 1
    run_roar.main([*argv[:-1], "2"])  # another seed: everything again
    assert len(trained) == 1 + 3


@pytest.mark.parametrize("flags, message", [
    (["--methods", "nonsense"], "unknown method"),
    (["--methods", "exhaustive"], "unknown method"),
    (["--k", "150"], "percentage"),
    (["--k", "x"], "integer"),
    (["--train-steps", "0"], ">= 1"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
    with pytest.raises(SystemExit):
        run_roar.parse_args(flags)
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_an_error(tmp_path):
    with pytest.raises(InputError, match="CUDA is not available"):
        run_roar.main(["--out", str(tmp_path), "--device", "cuda"])
