"""One error style for every program: an input error is one line on stderr (``error: ...``)
with exit status 2, the traceback only under ``--verbose``; bugs keep their traceback. And the
input classes each program must name: model files that cannot be read, text that is not
UTF-8, flags fairseq must reject while parsing, devices, results of other runs."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sequential_rationales.validation import InputError, read_utf8, utf8_lines
from sequential_rationales_experiments.cli import ProgramParser, program_status

from .test_rationalize_cli import save_tiny_lm

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ROOT / "sequential_rationales_experiments" / "commands"


def run_program(capsys, name: str, *argv: str) -> tuple[int, list[str]]:
    """``program_status`` of a command; its exit status and its stderr's non-blank lines
    (fairseq's import-time notice aside)."""
    module = ("sequential_rationales_integrations.rationalize_cli" if name == "rationalize"
              else f"sequential_rationales_experiments.commands.{name}")
    main = importlib.import_module(module).main
    status = program_status(main, list(argv))
    lines = [line for line in capsys.readouterr().err.splitlines()
             if line.strip() and "tensorboardX" not in line]
    return status, lines


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


# -- the runner -----------------------------------------------------------------------------
def test_every_program_takes_verbose():
    programs = [p for p in COMMANDS.glob("*.py") if p.stem != "__init__"]
    programs.append(ROOT / "sequential_rationales_integrations" / "rationalize_cli.py")
    assert len(programs) > 20
    for path in programs:
        text = path.read_text(encoding="utf-8")
        assert "ProgramParser(" in text or "runner_parser(" in text or (
            "HfArgumentParser" in text), f"{path.name} does not build its parser with --verbose"


def test_input_error_is_one_line_with_status_2_and_verbose_keeps_the_traceback(capsys):
    def main(argv):
        ProgramParser().parse_args(argv)
        raise InputError("the corpus is empty")

    assert program_status(main, []) == 2
    assert capsys.readouterr().err.splitlines() == ["error: the corpus is empty"]
    with pytest.raises(InputError, match="the corpus is empty"):
        program_status(main, ["--verbose"])


@pytest.mark.parametrize("error, line", [
    (SystemExit("error: --out x is a folder; pass a file path"),
     "error: --out x is a folder; pass a file path"),
    (FileNotFoundError(2, "No such file or directory", "corpus.txt"),
     "error: corpus.txt: No such file or directory"),
    (PermissionError(13, "Permission denied", "/results"), "error: /results: Permission denied"),
    (FileNotFoundError("fairseq checkpoint not found: ckpt.pt"),
     "error: fairseq checkpoint not found: ckpt.pt"),
])
def test_input_errors_of_every_kind_print_one_line(capsys, error, line):
    def main(argv):
        raise error

    assert program_status(main, []) == 2
    assert capsys.readouterr().err.splitlines() == [line]


def test_a_bug_keeps_its_traceback_and_help_exits_0(capsys):
    def buggy(argv):
        raise KeyError("rationalization")

    with pytest.raises(KeyError):
        program_status(buggy, [])
    with pytest.raises(SystemExit) as done:
        program_status(lambda argv: ProgramParser(prog="p").parse_args(argv), ["--help"])
    assert done.value.code == 0 and "--verbose" in capsys.readouterr().out


def test_ctrl_c_is_one_line_with_status_130(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert program_status(interrupted, []) == 130
    assert capsys.readouterr().err.splitlines() == ["interrupted"]


def test_a_script_exits_2_with_one_line(tmp_path):
    done = subprocess.run([sys.executable, "analysis/evaluate_lambada_rationales.py",
                           "--results_dir", str(tmp_path / "absent")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path / 'absent'} does not exist; run "
        "huggingface/rationalize_annotated_lambada.py first"]


@pytest.mark.parametrize("name, argv, message", [
    ("rationalize", ["--model", "{tmp}/absent", "--text", "a b"], "does not exist"),
    ("run_clm", ["--do_train", "--output_dir", "{tmp}/o"], "give --model_name_or_path"),
    ("run_clm", ["--model_type", "gpt2", "--do_train", "--train_file", "{tmp}/corpus.csv",
                 "--output_dir", "{tmp}/o"], "--train_file must be"),
    ("run_translation", ["--model_name_or_path", "{tmp}/m", "--source_lang", "de",
                         "--target_lang", "de", "--do_train", "--output_dir", "{tmp}/o"],
     "are both 'de'"),
    ("rationalize_lambada", ["--model_name_or_path", "{tmp}", "--data_dir", "{tmp}"],
     "annotated_lambada.json not found in"),
    ("rationalize_analogies", ["--model_name_or_path", "{tmp}", "--data_dir", "{tmp}"],
     "questions-words.txt not found in"),
    ("evaluate_analogies_rationales", ["--results_dir", "{tmp}/absent"], "does not exist"),
    ("evaluate_distractor_rationales", ["--results_dir", "{tmp}/absent"], "does not exist"),
    ("evaluate_alignment_rationales", ["--results_dir", "{tmp}/absent"], "does not exist"),
    ("download_data", ["--source", "{tmp}/absent", "--data_dir", "{tmp}/d"], "lacks"),
    ("run_roar", ["--out", "{tmp}/file/x"], "cannot write to the output folder"),
    ("run_majority_class", ["--out", "{tmp}/file/x"], "cannot write to the output folder"),
    ("demo", ["--out", "{tmp}/file/x"], "Not a directory"),
])
def test_every_program_reports_bad_input_in_one_line(capsys, tmp_path, name, argv, message):
    (tmp_path / "file").write_text("a file, not a folder\n")
    status, lines = run_program(capsys, name, *(a.format(tmp=tmp_path) for a in argv))
    assert status == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_fairseq_programs_report_bad_input_in_one_line(capsys, tmp_path):
    pytest.importorskip("fairseq")
    status, lines = run_program(capsys, "rationalize_iwslt", "--checkpoint_dir",
                                str(tmp_path / "absent"), "--out", str(tmp_path / "out"))
    assert status == 2 and lines == [
        f"error: fairseq checkpoint not found: {tmp_path}/absent/compatible_iwslt/"
        "checkpoint_best.pt"]
    status, lines = run_program(capsys, "create_distractor_dataset", "--source",
                                str(tmp_path / "absent"), "--translations",
                                str(tmp_path / "absent"), "--out-dir", str(tmp_path / "o"))
    assert status == 2 and lines == [f"error: {tmp_path / 'absent'}: No such file or directory"]


# -- model files ------------------------------------------------------------------------------
class Evil:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (str(self.marker),))


def _damage(folder: Path, kind: str) -> Path:
    weights = folder / "model.safetensors"
    size = weights.stat().st_size
    if kind == "empty":
        weights.write_bytes(b"")
    elif kind == "truncated":
        os.truncate(weights, size // 2)
    elif kind == "random":
        weights.write_bytes(torch.randint(0, 256, (size,), dtype=torch.uint8,
                                          generator=torch.Generator().manual_seed(0)).numpy()
                            .tobytes())
    else:
        weights.unlink()
        weights = folder / "pytorch_model.bin"
        if kind == "pickle":
            torch.save({"weight": Evil(folder / "pwned")}, weights)
        else:
            weights.write_bytes(b"not a pickle at all" * 8)
    return weights


@pytest.mark.parametrize("kind, message", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is not a complete safetensors file"),
    ("random", "is not a complete safetensors file"),
    ("pickle", "holds code that safe loading refuses (it calls "),
    ("garbage", "is not a readable PyTorch weight file"),
])
def test_unreadable_weight_files_are_named(capsys, tmp_path, lm_dir, kind, message):
    folder = tmp_path / "model"
    shutil.copytree(lm_dir, folder)
    weights = _damage(folder, kind)
    out = tmp_path / "out.jsonl"
    status, lines = run_program(capsys, "rationalize", "--model", str(folder), "--text", "a b",
                                "--out", str(out), "--device", "cpu")
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"error: {weights} {message}"), lines
    assert not (folder / "pwned").exists(), "the pickle ran"
    assert not out.exists()


