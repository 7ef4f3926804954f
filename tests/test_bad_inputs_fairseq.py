"""Bad input on the fairseq side: each class gives an error that names the problem (and the
file, where there is one) instead of a silent result or a framework traceback."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from sequential_rationales_experiments import fairseq_tools, tables
from sequential_rationales_experiments.commands import (
    create_distractor_dataset,
    map_alignments_to_bpe,
    prepare_iwslt14,
    rationalize_iwslt,
    run_majority_class,
    run_translation_benchmark,
)

from .fairseq_helpers import REPO_ROOT, make_dictionary, tiny_lm, tiny_translation

sys.path.insert(0, str(REPO_ROOT / "fairseq"))
import rationalization  # noqa: E402  (the seed's module, run from fairseq/ as in the seed)

sys.path.pop(0)

# --- numeric flags: rejected at parse time ------------------------------------------------------

IWSLT = ["--checkpoint_dir", "checkpoints"]


@pytest.mark.parametrize("parse, argv, flag", [
    (run_majority_class.parse_args, ["--rationalize", "-3"], "--rationalize"),
    (run_majority_class.parse_args, ["--rationalize", "0"], "--rationalize"),
    (run_majority_class.parse_args, ["--train-lines", "0"], "--train-lines"),
    (run_majority_class.parse_args, ["--max-update", "-1"], "--max-update"),
    (run_majority_class.parse_args, ["--calibration-sentences", "0"], "--calibration-sentences"),
    (run_majority_class.parse_args, ["--seed", "-1"], "--seed"),
    (run_translation_benchmark.parse_args, ["--rationalize", "0"], "--rationalize"),
    (run_translation_benchmark.parse_args, ["--test-pairs", "-5"], "--test-pairs"),
    (run_translation_benchmark.parse_args, ["--standard-updates", "0"], "--standard-updates"),
    (run_translation_benchmark.parse_args, ["--integrated-gradient-steps", "x"],
     "--integrated-gradient-steps"),
    (rationalize_iwslt.parse_args, [*IWSLT, "--limit", "-1"], "--limit"),
    (rationalize_iwslt.parse_args, [*IWSLT, "--limit", "0"], "--limit"),
    (prepare_iwslt14.build_parser().parse_args, ["--workers", "0"], "--workers"),
    (prepare_iwslt14.build_parser().parse_args, ["--bpe-merges", "-2"], "--bpe-merges"),
    (prepare_iwslt14.build_parser().parse_args, ["--timeout", "nan"], "--timeout"),
    (create_distractor_dataset.build_parser().parse_args,
     ["--source", "s", "--translations", "t", "--out-dir", "o", "--num-pairs", "ten"],
     "--num-pairs"),
])
def test_bad_numeric_flags_are_rejected_at_parse_time(parse, argv, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and ("must be" in err or "expected" in err)


# --- models of the wrong kind --------------------------------------------------------------------


def test_translation_model_passed_to_the_lm_functions():
    model, _, _ = tiny_translation()
    ids = torch.tensor([2, 5, 6, 7])
    for function in (rationalization.rationalize_lm, rationalization.exhaustive_rationalize_lm):
        with pytest.raises(TypeError, match="encoder-decoder.*rationalize_conditional_model"):
            function(model, ids, verbose=False)
    with pytest.raises(TypeError, match="encoder-decoder"):
        rationalization.baseline_rationalize_lm(model, ids, "gradient_norm", verbose=False)


def test_language_model_passed_to_the_conditional_functions():
    model, _, _ = tiny_lm()
    with pytest.raises(TypeError, match="language model.*rationalize_lm"):
        rationalization.rationalize_conditional_model(
            model, torch.tensor([5, 6, 2]), torch.tensor([2, 7, 8]), verbose=False)


def _stock_models():
    """Tiny stock fairseq ``transformer`` and ``transformer_lm`` models (no plugin)."""
    from types import SimpleNamespace

    from fairseq.models.transformer import TransformerModel, base_architecture
    from fairseq.models.transformer_lm import TransformerLanguageModel, base_lm_architecture

    sizes = dict(encoder_layers=1, decoder_layers=1, encoder_embed_dim=16,
                 decoder_embed_dim=16, encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32,
                 encoder_attention_heads=2, decoder_attention_heads=2, dropout=0.0,
                 max_source_positions=64, max_target_positions=64, tokens_per_sample=64)
    mt_args = argparse.Namespace(**sizes)
    base_architecture(mt_args)
    task = SimpleNamespace(source_dictionary=make_dictionary(),
                           target_dictionary=make_dictionary())
    lm_args = argparse.Namespace(**sizes)
    base_lm_architecture(lm_args)
    return (TransformerModel.build_model(mt_args, task),
            TransformerLanguageModel.build_model(lm_args, task))


def test_stock_fairseq_architectures_are_refused_in_one_sentence():
    stock_mt, stock_lm = _stock_models()
    with pytest.raises(TypeError, match="takes no `positions`.*stock fairseq.*plugin"):
        rationalization.rationalize_conditional_model(
            stock_mt, torch.tensor([5, 6, 2]), torch.tensor([2, 7, 8]), verbose=False)
    with pytest.raises(TypeError, match="takes no `positions`.*stock fairseq.*plugin"):
        rationalization.rationalize_lm(stock_lm, torch.tensor([2, 5, 6, 7]), verbose=False)


@pytest.mark.parametrize("ids, where", [([2, 5, 1, 6], "[2]"), ([2, 5, 6, 1, 1], "[3, 4]")])
def test_pad_ids_in_lm_input_are_rejected(ids, where):
    model, _, _ = tiny_lm()
    with pytest.raises(ValueError, match=re.escape(f"pad id 1 at positions {where}")):
        rationalization.rationalize_lm(model, torch.tensor(ids), verbose=False)


@pytest.mark.parametrize("ids, message", [([2, 5, 99], "outside the vocabulary"),
                                          ([2, -1, 5], "outside the vocabulary")])
def test_out_of_vocabulary_ids_are_rejected(ids, message):
    model, _, _ = tiny_lm()
    with pytest.raises(ValueError, match=message):
        rationalization.rationalize_lm(model, torch.tensor(ids), verbose=False)


# --- empty data files ------------------------------------------------------------------------


def test_empty_alignment_inputs_are_an_error(tmp_path, capsys):
    for name in ("src", "tgt", "align"):
        (tmp_path / name).write_text("")
    code = map_alignments_to_bpe.main(["--source", str(tmp_path / "src"), "--target",
                                       str(tmp_path / "tgt"), "--alignments",
                                       str(tmp_path / "align"), "--out",
                                       str(tmp_path / "out.jsonl")])
    assert code == 2
    assert f"{tmp_path / 'src'} is empty" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_empty_distractor_inputs_are_an_error(tmp_path, capsys):
    for name in ("src", "hyp"):
        (tmp_path / name).write_text("")
    code = create_distractor_dataset.main(["--source", str(tmp_path / "src"), "--translations",
                                           str(tmp_path / "hyp"), "--out-dir",
                                           str(tmp_path / "out")])
    assert code == 2
    assert "at least two examples" in capsys.readouterr().err


def test_empty_jsonl_of_gold_data_is_an_error(tmp_path):
    path = tmp_path / "distractors.jsonl"
    path.write_text("\n")
    with pytest.raises(SystemExit, match=f"{path} is empty"):
        tables.read_indexed_jsonl(path, "create_distractor_dataset.py")


# --- checkpoints: malicious, bit-flipped, random, truncated --------------------------------------


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte inside the stored (uncompressed) data of the checkpoint's first tensor."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if "/data/" in i.filename)
    data = bytearray(path.read_bytes())
    name_len = int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.compress_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _checkpoint(path: Path) -> Path:
    torch.save({"model": {"w": torch.randn(256)}, "cfg": {"task": {"_name": "translation"}}},
               path)
    return path


@pytest.mark.parametrize("damage, message", [
    ("malicious", "safe loading does not allow: .*posix.system"),
    ("bit_flip", "CRC of its entry .*data/0 does not match"),
    ("random_0", "corrupt or truncated"),
    ("random_1", "corrupt or truncated"),
    ("random_2", "corrupt or truncated"),
    ("truncated", "corrupt or truncated"),
    ("empty", "is empty"),
])
def test_damaged_checkpoints_name_the_file(tmp_path, damage, message):
    from sequential_rationales_integrations.fairseq import read_checkpoint

    path = _checkpoint(tmp_path / f"{damage}.pt")
    if damage == "malicious":
        torch.save({"model": {}, "x": _Evil()}, path)
    elif damage == "bit_flip":
        _flip_tensor_byte(path)
        assert torch.load(path, weights_only=True)["model"]["w"].numel() == 256  # torch: silent
    elif damage.startswith("random"):
        path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator()
                                       .manual_seed(int(damage[-1]))).to(torch.uint8).numpy()
                         .tobytes())
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:600])
    else:
        path.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{path}.*{message}") as error:
        read_checkpoint(path)
    assert "set to `False`" not in str(error.value)  # no advice to turn safe loading off


def test_fairseq_own_loading_checks_crcs_once_the_plugin_is_imported(tmp_path):
    """What fairseq-train/-generate/-eval-lm call with --user-dir: a bit flip is named, not
    loaded; an empty file is named, not a bare EOFError."""
    from fairseq import checkpoint_utils

    import sequential_rationales_integrations.fairseq  # noqa: F401

    path = _checkpoint(tmp_path / "flipped.pt")
    _flip_tensor_byte(path)
    with pytest.raises(ValueError, match=f"{path}.*CRC"):
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=f"{empty} is empty"):
        checkpoint_utils.load_checkpoint_to_cpu(str(empty))


def test_fairseq_cli_names_a_corrupt_checkpoint(tmp_path):
    """The shim --user-dir imports installs the check in the CLI's process too."""
    path = _checkpoint(tmp_path / "flipped.pt")
    _flip_tensor_byte(path)
    code = ("import sys; sys.argv = ['x', '--user-dir', 'fairseq/sequential_rationales_plugin']\n"
            "from fairseq import options, utils, checkpoint_utils\n"
            "utils.import_user_module(options.get_generation_parser().parse_known_args()[0])\n"
            f"checkpoint_utils.load_checkpoint_to_cpu({str(path)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert f"InputError: fairseq checkpoint {path} is corrupt" in proc.stderr


# --- result files: torn JSON, malformed JSONL ---------------------------------------------------


@pytest.mark.parametrize("text, line", [('{"a": 1,\n "b": ', 2), ("", 1), ("[1, 2]", 1)])
def test_torn_result_json_names_file_and_line(tmp_path, text, line):
    (tmp_path / "0.json").write_text('{"ok": 1}')
    (tmp_path / "7.json").write_text(text)
    with pytest.raises(SystemExit, match=rf"{tmp_path / '7.json'}, line {line}"):
        tables.load_results(tmp_path)


@pytest.mark.parametrize("bad, message", [('{"index": 2, "x": ', "not valid JSON"),
                                          ('{"x": 1}', 'no "index"'),
                                          ("3", "expected a JSON object")])
def test_malformed_jsonl_names_file_and_line(tmp_path, bad, message):
    path = tmp_path / "gold.jsonl"
    path.write_text(json.dumps({"index": 0}) + "\n\n" + bad + "\n")
    with pytest.raises(SystemExit, match=rf"{path}, line 3: .*{message}"):
        tables.read_indexed_jsonl(path, "map_alignments_to_bpe.py")


# --- output folders that cannot be written: refused before any work ------------------------------


def _unwritable(tmp_path: Path, kind: str) -> Path:
    if kind == "under_a_file":
        (tmp_path / "file").write_text("")
        return tmp_path / "file" / "out"
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o500)
    return folder


