"""LoRA compatibility fine-tuning (``--use_peft``) and PEFT adapter folders wherever a model
folder goes: training writes only the adapter, word dropout still reaches the model, and the
adapter rationalizes exactly as the base model with the adapter merged in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sequential_rationales as sr

from .test_rationalize_cli import read, save_tiny_lm, without_durations
from .test_run_clm import LLAMA, RecordingTrainer, data_dir, record_batches  # noqa: F401

pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")

from sequential_rationales_experiments.commands import run_clm  # noqa: E402


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, data_dir):  # noqa: F811
    """A pretrained (random) tiny Llama with the corpus' tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("base")
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    config = AutoConfig.for_model("llama")
    config.update_from_string(LLAMA + f",vocab_size={len(tokenizer)}")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def lora_args(data_dir: Path, base: Path, out: Path, *extra: str) -> list[str]:  # noqa: F811
    return ["--model_name_or_path", str(base), "--train_file", str(data_dir / "train.txt"),
            "--validation_file", str(data_dir / "valid.txt"), "--block_size", "32",
            "--output_dir", str(out), "--use_cpu", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--use_peft", "--lora_r", "4",
            "--learning_rate", "1e-2", *extra]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, data_dir, base_dir):  # noqa: F811
    out = tmp_path_factory.mktemp("adapter")
    run_clm.main(lora_args(data_dir, base_dir, out, "--do_train", "--max_steps", "6",
                           "--word_dropout_mixture", "0.5"))
    return out