# -- text that is not UTF-8 ---------------------------------------------------------------------
def test_non_utf8_text_is_named_with_line_and_byte(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"first line\nsecond caf" + b"\xe9\nthird\n")
    expected = f"{path}, line 2, byte 21: not UTF-8 text"
    with pytest.raises(InputError, match=expected.replace(".", r"\.")):
        list(utf8_lines(path))
    with pytest.raises(InputError, match=expected.replace(".", r"\.")):
        read_utf8(path)


def test_non_utf8_input_is_one_line(capsys, tmp_path, lm_dir):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"the cat\n\xff\xfe latin-1 or utf-16\n")
    status, lines = run_program(capsys, "rationalize", "--model", str(lm_dir), "--input",
                                str(path), "--device", "cpu")
    assert status == 2
    assert lines == [f"error: {path}, line 2, byte 8: not UTF-8 text (invalid start byte); "
                     "save the file as UTF-8"]


def test_a_byte_order_mark_is_not_part_of_the_text(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "the cat sat"}).encode() + b"\r\n")
    assert list(utf8_lines(path)) == ['{"text": "the cat sat"}']
    from sequential_rationales_integrations.rationalize_cli import read_inputs

    assert [item.text for item in read_inputs(None, str(path))] == ["the cat sat"]


# -- devices, flags that do not apply -----------------------------------------------------------
@pytest.mark.parametrize("device, message", [
    ("meta", "computed on cpu, cuda or mps (a meta tensor holds no values)"),
    ("xpu", "computed on cpu, cuda or mps"),
    ("mps", "MPS is not available"),
])
def test_devices_that_cannot_run_are_one_line(capsys, lm_dir, device, message):
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    status, lines = run_program(capsys, "rationalize", "--model", str(lm_dir), "--text", "a b",
                                "--device", device)
    assert status == 2 and len(lines) == 1 and message in lines[0], lines