@pytest.mark.parametrize("kind", ["under_a_file", "read_only"])
@pytest.mark.parametrize("program, argv", [
    (run_majority_class.main, ["--quick"]),
    (run_translation_benchmark.main, ["--quick"]),
    (rationalize_iwslt.main, IWSLT),
])
def test_unwritable_output_folder_fails_first(tmp_path, monkeypatch, kind, program, argv):
    out = _unwritable(tmp_path, kind)

    def no_tool(*args, **kwargs):
        raise AssertionError("a step ran before the output folder was checked")

    monkeypatch.setattr(fairseq_tools, "run", no_tool)
    monkeypatch.setattr(fairseq_tools, "write_text_atomic", no_tool)
    with pytest.raises(SystemExit, match=f"cannot write to the output folder {out}"):
        program([*argv, "--out", str(out)])


# --- a failing fairseq CLI: the step and the log tail -------------------------------------------


def test_failing_tool_names_the_step_and_keeps_the_log_tail(tmp_path):
    log = tmp_path / "train.log"
    command = [sys.executable, "-c", "print('Dataset not found: valid'); raise SystemExit(3)"]
    with pytest.raises(RuntimeError) as error:
        fairseq_tools.run(command, log, step="training standard")
    message = str(error.value)
    assert "step 'training standard' failed" in message and "exited with 3" in message
    assert str(log) in message and "Dataset not found: valid" in message
