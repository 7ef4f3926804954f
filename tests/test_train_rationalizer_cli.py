"""``rationales-train-rationalizer``: trains an extractor from texts (greedy teacher) or from
``rationalize --out`` records, resumes a stopped run, refuses bad input in one line, and the
trained extractor drives ``rationalize --method amortized``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sequential_rationales.extractor import RationaleExtractor
from sequential_rationales.validation import InputError
from sequential_rationales_integrations import rationalize_cli
from sequential_rationales_integrations import train_rationalizer_cli as train

from .test_rationalize_cli import TEXTS, save_tiny_lm

pytest.importorskip("transformers")

MORE = TEXTS + ["a big dog sat on the red mat", "the cat ran to a house", "dog and cat sat"]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def copy_dir(tmp_path_factory) -> Path:
    """A tiny compatible GPT-2 that repeats five words: its greedy rationales of the
    repetition (the previous word and the copied one) give the extractor something to learn,
    where a random model's hold the previous token alone."""
    from sequential_rationales_experiments.amortized import train_copy_model

    folder = tmp_path_factory.mktemp("copy")
    train_copy_model(folder, 5, 300, 0, log=lambda _: None)
    return folder / "model"


def copy_texts(n: int, seed: int) -> list[str]:
    from sequential_rationales_experiments.amortized import copy_sentences

    return copy_sentences(n, 5, torch.Generator().manual_seed(seed))


def run(lm_dir: Path, out: Path, *args: str) -> dict:
    return train.main(["--model", str(lm_dir), "--device", "cpu", "--out", str(out),
                       "--rank", "8", "--batch-sequences", "2", *args])


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text()
            .splitlines()]


def test_texts_train_an_extractor_that_amortized_rationalization_uses(copy_dir, tmp_path):
    out = tmp_path / "extractor"
    summary = run(copy_dir, out, "--text", *copy_texts(6, 0), "--steps", "60", "--lr", "0.01",
                  "--held-out", "0.2")
    assert summary["train"] == 5 and summary["held_out"] == 1 and summary["steps"] == 60
    curve = losses(out)
    assert len(curve) == 60 and sum(curve[-10:]) < sum(curve[:10])  # it learns
    assert RationaleExtractor.load(out).config.rank == 8
    assert any((out / "tensorboard").iterdir())
    records = tmp_path / "amortized.jsonl"
    texts = copy_texts(3, 1)
    rationalize_cli.main(["--model", str(copy_dir), "--device", "cpu", "--text", *texts,
                          "--method", "amortized", "--extractor", str(out),
                          "--out", str(records)])
    logs = [json.loads(line) for line in records.read_text().splitlines()]
    assert {r["method"] for r in logs} == {"amortized"} and len(logs) == 3
    provenance = json.loads((tmp_path / "amortized.provenance.json").read_text())
    assert provenance["extractor"]["fingerprint"]
    assert "top_k" not in provenance["settings"]
    top = tmp_path / "top2.jsonl"  # the one-pass mode: two tokens, no search
    rationalize_cli.main(["--model", str(copy_dir), "--device", "cpu", "--text", *texts,
                          "--method", "amortized", "--extractor", str(out), "--top-k", "2",
                          "--out", str(top)])
    for ordered, fast in zip(logs, (json.loads(x) for x in top.read_text().splitlines()),
                             strict=True):
        for a, b in zip(ordered["all_rationales"], fast["all_rationales"], strict=True):
            assert b == a[:2] or (len(a) < 2 and b[:len(a)] == a)
    assert json.loads((tmp_path / "top2.provenance.json").read_text())["settings"]["top_k"] == 2


