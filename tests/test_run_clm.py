"""End-to-end runs of huggingface/run_clm.py with tiny models trained from scratch (CPU)."""

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

from sequential_rationales_experiments.commands import run_clm  # noqa: E402
from sequential_rationales_integrations.huggingface import training  # noqa: E402
from sequential_rationales_integrations.huggingface.word_dropout import (  # noqa: E402
    KEEP_KWARG,
    WORD_DROPOUT_FLEX,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
WORDS = [f"w{i}" for i in range(40)]
SPECIALS = ["<unk>", "<pad>", "</s>"]
GPT2 = "n_layer=2,n_embd=32,n_head=2,n_positions=64"
LLAMA = ("num_hidden_layers=2,hidden_size=32,num_attention_heads=4,num_key_value_heads=2,"
         "intermediate_size=64,max_position_embeddings=64")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A word-level tokenizer and a small corpus of counting-like word sequences."""
    root = tmp_path_factory.mktemp("clm_data")
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                            eos_token="</s>").save_pretrained(root / "tokenizer")
    rng = random.Random(0)

    def document() -> str:
        start, length = rng.randrange(len(WORDS)), rng.randint(3, 25)
        return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(length))

    (root / "train.txt").write_text("\n".join(document() for _ in range(300)) + "\n")
    (root / "valid.txt").write_text("\n".join(document() for _ in range(40)) + "\n")
    with open(root / "valid.jsonl", "w") as f:
        for line in (root / "valid.txt").read_text().splitlines():
            f.write(json.dumps({"text": line, "id": 0}) + "\n")
    return root


def run(monkeypatch, *args: str) -> dict:
    """``run_clm.main()`` with ``sys.argv`` set to ``args``."""
    monkeypatch.setattr(sys, "argv", ["run_clm.py", *args])
    return run_clm.main()


def scratch_args(data_dir: Path, out: Path, model_type: str = "gpt2",
                 overrides: str = GPT2) -> list[str]:
    return ["--model_type", model_type, "--config_overrides", overrides,
            "--tokenizer_name", str(data_dir / "tokenizer"),
            "--train_file", str(data_dir / "train.txt"),
            "--validation_file", str(data_dir / "valid.txt"),
            "--block_size", "32", "--output_dir", str(out), "--use_cpu",
            "--save_strategy", "no", "--disable_tqdm", "true", "--report_to", "none",
            "--per_device_train_batch_size", "8", "--per_device_eval_batch_size", "8"]


class RecordingTrainer(run_clm.WordDropoutTrainer):
    """Records the attention-mask rank of every training and evaluation batch, and which
    training batches carried a compact word-dropout keep mask."""

    train_ranks: list[int] = []
    eval_ranks: list[int] = []
    train_keeps: list[bool] = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            mask = inputs.get("attention_mask")
            self.train_ranks.append(0 if mask is None else mask.dim())
            self.train_keeps.append(KEEP_KWARG in inputs)
        return super().compute_loss(model, inputs, *args, **kwargs)

    def prediction_step(self, model, inputs, *args, **kwargs):
        mask = inputs.get("attention_mask")
        self.eval_ranks.append(0 if mask is None else mask.dim())
        return super().prediction_step(model, inputs, *args, **kwargs)


def record_batches(monkeypatch) -> None:
    """Make run_clm use a RecordingTrainer with fresh records."""
    for name in ("train_ranks", "eval_ranks", "train_keeps"):
        monkeypatch.setattr(RecordingTrainer, name, [])
    monkeypatch.setattr(run_clm, "WordDropoutTrainer", RecordingTrainer)


def test_gpt2_from_scratch_with_word_dropout(data_dir, tmp_path, monkeypatch):
    record_batches(monkeypatch)
    out, tb = tmp_path / "out", tmp_path / "tb"
    args = scratch_args(data_dir, out)
    args[args.index("--report_to") + 1] = "tensorboard"
    results = run(monkeypatch, *args, "--do_train", "--do_eval", "--max_steps", "12",
                  "--learning_rate", "3e-3", "--logging_steps", "2", "--logging_dir", str(tb),
                  "--word_dropout_mixture", "0.5", "--word_dropout_type", "inverse_length")

    eval_metrics = json.loads((out / "eval_results.json").read_text())
    assert math.isfinite(eval_metrics["perplexity"])
    assert eval_metrics["perplexity"] == pytest.approx(math.exp(eval_metrics["eval_loss"]))
    all_results = json.loads((out / "all_results.json").read_text())
    assert "train_loss" in all_results and "perplexity" in all_results
    assert results["perplexity"] == eval_metrics["perplexity"]
    # 12 steps from a uniform start (log 43 = 3.76) on very regular text must learn something.
    assert eval_metrics["eval_loss"] < math.log(len(SPECIALS) + len(WORDS))

    # Word dropout: some training batches had per-head 4-D masks, evaluation had none.
    assert len(RecordingTrainer.train_ranks) == 12
    assert 4 in RecordingTrainer.train_ranks and 0 in RecordingTrainer.train_ranks
    assert RecordingTrainer.eval_ranks and set(RecordingTrainer.eval_ranks) == {0}

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) == len(SPECIALS) + len(WORDS)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.n_layer == 2
    assert list(tb.rglob("events.out.tfevents.*")), "no TensorBoard event file"


def test_llama_from_scratch_smoke(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    results = run(monkeypatch, *scratch_args(data_dir, out, "llama", LLAMA),
                  "--do_train", "--do_eval", "--max_steps", "3", "--max_eval_samples", "4",
                  "--word_dropout_mixture", "1.0", "--word_dropout_per_head", "true")
    assert math.isfinite(results["perplexity"]) and results["eval_samples"] == 4
    assert AutoModelForCausalLM.from_pretrained(out).config.model_type == "llama"


@pytest.mark.parametrize("model_type, overrides", [
    ("gpt2", GPT2 + ",attn_pdrop=0.0"), ("llama", LLAMA)], ids=["gpt2", "llama"])
def test_flex_word_dropout_trains(data_dir, tmp_path, monkeypatch, model_type, overrides):
    record_batches(monkeypatch)
    out = tmp_path / "out"
    results = run(monkeypatch, *scratch_args(data_dir, out, model_type, overrides),
                  "--do_train", "--do_eval", "--max_steps", "3", "--max_eval_samples", "4",
                  "--word_dropout_mixture", "1.0", "--word_dropout_type", "inverse_length",
                  "--word_dropout_attention", "flex")
    assert math.isfinite(results["train_loss"]) and math.isfinite(results["perplexity"])
    # Compact keep masks, no 4-D masks; evaluation uses the full context.
    assert RecordingTrainer.train_keeps == [True] * 3
    assert set(RecordingTrainer.train_ranks) == {0}
    assert set(RecordingTrainer.eval_ranks) == {0}
    # The attention implementation is a training-time choice: it is not saved.
    assert WORD_DROPOUT_FLEX not in (out / "config.json").read_text()
    assert AutoModelForCausalLM.from_pretrained(out).config._attn_implementation == "sdpa"


def test_attention_dropout_flag_opens_the_flex_path_for_pretrained_models(
        data_dir, tmp_path, monkeypatch):
    # A "pretrained" GPT-2 with the stock attention dropout (0.1), which flex cannot apply.
    model_dir = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    config = AutoConfig.for_model("gpt2")
    config.update_from_string(GPT2 + f",vocab_size={len(tokenizer)}")
    assert config.attn_pdrop > 0
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    args = ["--model_name_or_path", str(model_dir), "--train_file", str(data_dir / "train.txt"),
            "--block_size", "32", "--do_train", "--max_steps", "1", "--use_cpu",
            "--report_to", "none", "--word_dropout_mixture", "1.0",
            "--word_dropout_attention", "flex"]
    with pytest.raises(ValueError, match="attention dropout"):
        run(monkeypatch, *args, "--output_dir", str(tmp_path / "refused"))
    record_batches(monkeypatch)
    out = tmp_path / "out"
    run(monkeypatch, *args, "--output_dir", str(out), "--attention_dropout", "0")
    assert RecordingTrainer.train_keeps == [True]
    assert json.loads((out / "config.json").read_text())["attn_pdrop"] == 0.0
    with pytest.raises(ValueError, match="--attention_dropout must be in"):
        run(monkeypatch, *args, "--output_dir", str(out), "--attention_dropout", "1.5")


def test_auto_word_dropout_attention_on_cpu_is_the_dense_mask(data_dir, tmp_path, monkeypatch):
    record_batches(monkeypatch)
    run(monkeypatch, *scratch_args(data_dir, tmp_path, "llama", LLAMA), "--do_train",
        "--max_steps", "1", "--word_dropout_mixture", "1.0", "--word_dropout_attention", "auto")
    assert RecordingTrainer.train_ranks == [4] and RecordingTrainer.train_keeps == [False]


MISTRAL = LLAMA + ",sliding_window=4"


def test_word_dropout_masks_keep_the_models_sliding_window(data_dir, tmp_path, monkeypatch):
    batches = []

    class Recording(run_clm.WordDropoutTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                batches.append(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(run_clm, "WordDropoutTrainer", Recording)
    run(monkeypatch, *scratch_args(data_dir, tmp_path, "mistral", MISTRAL), "--do_train",
        "--max_steps", "1", "--word_dropout_mixture", "1.0", "--word_dropout_attention", "mask")
    mask = batches[0]["attention_mask"]
    assert mask.shape[-2:] == (32, 32)
    # A dense mask replaces Mistral's own: it must hold the window (and explicit positions).
    distance = torch.arange(32)[:, None] - torch.arange(32)[None, :]
    assert not mask[..., distance >= 4].any()
    assert mask.diagonal(dim1=-2, dim2=-1).all()
    assert batches[0]["position_ids"].tolist() == [list(range(32))] * len(mask)


def test_word_dropout_refuses_families_it_cannot_serve(data_dir, tmp_path, monkeypatch):
    args = scratch_args(data_dir, tmp_path, "bloom", "n_layer=2,hidden_size=32,n_head=4")
    with pytest.raises(ValueError, match="^BloomForCausalLM cannot .* ALiBi"):
        run(monkeypatch, *args, "--do_train", "--max_steps", "1", "--word_dropout_mixture", "0.5")


def test_eval_only_matches_full_context_loss(data_dir, tmp_path, monkeypatch):
    # A saved random GPT-2 is evaluated from a local directory on the .jsonl validation set.
    model_dir = tmp_path / "model"
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    config = AutoConfig.for_model("gpt2")
    config.update_from_string(GPT2 + f",vocab_size={len(tokenizer)}")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    out = tmp_path / "out"
    results = run(monkeypatch, "--model_name_or_path", str(model_dir),
                  "--validation_file", str(data_dir / "valid.jsonl"), "--block_size", "16",
                  "--do_eval", "--per_device_eval_batch_size", "4", "--output_dir", str(out),
                  "--use_cpu", "--report_to", "none", "--word_dropout_mixture", "1.0")
    assert not (out / "model.safetensors").exists(), "evaluation must not save a model"

    # Expected: mean token loss over full-context 16-token blocks of the EOS-joined documents.
    ids = []
    for line in (data_dir / "valid.txt").read_text().splitlines():
        ids += tokenizer(line)["input_ids"] + [tokenizer.eos_token_id]
    blocks = torch.tensor(ids[: len(ids) // 16 * 16]).view(-1, 16)
    assert results["eval_samples"] == len(blocks)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        losses = [model(input_ids=blocks[i:i + 4], labels=blocks[i:i + 4]).loss
                  for i in range(0, len(blocks), 4)]
    sizes = [len(blocks[i:i + 4]) for i in range(0, len(blocks), 4)]
    expected = sum(loss.item() * n for loss, n in zip(losses, sizes, strict=True)) / len(blocks)
    assert results["eval_loss"] == pytest.approx(expected, rel=1e-4)
    assert results["perplexity"] == pytest.approx(math.exp(expected), rel=1e-4)
    saved = json.loads((out / "eval_results.json").read_text())
    assert saved["perplexity"] == pytest.approx(results["perplexity"])


@pytest.mark.parametrize("flag, value", [
    ("--word_dropout_mixture", "1.5"), ("--word_dropout_mixture", "-0.1"),
    ("--word_dropout_type", "bogus"), ("--word_dropout_attention", "fast")])
def test_bad_word_dropout_arguments(data_dir, tmp_path, monkeypatch, flag, value):
    with pytest.raises(ValueError, match=flag):
        run(monkeypatch, *scratch_args(data_dir, tmp_path), "--do_train", flag, value)


@pytest.mark.parametrize("extra, message", [
    (["--block_size", "128"], "--block_size 128 exceeds"),
    (["--word_dropout_mixture", "0.5", "--word_dropout_attention", "flex"],
     "--word_dropout_attention flex: .*attention dropout 0.1"),
    (["--word_dropout_mixture", "0.5", "--word_dropout_attention", "flex",
      "--attn_implementation", "eager"], "drop --attn_implementation eager"),
    (["--config_overrides", "n_layer=1", "--model_name_or_path", "x"], "--config_overrides"),
    (["--train_file", "corpus.csv"], "--train_file must be"),
    ([], "--do_train and/or --do_eval"),
])
def test_bad_run_arguments(data_dir, tmp_path, monkeypatch, extra, message):
    args = scratch_args(data_dir, tmp_path) + extra
    if extra != []:
        args.append("--do_train")
    with pytest.raises(ValueError, match=message):
        run(monkeypatch, *args)


def test_from_scratch_needs_a_tokenizer(data_dir, tmp_path, monkeypatch):
    args = scratch_args(data_dir, tmp_path)
    del args[args.index("--tokenizer_name"): args.index("--tokenizer_name") + 2]
    with pytest.raises(ValueError, match="--tokenizer_name"):
        run(monkeypatch, *args, "--do_train")


def test_runs_as_a_script():
    # ``python huggingface/run_clm.py`` must find the repository's packages on its own.
    proc = subprocess.run([sys.executable, "huggingface/run_clm.py", "--help"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for flag in ("--word_dropout_mixture", "--word_dropout_type", "--word_dropout_per_head",
                 "--word_dropout_attention",
                 "--config_overrides", "--logging_dir", "--block_size"):
        assert flag in proc.stdout


def test_read_documents_formats(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\n  \nthree\n")
    (tmp_path / "b.json").write_text(json.dumps([{"text": "one two"}, {"text": ""},
                                                 {"text": "three"}]))
    (tmp_path / "c.jsonl").write_text('{"body": "one two"}\n\n{"body": "three"}\n')
    assert list(training.read_documents(str(tmp_path / "a.txt"))) == ["one two", "three"]
    assert list(training.read_documents(str(tmp_path / "b.json"))) == ["one two", "three"]
    assert list(training.read_documents(str(tmp_path / "c.jsonl"), "body")) == ["one two", "three"]
    with pytest.raises(ValueError, match="record 1 has no string field 'text'"):
        list(training.read_documents(str(tmp_path / "c.jsonl")))