def test_training_writes_the_adapter_only_and_leaves_the_base(base_dir, adapter_dir):
    from safetensors.torch import load_file

    names = {p.name for p in adapter_dir.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    assert "model.safetensors" not in names and "config.json" not in names
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(base_dir.resolve())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    assert weights and all("lora_" in name for name in weights)
    assert any(w.abs().max() > 0 for name, w in weights.items() if "lora_B" in name)


def test_word_dropout_reaches_the_adapted_model(data_dir, base_dir, tmp_path,  # noqa: F811
                                                monkeypatch):
    record_batches(monkeypatch)
    run_clm.main(lora_args(data_dir, base_dir, tmp_path / "out", "--do_train", "--max_steps",
                           "2", "--word_dropout_mixture", "1.0",
                           "--word_dropout_attention", "mask"))
    assert RecordingTrainer.train_ranks == [4, 4]  # dense word-dropout masks in every batch


def test_an_adapter_folder_evaluates_as_the_merged_model(data_dir, base_dir,  # noqa: F811
                                                          adapter_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    results = run_clm.main(["--model_name_or_path", str(adapter_dir), "--validation_file",
                            str(data_dir / "valid.txt"), "--block_size", "32", "--do_eval",
                            "--output_dir", str(tmp_path / "eval"), "--use_cpu",
                            "--report_to", "none", "--disable_tqdm", "true"])
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                       str(adapter_dir)).merge_and_unload().eval()
    merged.save_pretrained(tmp_path / "merged")
    expected = run_clm.main(["--model_name_or_path", str(tmp_path / "merged"),
                             "--tokenizer_name", str(base_dir), "--validation_file",
                             str(data_dir / "valid.txt"), "--block_size", "32", "--do_eval",
                             "--output_dir", str(tmp_path / "eval2"), "--use_cpu",
                             "--report_to", "none", "--disable_tqdm", "true"])
    assert results["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)


def test_an_adapter_rationalizes_as_its_merged_model(base_dir, adapter_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = "w3 w4 w5 w6 w7 w8"
    by_folder = sr.load(adapter_dir, device="cpu").rationalize(text)
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir),
                                           str(adapter_dir))
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    by_object = sr.load(peft_model, tokenizer).rationalize(text)
    assert by_folder[0]["all_rationales"] == by_object[0]["all_rationales"]
    assert isinstance(peft_model, PeftModel)  # the caller's model is left as it was
    # The command, with the base named explicitly, and its provenance.
    from sequential_rationales_integrations import rationalize_cli

    out = tmp_path / "out.jsonl"
    rationalize_cli.main(["--model", str(adapter_dir), "--base-model", str(base_dir),
                          "--device", "cpu", "--text", text, "--out", str(out)])
    assert without_durations(read(out)) == without_durations(by_folder.records)
    record = json.loads(out.with_name("out.provenance.json").read_text())
    assert record["base_model"]["path"] == str(base_dir.resolve())
    assert record["base_model"]["fingerprint"] is not None


def test_adapter_errors_are_one_line(base_dir, adapter_dir, tmp_path):
    with pytest.raises(sr.InputError, match="--base-model is for adapter folders"):
        sr.load(base_dir, base_model=base_dir)
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (moved / name).write_bytes((adapter_dir / name).read_bytes())
    config = json.loads((moved / "adapter_config.json").read_text())
    (moved / "adapter_config.json").write_text(json.dumps(
        {**config, "base_model_name_or_path": str(tmp_path / "gone")}))
    with pytest.raises(sr.InputError, match="base model directory .*gone does not exist"):
        sr.load(moved, tokenizer=base_dir)
    other = save_tiny_lm(tmp_path / "other")  # a GPT-2: no q_proj / v_proj modules
    with pytest.raises(sr.InputError, match="does not fit the base model GPT2LMHeadModel"):
        sr.load(moved, tokenizer=base_dir, base_model=other)


@pytest.mark.parametrize("extra, message", [
    (["--lora_r", "0"], "--lora_r must be >= 1"),
    (["--lora_dropout", "1.0"], r"--lora_dropout must be in \[0, 1\)"),
    (["--lora_target_modules", "no_such_module"], "--use_peft: "),
])
def test_bad_lora_flags_are_one_line(data_dir, base_dir, tmp_path, extra, message):  # noqa: F811
    with pytest.raises(sr.InputError, match=message):
        run_clm.main(lora_args(data_dir, base_dir, tmp_path / "o", "--do_train",
                               "--max_steps", "1", *extra))


def test_lora_needs_a_pretrained_model(data_dir, tmp_path):  # noqa: F811
    with pytest.raises(sr.InputError, match="--use_peft fine-tunes a pretrained model"):
        run_clm.main(["--model_type", "llama", "--config_overrides", LLAMA, "--tokenizer_name",
                      str(data_dir / "tokenizer"), "--train_file", str(data_dir / "train.txt"),
                      "--block_size", "32", "--do_train", "--max_steps", "1", "--use_cpu",
                      "--report_to", "none", "--output_dir", str(tmp_path / "o"),
                      "--use_peft"])


def test_the_compatibility_experiment_runs_and_counts_what_it_trains(tmp_path):
    from transformers import AutoModelForCausalLM

    from sequential_rationales_experiments.commands import lora_compatibility

    out = tmp_path / "lora"
    summary = lora_compatibility.main([
        "--out", str(out), "--bits", "5", "--train-sentences", "300", "--rationalize", "20",
        "--base-steps", "8", "--steps", "4", "--batch-size", "16", "--dim", "16",
        "--lora-r", "2"])
    rows = summary["rows"]
    assert list(rows) == ["standard base", "full + word dropout", "LoRA + word dropout",
                          "LoRA, no word dropout"]
    base = AutoModelForCausalLM.from_pretrained(out / "base")
    everything = sum(p.numel() for p in base.state_dict().values())
    # all-linear: every Linear of the blocks gets r * (in + out) weights; the head gets none.
    adapters = sum(2 * (m.in_features + m.out_features) for name, m in base.named_modules()
                   if isinstance(m, torch.nn.Linear) and name != "lm_head")
    assert rows["standard base"]["trained_parameters"] == everything
    assert rows["full + word dropout"]["trained_parameters"] == everything
    assert rows["LoRA + word dropout"]["trained_parameters"] == adapters
    assert rows["LoRA, no word dropout"]["trained_parameters"] == adapters
    for index in (1, 2):
        assert (out / f"run{index}" / "adapter_config.json").is_file()
    for row in rows.values():
        assert 0.0 <= row["calibration_mae"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert json.loads((out / "summary.json").read_text())["rows"] == rows