def test_rationalize_records_are_a_teacher_and_a_stopped_run_resumes(copy_dir, tmp_path):
    teacher = tmp_path / "greedy.jsonl"
    rationalize_cli.main(["--model", str(copy_dir), "--device", "cpu", "--text",
                          *copy_texts(6, 2), "--out", str(teacher)])
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(copy_dir, whole, "--teacher", str(teacher), "--steps", "200")
    run(copy_dir, parts, "--teacher", str(teacher), "--steps", "100")  # then stopped
    (parts / "extractor.pt").unlink()
    run(copy_dir, parts, "--teacher", str(teacher), "--steps", "200")  # resumes at step 100
    assert [round(x, 5) for x in losses(parts)] == [round(x, 5) for x in losses(whole)]
    for a, b in zip(RationaleExtractor.load(whole).parameters(),
                    RationaleExtractor.load(parts).parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    with pytest.raises(InputError, match="other settings"):
        run(copy_dir, parts, "--teacher", str(teacher), "--steps", "200", "--lr", "0.1")


def test_bad_input_is_one_line(lm_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no rationales here"}\n')
    with pytest.raises(InputError, match="record 1: not a record of `rationalize --out`"):
        run(lm_dir, tmp_path / "x", "--teacher", str(bad))
    with pytest.raises(InputError, match="no greedy rationale of the texts reached the argmax"):
        run(lm_dir, tmp_path / "x", "--text", "the cat sat on")  # random model: never
    with pytest.raises(InputError, match="--held-out"):
        run(lm_dir, tmp_path / "x", "--text", "a", "--held-out", "1")
    with pytest.raises(InputError, match="--top-k needs a method that ranks"):
        rationalize_cli.main(["--model", str(lm_dir), "--text", "the cat", "--top-k", "2"])
    with pytest.raises(InputError, match="needs --extractor"):
        rationalize_cli.main(["--model", str(lm_dir), "--text", "the cat", "--method",
                              "amortized"])


def test_a_fairseq_translation_model_trains_from_sources_and_from_records(tmp_path,
                                                                          translation_checkpoint):
    """Source sentences (greedy translations, greedy teacher) and `rationalize --out` records
    of the same inputs are the same teacher: the two runs train the same extractor."""
    checkpoints, data = translation_checkpoint
    sources = ["s1 s2 s3", "s4 s5", "s2 s3 s4 s5", "s1 s5"]
    model = ["--model", str(checkpoints), "--data", str(data), "--device", "cpu"]
    options = ["--rank", "4", "--batch-sequences", "2", "--steps", "20", "--held-out", "0"]
    summary = train.main([*model, "--text", *sources, "--out", str(tmp_path / "a"), *options])
    assert summary["train"] == 4 and len(losses(tmp_path / "a")) == 20
    records = tmp_path / "greedy.jsonl"
    rationalize_cli.main([*model, "--text", *sources, "--out", str(records)])
    train.main([*model, "--teacher", str(records), "--out", str(tmp_path / "b"), *options])
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    extractor = RationaleExtractor.load(tmp_path / "a")
    assert extractor.config.conditional
    out = tmp_path / "amortized.jsonl"
    rationalize_cli.main([*model, "--text", *sources, "--method", "amortized", "--extractor",
                          str(tmp_path / "a"), "--out", str(out)])
    for record in (json.loads(line) for line in out.read_text().splitlines()):
        assert record["method"] == "amortized"
        for entry in record["rationalizations"]:
            first = entry["log"][0]  # the previous target token comes first
            assert first["from"] == "target"
            assert first["added_token_position"] == entry["target_position"] - 1


def test_faithfulness_and_joint_fine_tuning_log_each_objective_and_resume(copy_dir, tmp_path):
    """With every objective on and the model fine-tuned, the log names each objective, the
    fine-tuned model is saved, and a stopped run resumes into the same extractor and model."""
    from transformers import AutoModelForCausalLM

    flags = ["--text", *copy_texts(6, 3), "--held-out", "0", "--lambda-sufficiency", "1",
             "--lambda-comprehensiveness", "0.5", "--finetune", "--lambda-task", "1",
             "--model-lr", "1e-3", "--lr", "0.01"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run(copy_dir, whole, *flags, "--steps", "200")
    log = [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    assert {"order", "task"} <= set(log[0]) and any("faithfulness" in x for x in log)
    tuned = AutoModelForCausalLM.from_pretrained(whole / "model")
    original = AutoModelForCausalLM.from_pretrained(copy_dir)
    assert not torch.equal(tuned.lm_head.weight, original.lm_head.weight)
    run(copy_dir, parts, *flags, "--steps", "100")
    (parts / "extractor.pt").unlink()
    run(copy_dir, parts, *flags, "--steps", "200")
    assert [round(x, 4) for x in losses(parts)] == [round(x, 4) for x in losses(whole)]
    again = AutoModelForCausalLM.from_pretrained(parts / "model")
    for a, b in zip(tuned.parameters(), again.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(InputError, match="--lambda-task trains the model"):
        run(lm_dir, tmp_path / "x", "--text", "a b", "--lambda-task", "1")
