"""The method comparison: its rows equal a direct computation, the alignment columns equal the
Table 4 evaluation's, a rerun resumes, and bad folders name the command that makes them."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sequential_rationales import (
    conditional_problem,
    lm_problem,
    rationalize,
    rationalize_translation,
)
from sequential_rationales.adapters.fairseq import FairseqLanguageModel, FairseqTranslationModel
from sequential_rationales.metrics import faithfulness
from sequential_rationales_experiments import compare_methods as cm
from sequential_rationales_experiments.commands import compare_methods as command
from sequential_rationales_experiments.commands import evaluate_alignment_rationales

from .fairseq_helpers import random_tokens, tiny_lm, tiny_translation

# Small searches keep the tests fast: a random model rarely reaches its argmax early.
OPTIONS = cm.SearchOptions(max_steps=5, exhaustive_max_steps=2, seed=0)
BIT0, BIT1, EQUALS = 4, 5, 6  # ids of the tiny dictionary's words w0, w1, w2


def _majority_class_examples(n: int = 3):
    """``(name, (ids, bit_is_label))``: ``</s>``, 17 bits, ``=``, the majority label."""
    gen = torch.Generator().manual_seed(0)
    examples = []
    for i in range(n):
        bits = torch.randint(0, 2, (17,), generator=gen)
        label = int(bits.sum() > 8)
        ids = torch.tensor([2, *(BIT0 + bits).tolist(), EQUALS, BIT0 + label])
        examples.append((str(i), (ids, [int(b) == label for b in bits])))
    return examples


@pytest.fixture(scope="module")
def lm_adapter():
    model, _, _ = tiny_lm(seed=11)
    return FairseqLanguageModel(model)


def test_rows_on_hand_written_records():
    def target(size, reached=True, source=(), suff=0.5):
        return {"position": 1, "source": list(source), "target": [], "size": size,
                "reached_argmax": reached, "sufficiency": suff, "comprehensiveness": 0.1,
                "aopc_sufficiency": 0.2, "aopc_comprehensiveness": 0.3, "p_full": 0.9}

    records = {"0": {"seconds": 2.0, "targets": [target(3)], "bits_match": [True, False]},
               "1": {"seconds": 1.0, "targets": [target(2, suff=0.1)], "bits_match": []},
               "2": {"seconds": 3.0, "targets": [target(2)], "bits_match": [True]}}
    exhaustive = {"0": {"targets": [target(2)]}, "1": {"targets": [target(2)]},
                  "2": {"targets": [target(1, reached=False)]}}
    row = cm.majority_class_row(records, exhaustive)
    assert row["Length"] == pytest.approx(7 / 3)
    assert row["sufficiency"] == pytest.approx(1.1 / 3)
    assert row["Label bits"] == pytest.approx((0.5 + 1.0) / 2)  # sentence 1 has no bit
    assert row["Minimal"] == pytest.approx(0.5)  # sentence 2: exhaustive found none
    assert row["Seconds"] == pytest.approx(6.0 / 3)
    assert "Minimal" not in cm.majority_class_row(records)  # no exhaustive records

    # Source 0..2, target words 0 and 1 (decoder positions 1 and 2); word 0: sure {0},
    # possible {0, 1}; word 1: sure {2}. Rationales {0, 1} and {1}; Top1 runs add 1, then 2.
    gold = {"0": {"index": 0, "source_word_index": [0, 1, 2], "target_word_index": [0, 1],
                  "sure": [[0, 0], [2, 1]], "possible": [[0, 0], [1, 0], [2, 1]]}}
    t1, t2 = dict(target(2, source=[0, 1]), position=1), dict(target(1, source=[1]), position=2)
    records = {"0": {"seconds": 1.0, "num_source": 3, "targets": [t1, t2],
                     "top_1_source": {"1": [1], "2": [2]}}}
    row = cm.translation_row(records, gold)
    # AER per word: 1 - (2 + 1) / (1 + 2) = 0 and 1 - 0 / (1 + 1) = 1.
    assert row["AER"] == pytest.approx(0.5)
    assert row["F1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # TP 2, FP 1, FN 1
    assert row["Top1"] == pytest.approx(1.0)


def test_majority_class_rows_equal_a_direct_computation(lm_adapter):
    examples = _majority_class_examples()
    records = {m: {name: cm.measure_majority_class(lm_adapter, ids, bits, m, OPTIONS)
                   for name, (ids, bits) in examples}
               for m in ("greedy", "random", "exhaustive")}
    direct = {}
    for method in ("greedy", "random", "exhaustive"):
        sizes, scores, precisions = [], [], []
        for _, (ids, bits) in examples:
            problem = lm_problem(lm_adapter, ids, start_step=18)
            result = rationalize(lm_adapter, problem, method,
                                 max_steps=2 if method == "exhaustive" else 5)
            (r,) = result.rationales
            sizes.append((len(r.rationale), r.reached_argmax))
            scores.append(faithfulness(lm_adapter, problem, result)[19])
            matches = [bits[p - 1] for p in r.target_rationale if 1 <= p <= 17]
            if matches:
                precisions.append(sum(matches) / len(matches))
        direct[method] = sizes, scores, precisions
    exhaustive_sizes = direct["exhaustive"][0]
    for method in ("greedy", "random"):
        row = cm.majority_class_row(records[method], records["exhaustive"])
        sizes, scores, precisions = direct[method]
        assert row["Length"] == pytest.approx(sum(s for s, _ in sizes) / len(sizes))
        for key in cm.FAITHFULNESS:
            assert row[key] == pytest.approx(sum(s[key] for s in scores) / len(scores))
        assert row["Label bits"] == pytest.approx(sum(precisions) / len(precisions))
        minimal = [s == e for (s, _), (e, reached) in zip(sizes, exhaustive_sizes) if reached]
        assert row["Minimal"] == pytest.approx(sum(minimal) / len(minimal)) if minimal else \
            math.isnan(row["Minimal"])
        assert row["examples"] == 3 and row["targets"] == 3 and row["Seconds"] > 0


def test_translation_rows_equal_the_alignment_table():
    model, _, task = tiny_translation(seed=12)
    gen = torch.Generator().manual_seed(1)
    gold, found = {}, {}
    records = {"greedy": {}, "last_attention": {}}
    for i in range(2):
        source = torch.cat([random_tokens(1, 4, gen)[0], torch.tensor([2])])
        target = torch.cat([torch.tensor([2]), random_tokens(1, 3, gen)[0]])
        gold[str(i)] = {"index": i, "source_word_index": [0, 1, 2, 3],
                        "target_word_index": [0, 1, 2],
                        "sure": [[0, 0], [2, 1], [3, 2]], "possible": [[0, 0], [1, 0], [2, 1],
                                                                      [3, 2], [1, 2]]}
        adapter = FairseqTranslationModel(model, source_length=len(source))
        decode = task.source_dictionary.__getitem__
        for method in records:
            problem = conditional_problem(adapter, source, target)
            records[method][str(i)] = cm.measure(adapter, problem, method, OPTIONS, top_1=True)
            for top_1 in (False, True):
                _, log = rationalize_translation(adapter, source, target, decode, decode,
                                                 method=method, top_1=top_1, max_steps=5)
                found.setdefault(method + ("_top_1" if top_1 else ""), {})[str(i)] = log
    expected = evaluate_alignment_rationales.evaluate(found, list(records), gold, top_1=True)
    for method, by_example in records.items():
        row = cm.translation_row(by_example, gold)
        for key in ("AER", "F1", "Top1"):
            assert row[key] == pytest.approx(expected[method][key])
        assert row["targets"] == 6


def _fake_majority_class(monkeypatch, lm_adapter, calls):
    """The command on the tiny LM: its folder check and loader replaced, measure counted."""
    monkeypatch.setattr(command, "check_model_folder", lambda kind, folder: folder / "ckpt.pt")
    monkeypatch.setattr(command, "majority_class_examples",
                        lambda folder, checkpoint, n: (lm_adapter, _majority_class_examples(n)))

    def counted(*args, **kwargs):
        calls.append(args[3])
        return cm.measure_majority_class(*args, **kwargs)
    monkeypatch.setattr(command, "measure_majority_class", counted)


def test_command_writes_one_table_and_resumes(tmp_path, monkeypatch, lm_adapter):
    calls: list[str] = []
    _fake_majority_class(monkeypatch, lm_adapter, calls)
    argv = ["--majority-class", str(tmp_path / "mc"), "--no-translation", "--out",
            str(tmp_path / "out"), "--methods", "greedy", "exhaustive",
            "--majority-class-examples", "3", "--max-steps", "5", "--exhaustive-max-steps", "2"]
    first = command.main(argv)
    assert calls == ["greedy"] * 3 + ["exhaustive"] * 3
    rows = first["rows"]["majority_class"]
    assert set(rows) == {"greedy", "exhaustive"} and rows["exhaustive"]["Length"] > 0
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["rows"]["majority_class"]["greedy"]["Length"] == rows["greedy"]["Length"]
    assert "| majority_class | Greedy |" in (tmp_path / "out" / "comparison.md").read_text()
    assert (tmp_path / "out" / "comparison.csv").read_text().count("majority_class") == 2
    # A rerun computes nothing; a lost record (a killed run) is the only one redone.
    calls.clear()
    assert command.main(argv)["rows"] == first["rows"]
    assert calls == []
    (tmp_path / "out" / "results" / "majority_class" / "greedy" / "1.json").unlink()
    command.main(argv)
    assert calls == ["greedy"]


def test_a_failing_method_is_reported_and_the_others_kept(tmp_path, monkeypatch, lm_adapter):
    calls: list[str] = []
    _fake_majority_class(monkeypatch, lm_adapter, calls)

    def broken(adapter, ids, bits, method, options):
        if method == "random":
            raise RuntimeError("no scores")
        return cm.measure_majority_class(adapter, ids, bits, method, options)
    monkeypatch.setattr(command, "measure_majority_class", broken)
    result = command.main(["--majority-class", str(tmp_path / "mc"), "--no-translation",
                           "--out", str(tmp_path / "out"), "--methods", "random", "greedy",
                           "--majority-class-examples", "2", "--max-steps", "5"])
    assert list(result["rows"]["majority_class"]) == ["greedy"]
    assert result["errors"] == {"majority_class/random": "RuntimeError: no scores"}


def test_amortized_rows_use_one_extractor_per_model(tmp_path, monkeypatch, lm_adapter):
    """The extractor is trained once (greedy's rationales of training examples); the ordered
    rows start with the previous token and the top-k rows hold k tokens."""
    from sequential_rationales_experiments.amortized import cached_extractor

    calls: list[str] = []
    _fake_majority_class(monkeypatch, lm_adapter, calls)
    trained = []

    def fake_extractor(kind, folder, checkpoint, model_dir, args):
        trained.append(model_dir)
        problems = [cm.lm_problem(lm_adapter, ids, start_step=len(ids) - 2)
                    for _, (ids, _) in _majority_class_examples(4)]
        return cached_extractor(model_dir / "extractor", lambda _p: lm_adapter, problems,
                                args.extractor_steps, args.seed, rank=4)
    monkeypatch.setattr(command, "model_extractor", fake_extractor)
    result = command.main(["--majority-class", str(tmp_path / "mc"), "--no-translation",
                           "--out", str(tmp_path / "out"), "--methods", "greedy", "amortized",
                           "amortized_top_k", "--majority-class-examples", "3",
                           "--extractor-steps", "3"])
    rows = result["rows"]["majority_class"]
    assert calls == ["greedy"] * 3 + ["amortized"] * 6  # the top-k rows run amortized
    assert len(trained) == 2 and (trained[0] / "extractor" / "extractor.json").is_file()
    teacher = json.loads((trained[0] / "extractor" / "teacher.json").read_text())
    # k: greedy's mean rationale length rounded up, 1 when none reached the argmax (a random
    # model's rarely do).
    k = math.ceil(teacher["mean_length"]) if teacher["reached_argmax"] else 1
    assert rows["amortized_top_k"]["Length"] == k
    ordered = cm.read_records(tmp_path / "out" / "results" / "majority_class" / "amortized",
                              ["0", "1", "2"])
    for record in ordered.values():
        (target,) = record["targets"]
        assert target["target"][0] == target["position"] - 1
    assert "| majority_class | Amortized top-k |" in (tmp_path / "out" / "comparison.md"
                                                      ).read_text()


def test_bad_folders_name_the_command_that_makes_them(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"missing .*run_majority_class\.py --out"):
        command.main(["--majority-class", str(tmp_path / "none"), "--no-translation",
                      "--out", str(tmp_path / "out")])
    (tmp_path / "half" / "checkpoints" / "compatible_iwslt").mkdir(parents=True)
    with pytest.raises(SystemExit, match=r"run_translation_benchmark\.py --out .*half "
                                         r"--quick --variant hard"):
        command.main(["--translation", str(tmp_path / "half"), "--translation-variant", "hard",
                      "--no-majority-class", "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit):  # neither a folder nor --quick
        command.main(["--no-majority-class", "--out", str(tmp_path / "out")])
    assert "pass --translation DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        command.main(["--translation", "a", "--translation-variant", "standard", "hard",
                      "--no-majority-class"])
    assert "one folder per variant" in capsys.readouterr().err


def test_quick_runs_the_pipelines_into_out(tmp_path, monkeypatch):
    from sequential_rationales_experiments.commands import (
        run_majority_class,
        run_translation_benchmark,
    )

    calls = []
    monkeypatch.setattr(run_majority_class, "main", lambda argv: calls.append(argv))
    monkeypatch.setattr(run_translation_benchmark, "main", lambda argv: calls.append(argv))
    with pytest.raises(SystemExit, match="not a finished Majority Class pipeline folder"):
        command.main(["--quick", "--out", str(tmp_path), "--translation-variant", "standard",
                      "hard", "--majority-class-updates", "7", "--translation-updates", "5", "3"])
    translation = ["--rationalize", "2", "--methods", "greedy", "--standard-updates", "5",
                   "--compatible-updates", "3"]
    assert calls == [
        ["--out", str(tmp_path / "majority_class"), "--quick", "--max-update", "7"],
        ["--out", str(tmp_path / "translation"), "--quick", "--variant", "standard",
         *translation],
        ["--out", str(tmp_path / "translation_hard"), "--quick", "--variant", "hard",
         *translation]]