def test_data_with_a_hugging_face_model_is_refused(capsys, tmp_path, lm_dir):
    status, lines = run_program(capsys, "rationalize", "--model", str(lm_dir), "--data",
                                str(tmp_path), "--text", "the cat", "--device", "cpu")
    assert status == 2 and len(lines) == 1
    assert "takes none (leave --data out)" in lines[0]


def test_huge_max_steps_is_the_whole_context(lm_dir):
    from transformers import AutoModelForCausalLM

    from sequential_rationales import rationalize_sequence
    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

    adapter = HuggingFaceCausalLM(AutoModelForCausalLM.from_pretrained(lm_dir))
    ids = torch.tensor([3, 5, 7, 2, 9, 4])
    huge = rationalize_sequence(adapter, ids, str, max_steps=10**20)[1]
    whole = rationalize_sequence(adapter, ids, str, max_steps=len(ids))[1]
    assert huge["all_rationales"] == whole["all_rationales"]
    with pytest.raises(TypeError, match="decode must be a function from a token id"):
        rationalize_sequence(adapter, ids, None)


# -- fairseq: flags rejected while fairseq parses them ------------------------------------------
@pytest.mark.parametrize("arch, task", [("compatible_transformer", "translation"),
                                        ("transformer_lm_majority_class", "language_modeling")])
@pytest.mark.parametrize("flags, message", [
    (["--word-dropout-mixture", "1.5"],
     "argument --word-dropout-mixture: must be a probability in [0, 1], got 1.5"),
    (["--word-dropout-mixture", "half"],
     "argument --word-dropout-mixture: expected a number, got 'half'"),
    (["--word-dropout-per-head", "--word-dropout-per-example"],
     "argument --word-dropout-per-example: not allowed with argument --word-dropout-per-head"),
])
def test_fairseq_rejects_bad_word_dropout_flags_while_parsing(capsys, arch, task, flags,
                                                              message):
    pytest.importorskip("fairseq")
    from fairseq import options

    import sequential_rationales_integrations.fairseq  # noqa: F401  (registers the models)

    parser = options.get_training_parser()
    with pytest.raises(SystemExit) as done:
        options.parse_args_and_arch(parser, ["data", "--task", task, "--arch", arch, *flags])
    assert done.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"error: {message}")
    args = options.parse_args_and_arch(options.get_training_parser(), [
        "data", "--task", task, "--arch", arch, "--word-dropout-mixture", "0.5"])
    assert args.word_dropout_mixture == 0.5
