"""Results never mix: ``rationalize --out`` and the dataset runner's folders record what wrote
them (model fingerprint, tokenizer, method, settings), a resume with another provenance stops
with one line and writes nothing, foreign files are not taken as results, the evaluators
refuse to combine results of different models, methods or experiments, and bad output paths
stop before any work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.commands import (
    evaluate_alignment_rationales,
    evaluate_analogies_rationales,
    evaluate_distractor_rationales,
    evaluate_lambada_rationales,
    rationalize_analogies,
)
from sequential_rationales_experiments.runner import run_examples
from sequential_rationales_integrations import provenance
from sequential_rationales_integrations import rationalize_cli as rationalize
from sequential_rationales_integrations.cli import input_error_message
from tests import test_hf_experiments as hf
from tests import test_rationalize_cli as cli

TEXTS, save_tiny_lm = cli.TEXTS, cli.save_tiny_lm
# The fixtures of the other test modules, shared here.
lm_dir = cli.lm_dir
analogy_texts, data_dir, single_thread = hf.analogy_texts, hf.data_dir, hf.single_thread
word_model_dir, sister_model_dir = hf.word_model_dir, hf.sister_model_dir


@pytest.fixture(scope="module")
def other_lm_dir(tmp_path_factory) -> Path:
    """The same architecture and tokenizer as ``lm_dir``, other weights."""
    return save_tiny_lm(tmp_path_factory.mktemp("other_lm"), seed=1)


def run(model: Path, *args: str) -> dict:
    return rationalize.main(["--model", str(model), "--device", "cpu", *args])


def error(call, *args) -> str:
    """The one-line message a call stops with."""
    with pytest.raises((SystemExit, InputError)) as raised:
        call(*args)
    message = input_error_message(raised.value)
    assert message.startswith("error: ") and "\n" not in message, message
    return message


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# -- the record ---------------------------------------------------------------------------------
def test_fingerprint_follows_config_and_weights_not_the_path(lm_dir, other_lm_dir, tmp_path):
    copy = shutil.copytree(lm_dir, tmp_path / "copy")
    assert provenance.fingerprint(copy) == provenance.fingerprint(lm_dir)
    assert provenance.fingerprint(other_lm_dir) != provenance.fingerprint(lm_dir)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "n_head": 4}))
    assert provenance.fingerprint(copy) != provenance.fingerprint(lm_dir)
    assert provenance.fingerprint(tmp_path / "absent") is None


def test_rationalize_writes_its_provenance_next_to_the_results(lm_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--out", str(out), "--max-steps", "3")
    record = json.loads((tmp_path / "out.provenance.json").read_text())
    assert record["program"] == "rationalize" and record["method"] == "greedy"
    assert record["model"] == {"path": str(lm_dir.resolve()),
                               "fingerprint": provenance.fingerprint(lm_dir)}
    assert record["tokenizer"]["path"] == str(lm_dir.resolve())
    assert record["settings"] == {"max_steps": 3, "start_step": None, "generate": None,
                                  "integrated_gradient_steps": None, "dtype": "auto"}
    assert record["version"]
    # --max-tokens-per-batch does not change the results: the run resumes.
    summary = run(lm_dir, "--text", *TEXTS[:2], "--out", str(out), "--max-steps", "3",
                  "--max-tokens-per-batch", "64")
    assert summary["written"] == 1 and summary["records"] == 2


# -- rationalize: a resume of another run -----------------------------------------------------
@pytest.mark.parametrize("first, second, expected", [
    (["--max-steps", "3"], ["--max-steps", "5"],
     "was written by --max-steps 3, this run has --max-steps 5: write to a new --out or pass "
     "--overwrite"),
    ([], ["--generate", "2"],
     "was written by no --generate, this run has --generate 2: write to a new --out or pass "
     "--overwrite"),
    (["--start-step", "1"], ["--start-step", "2"],
     "was written by --start-step 1, this run has --start-step 2"),
    (["--method", "integrated_gradient", "--integrated-gradient-steps", "4"],
     ["--method", "integrated_gradient", "--integrated-gradient-steps", "8"],
     "was written by --integrated-gradient-steps 4, this run has --integrated-gradient-steps 8"),
])
def test_a_resume_with_other_settings_stops_and_keeps_the_file(lm_dir, tmp_path, first, second,
                                                               expected):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--out", str(out), *first)
    before = snapshot(tmp_path)
    message = error(run, lm_dir, "--text", *TEXTS[:2], "--out", str(out), *second)
    assert message.startswith(f"error: {out} {expected}")
    assert snapshot(tmp_path) == before


def test_a_resume_with_another_model_or_method_stops(lm_dir, other_lm_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--out", str(out))
    before = snapshot(tmp_path)
    old, new = provenance.fingerprint(lm_dir)[:8], provenance.fingerprint(other_lm_dir)[:8]
    message = error(run, other_lm_dir, "--text", *TEXTS[:2], "--out", str(out),
                    "--tokenizer", str(lm_dir))
    assert message == (f"error: {out} was written by --model {lm_dir.resolve()} (fingerprint "
                       f"{old}), this run has --model {other_lm_dir.resolve()} (fingerprint "
                       f"{new}): write to a new --out or pass --overwrite")
    message = error(run, lm_dir, "--text", *TEXTS[:2], "--out", str(out), "--method",
                    "last_attention")
    assert message == (f"error: {out} holds results of method 'greedy', not 'last_attention'; "
                       "pass a new --out or --overwrite")
    assert snapshot(tmp_path) == before


def test_overwrite_starts_afresh(lm_dir, other_lm_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", *TEXTS, "--out", str(out), "--max-steps", "3")
    summary = run(other_lm_dir, "--text", TEXTS[1], "--out", str(out), "--tokenizer",
                  str(lm_dir), "--overwrite")
    assert summary["written"] == 1 and summary["records"] == 1
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_index"] for r in records] == [0] and records[0]["text"] == TEXTS[1]
    record = json.loads((tmp_path / "out.provenance.json").read_text())
    assert record["model"]["fingerprint"] == provenance.fingerprint(other_lm_dir)
    assert record["settings"]["max_steps"] == 1024


def test_a_file_without_provenance_is_not_appended_to(lm_dir, tmp_path):
    out = tmp_path / "old.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--out", str(out))
    (tmp_path / "old.provenance.json").unlink()  # as an older version wrote it
    before = snapshot(tmp_path)
    message = error(run, lm_dir, "--text", *TEXTS[:2], "--out", str(out))
    assert message == (f"error: {out} holds results written without a provenance record (an "
                       "older version): cannot tell which run they belong to; write to a new "
                       "--out or pass --overwrite")
    assert snapshot(tmp_path) == before
    assert run(lm_dir, "--text", *TEXTS[:2], "--out", str(out), "--overwrite")["written"] == 2
    assert (tmp_path / "old.provenance.json").is_file()


def test_old_part_files_without_provenance_are_not_merged(lm_dir, tmp_path):
    out = tmp_path / "out.jsonl"
    part = tmp_path / "out.part-1-of-2.jsonl"
    part.write_text(json.dumps({"input_index": 1, "text": TEXTS[1], "method": "greedy"}) + "\n")
    message = error(run, lm_dir, "--text", *TEXTS[:2], "--out", str(out))
    assert "without a provenance record" in message
    assert not out.exists() and part.is_file()


# -- rationalize: output paths ------------------------------------------------------------------
def test_bad_output_paths_stop_before_any_work(lm_dir, tmp_path, monkeypatch):
    def no_model(*args):
        raise AssertionError("no model is loaded for a bad output path")

    monkeypatch.setattr(rationalize, "load_rationalizer", no_model)
    folder = tmp_path / "folder.jsonl"
    folder.mkdir()
    a_file = tmp_path / "file.txt"
    a_file.write_text("not a folder\n")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"text": TEXTS[0]}) + "\n")
    results = tmp_path / "results.jsonl"
    results.write_text("")
    before = snapshot(tmp_path)
    cases = [
        (["--text", "a b", "--out", str(folder)],
         f"error: --out {folder} is a folder; pass a file path"),
        (["--text", "a b", "--out", str(a_file / "out.jsonl")],
         f"error: --out {a_file / 'out.jsonl'}: {a_file} is a file, not a folder"),
        (["--text", "a b", "--out", str(fifo)],
         f"error: --out {fifo} is not a regular file (a pipe, socket or device); pass a file "
         "path"),
        (["--input", str(inputs), "--out", str(tmp_path / "." / "in.jsonl")],
         f"error: --input and --out name the same file {tmp_path / '.' / 'in.jsonl'}: the out "
         "would overwrite the input; pass another path"),
        (["--text", "a b", "--out", str(results), "--html", str(results)],
         f"error: --out and --html name the same file {results}: the html would overwrite the "
         "out; pass another path"),
        (["--text", "a b", "--html", str(folder)],
         f"error: --html {folder} is a folder; pass a file path"),
    ]
    for argv, expected in cases:
        if "--html" in argv and importlib_missing_html():
            continue
        assert error(run, lm_dir, *argv) == expected
    assert snapshot(tmp_path) == before


def importlib_missing_html() -> bool:
    import importlib.util

    return importlib.util.find_spec("sequential_rationales.html") is None


# -- the runner ---------------------------------------------------------------------------------
def _examples(n: int) -> list[tuple[str, int]]:
    return [(str(i), i) for i in range(n)]


def test_foreign_files_are_reported_not_counted(tmp_path):
    (tmp_path / "2.json").write_text("{}")
    (tmp_path / "3.json").write_text("[]")
    before = snapshot(tmp_path)
    seen = []
    with pytest.raises(SystemExit) as exit_info:
        run_examples(_examples(5), tmp_path, lambda i: seen.append(i) or {"i": i}, desc="test")
    message = str(exit_info.value.code)
    assert message == (f"error: {tmp_path} holds 2 JSON file(s) that are not results of this "
                       "program (2.json, 3.json): move them away or use another output folder")
    assert seen == [] and snapshot(tmp_path) == before


def test_a_caller_shape_check_rejects_records_of_another_program(tmp_path):
    (tmp_path / "0.json").write_text('{"value": 1}')
    with pytest.raises(SystemExit, match="not results of this program"):
        run_examples(_examples(2), tmp_path, lambda i: {"method": "greedy"}, desc="test",
                     is_result=lambda value: isinstance(value, dict) and "method" in value)


def _record(max_steps: int, model: str = "m") -> dict:
    return {"program": "test", "method": "greedy", "version": "1",
            "model": {"path": model, "fingerprint": None}, "tokenizer": {"path": model},
            "settings": {"max_steps": max_steps}}


def test_runner_folders_keep_their_provenance(tmp_path):
    out = tmp_path / "out"
    counts = run_examples(_examples(2), out, lambda i: {"i": i}, desc="test",
                          provenance=_record(3))
    assert counts["written"] == 2
    assert json.loads((out / "provenance.json").read_text()) == _record(3)
    counts = run_examples(_examples(3), out, lambda i: {"i": i}, desc="test",
                          provenance={**_record(3), "version": "2"})  # version is not compared
    assert counts == {"written": 1, "existing": 2}
    assert json.loads((out / "provenance.json").read_text()) == _record(3)  # kept as written
    before = snapshot(out)
    assert error(lambda: run_examples(_examples(4), out, lambda i: {"i": i}, desc="test",
                                      provenance=_record(5))) == (
        f"error: {out} was written by --max_steps 3, this run has --max_steps 5: write to a "
        "new --out folder or pass --overwrite")
    with pytest.raises(InputError, match="was written by --model m .*--model n"):
        run_examples(_examples(4), out, lambda i: {"i": i}, desc="test",
                     provenance=_record(3, "n"))
    assert snapshot(out) == before
    (out / "provenance.json").unlink()
    with pytest.raises(InputError, match="without a provenance record"):
        run_examples(_examples(4), out, lambda i: {"i": i}, desc="test", provenance=_record(5))
    counts = run_examples(_examples(1), out, lambda i: {"j": i}, desc="test",
                          provenance=_record(5), overwrite=True)
    assert counts == {"written": 1, "existing": 0}
    assert sorted(snapshot(out)) == ["0.json", "provenance.json"]
    assert json.loads((out / "provenance.json").read_text()) == _record(5)


# -- the dataset programs and their evaluators --------------------------------------------------
def _analogies(data_dir, model: Path, out: Path, *extra: str) -> dict:
    return rationalize_analogies.main([
        "--model_name_or_path", str(model), "--data_dir", str(data_dir), "--categories",
        "family", "--max_examples", "2", "--no_filter", "--device", "cpu", "--max_steps", "2",
        "--out", str(out), *extra])


def test_analogy_runs_and_evaluation_never_mix(data_dir, word_model_dir, sister_model_dir,
                                               tmp_path):
    results = tmp_path / "results"
    assert _analogies(data_dir, word_model_dir, results / "greedy")["written"] == 2
    record = json.loads((results / "greedy" / "provenance.json").read_text())
    assert record["experiment"] == "analogies" and record["method"] == "greedy"
    assert record["settings"]["no_filter"] is True and record["settings"]["max_steps"] == 2
    before = snapshot(results)
    message = error(_analogies, data_dir, sister_model_dir, results / "greedy")
    assert message.startswith(f"error: {results / 'greedy'} was written by --model "
                              f"{word_model_dir.resolve()}")
    message = error(_analogies, data_dir, word_model_dir, results / "greedy", "--method",
                    "last_attention")
    assert message == (f"error: {results / 'greedy'} was written by --method greedy, this run "
                       "has --method last_attention: write to a new --out folder or pass "
                       "--overwrite")
    assert snapshot(results) == before
    # Foreign files in the folder are not finished examples.
    (results / "greedy" / "x.json").write_text("{}")
    assert "not results of this program (x.json)" in error(
        _analogies, data_dir, word_model_dir, results / "greedy")
    (results / "greedy" / "x.json").unlink()

    # Another model's last_attention results next to this model's greedy ones.
    _analogies(data_dir, sister_model_dir, results / "last_attention", "--method",
               "last_attention")
    message = error(evaluate_analogies_rationales.main, ["--results_dir", str(results)])
    assert message.startswith("error: ") and "were written by different models" in message
    assert "evaluate results of one model together" in message
    _analogies(data_dir, word_model_dir, results / "last_attention", "--method",
               "last_attention", "--overwrite")
    rows = evaluate_analogies_rationales.main(["--results_dir", str(results)])
    assert list(rows) == ["last_attention", "greedy"]

    # Records of another experiment.
    message = error(evaluate_lambada_rationales.main, ["--results_dir", str(results)])
    assert message == (f"error: {results / 'last_attention'} holds results of the analogies "
                       "experiment, not lambada; evaluate the folders written by "
                       "huggingface/rationalize_annotated_lambada.py")
    for evaluate, task, gold in ((evaluate_distractor_rationales, "distractors", "--breaks"),
                                 (evaluate_alignment_rationales, "alignments", "--alignments")):
        argv = ["--results_dir", str(results), gold, str(tmp_path / "gold.jsonl")]
        assert error(evaluate.main, argv) == (
            f"error: {results / 'last_attention'} holds results of the analogies experiment, "
            f"not {task}; evaluate the folders written by fairseq/rationalize_iwslt.py --task "
            f"{task}")
    for folder in ("greedy", "last_attention"):
        (results / folder / "provenance.json").unlink()  # older folders have none
    message = error(evaluate_lambada_rationales.main, ["--results_dir", str(results)])
    assert message == (f"error: {results / 'last_attention' / '4_0.json'} is not a lambada "
                       "result (no 'human_subword_rationale'); evaluate the folders written by "
                       "huggingface/rationalize_annotated_lambada.py")
    message = error(evaluate_distractor_rationales.main, [
        "--results_dir", str(results), "--breaks", str(tmp_path / "gold.jsonl")])
    assert message == (f"error: {results / 'last_attention' / '4_0.json'} is not a distractors "
                       "result (no 'rationalizations'); evaluate the folders written by "
                       "fairseq/rationalize_iwslt.py --task distractors")

    # A folder named after one method holding another's results.
    shutil.rmtree(results / "last_attention")
    shutil.copytree(results / "greedy", results / "last_attention")
    message = error(evaluate_analogies_rationales.main, ["--results_dir", str(results)])
    assert message == (f"error: {results / 'last_attention'} holds results of method 'greedy', "
                       "not 'last_attention'; rename or rerun it")
