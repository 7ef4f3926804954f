"""The experiment pipelines end to end with tiny settings (real fairseq CLIs)."""

from __future__ import annotations

import json

import pytest

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.commands import (
    rationalize_iwslt,
    run_majority_class,
    run_translation_benchmark,
)

pytestmark = pytest.mark.slow


def test_majority_class_pipeline_writes_summary_and_resumes(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--quick", "--train-lines", "400", "--valid-lines", "60",
            "--test-lines", "60", "--max-update", "4", "--calibration-sentences", "6",
            "--rationalize", "5"]
    summary = run_majority_class.main(argv)
    for key in ("standard_ppl", "compatible_ppl"):
        assert summary[key] > 1.0
    for key in ("calibration_mae_standard", "calibration_mae_compatible",
                "label_rationale_precision"):
        assert 0.0 <= summary[key] <= 1.0
    assert 1.0 <= summary["label_rationale_mean_size"] <= 19.0
    assert summary["label_rationale_count"] == 5
    assert (tmp_path / "figure3_majority_class_compatibility.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["standard_ppl"] == \
        summary["standard_ppl"]
    capsys.readouterr()
    run_majority_class.main(argv)  # everything exists: no retraining
    assert capsys.readouterr().out.count("exists: skipping training") == 2


def test_translation_benchmark_produces_both_tables(tmp_path):
    summary = run_translation_benchmark.main(
        ["--out", str(tmp_path), "--train-pairs", "300", "--test-pairs", "6", "--rationalize",
         "2", "--standard-updates", "3", "--compatible-updates", "2",
         "--integrated-gradient-steps", "3", "--methods", "greedy", "last_attention"])
    assert 0.0 <= summary["bleu_standard"] <= 100.0
    assert set(summary["table3_distractors"]) == {"greedy", "last_attention"}
    assert set(summary["table4_alignments"]) == {"greedy", "last_attention"}
    for row in summary["table4_alignments"].values():
        assert 0.0 <= row["AER"] <= 1.0 and 0.0 <= row["Top1"] <= 1.0
    folder = tmp_path / "rationales" / "distractors" / "greedy"
    logs = sorted(p for p in folder.glob("*.json") if p.name != "provenance.json")
    assert len(logs) == 2
    record = json.loads((folder / "provenance.json").read_text())
    assert (record["program"], record["experiment"], record["method"]) == (
        "rationalize_iwslt", "distractors", "greedy")
    # rationalize_iwslt resumes: finished examples are not redone.
    before = [p.stat().st_mtime_ns for p in logs]
    checkpoint = tmp_path / "checkpoints" / "compatible_iwslt" / "checkpoint_best.pt"
    rationalize_iwslt.main(["--checkpoint_dir", str(checkpoint.parent.parent),
                            "--checkpoint_file", str(checkpoint), "--task", "distractors",
                            "--data", str(tmp_path / "data-bin" / "distractors.de-en"),
                            "--method", "greedy", "--limit", "3",
                            "--out", str(tmp_path / "rationales"), "--cpu"])
    assert [p.stat().st_mtime_ns for p in logs] == before
    assert len(list(folder.glob("*.json"))) == 4  # three logs and the provenance
    # A resume with another setting would mix runs: refused, nothing written.
    with pytest.raises(InputError, match="max_steps"):
        rationalize_iwslt.main(["--checkpoint_dir", str(checkpoint.parent.parent),
                                "--checkpoint_file", str(checkpoint), "--task", "distractors",
                                "--data", str(tmp_path / "data-bin" / "distractors.de-en"),
                                "--method", "greedy", "--limit", "4", "--max_steps", "2",
                                "--out", str(tmp_path / "rationales"), "--cpu"])
    assert len(list(folder.glob("*.json"))) == 4
