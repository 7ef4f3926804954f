"""The plugin through fairseq's real command-line tools, on tiny synthetic corpora (CPU).

Pipeline (module-scoped, each step once): fairseq-preprocess -> fairseq-train (standard, then a
word-dropout fine-tune of that checkpoint) -> fairseq-eval-lm / fairseq-generate -> hub loading.
Marked ``slow`` (about a minute and a half on 2 cores); they always run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("fairseq")

from sequential_rationales_integrations.fairseq import read_checkpoint  # noqa: E402

from .fairseq_helpers import (  # noqa: E402
    PLUGIN_DIR,
    REPO_ROOT,
    run_cli,
    write_majority_class_corpus,
    write_translation_corpus,
)

pytestmark = pytest.mark.slow

COMMON = ["--cpu", "--no-progress-bar", "--num-workers", "0", "--seed", "1", "--log-interval",
          "1", "--no-epoch-checkpoints", "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)"]
LM_TRAIN = ["--task", "language_modeling", "--tokens-per-sample", "64", "--sample-break-mode",
            "eos", "--max-tokens", "512", *COMMON]
# Tiny sizes on top of the named architectures (the real ones are far bigger).
MT_SIZES = ["--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16",
            "--decoder-embed-dim", "16", "--encoder-ffn-embed-dim", "32",
            "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
            "--decoder-attention-heads", "4", "--share-decoder-input-output-embed"]
MT_TRAIN = ["--max-tokens", "256", "--criterion", "label_smoothed_cross_entropy",
            "--label-smoothing", "0.1", *MT_SIZES, *COMMON]
BLEU = ["--eval-bleu", "--eval-bleu-args", '{"beam": 1, "max_len_a": 1.2, "max_len_b": 2}',
        "--eval-bleu-detok", "space", "--best-checkpoint-metric", "bleu",
        "--maximize-best-checkpoint-metric"]


@pytest.fixture(scope="module")
def lm_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("majority_class")
    write_majority_class_corpus(root / "text")
    run_cli("fairseq-preprocess", "--only-source", "--trainpref", root / "text/train.tok",
            "--validpref", root / "text/valid.tok", "--testpref", root / "text/test.tok",
            "--destdir", root / "data-bin", "--workers", "1")
    return root


@pytest.fixture(scope="module")
def lm_checkpoints(lm_data):
    """Standard model (mixture 0), then a compatible fine-tune of it via --restore-file."""
    data, standard, compatible = lm_data / "data-bin", lm_data / "standard", lm_data / "compat"
    run_cli("fairseq-train", data, "--user-dir", PLUGIN_DIR, "--arch",
            "transformer_lm_majority_class", "--lr", "0.0005", "--max-update", "3",
            "--save-dir", standard, "--word-dropout-mixture", "0.", *LM_TRAIN)
    log = run_cli("fairseq-train", data, "--user-dir", PLUGIN_DIR, "--arch",
                  "transformer_lm_majority_class", "--lr", "1e-5", "--max-update", "3",
                  "--restore-file", standard / "checkpoint_best.pt", "--reset-optimizer",
                  "--reset-dataloader", "--save-dir", compatible, "--word-dropout-mixture", "1.0",
                  "--word-dropout-type", "uniform_length", *LM_TRAIN).stdout
    assert re.search(r"Loaded checkpoint .*standard.checkpoint_best\.pt", log), log[-2000:]
    return standard, compatible


@pytest.fixture(scope="module")
def mt_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    write_translation_corpus(root / "text")
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref",
            root / "text/train", "--validpref", root / "text/valid", "--testpref",
            root / "text/test", "--destdir", root / "data-bin", "--workers", "1")
    return root


@pytest.fixture(scope="module")
def mt_checkpoints(mt_data):
    """A stock ``transformer`` checkpoint, fine-tuned as ``checkpoint_last.pt`` of a new
    directory with word dropout (0.5, inverse_length) and --eval-bleu (the paper's recipe)."""
    data, stock, compatible = mt_data / "data-bin", mt_data / "stock", mt_data / "compat"
    run_cli("fairseq-train", data, "--arch", "transformer", "--lr", "5e-4", "--lr-scheduler",
            "inverse_sqrt", "--warmup-updates", "2", "--max-update", "3", "--save-dir", stock,
            *BLEU, *MT_TRAIN)  # no plugin at all: a genuinely stock checkpoint
    compatible.mkdir()
    shutil.copy(stock / "checkpoint_best.pt", compatible / "checkpoint_last.pt")
    log = run_cli("fairseq-train", data, "--user-dir", PLUGIN_DIR, "--arch",
                  "compatible_transformer_iwslt_de_en", "--lr", "1e-5", "--max-update", "3",
                  "--reset-optimizer", "--reset-dataloader", "--save-dir", compatible,
                  "--word-dropout-mixture", "0.5", "--word-dropout-type", "inverse_length",
                  *BLEU, *MT_TRAIN).stdout
    assert re.search(r"Loaded checkpoint .*compat.checkpoint_last\.pt", log), log[-2000:]
    assert re.search(r"valid \| .*\| bleu \d", log), log[-2000:]
    return stock, compatible


def test_lm_training_and_eval_lm(lm_data, lm_checkpoints):
    _, compatible = lm_checkpoints
    out = run_cli("fairseq-eval-lm", lm_data / "data-bin", "--user-dir", PLUGIN_DIR, "--path",
                  compatible / "checkpoint_best.pt", "--tokens-per-sample", "20",
                  "--context-window", "0", "--batch-size", "64", "--cpu", "--num-workers", "0")
    perplexity = float(re.search(r"Perplexity: ([\d.]+)", out.stdout + out.stderr).group(1))
    assert 1.0 < perplexity < 20.0  # vocabulary of 6 symbols: a sane, finite value


def test_translation_generate(mt_data, mt_checkpoints):
    _, compatible = mt_checkpoints
    out = run_cli("fairseq-generate", mt_data / "data-bin", "--user-dir", PLUGIN_DIR,
                  "--path", compatible / "checkpoint_best.pt", "--beam", "1", "--batch-size",
                  "8", "--max-len-b", "10", "--cpu", "--num-workers", "0",
                  # ve-fairseq 0.12.3 drops the last (n mod multiple) sentences otherwise
                  "--required-batch-size-multiple", "1")
    text = out.stdout + out.stderr
    assert len(re.findall(r"^H-\d+\t", text, flags=re.M)) == 12  # every test sentence
    assert "BLEU4 =" in text


def test_checkpoints_load_twice_through_the_hub(lm_data, lm_checkpoints, mt_data,
                                                mt_checkpoints):
    """from_pretrained with user_dir (twice, in one process), load_hub_model, the stock
    checkpoint, generation from both hub models -- under torch's weights_only default."""
    script = textwrap.dedent("""
        import json, sys
        import torch
        from fairseq.models.transformer import TransformerModel
        from fairseq.models.transformer_lm import TransformerLanguageModel
        lm_dir, lm_data, mt_dir, mt_data, stock_dir, plugin = sys.argv[1:]
        for _ in range(2):  # the plugin must not register twice
            lm = TransformerLanguageModel.from_pretrained(lm_dir, "checkpoint_best.pt", lm_data,
                                                          user_dir=plugin)
            mt = TransformerModel.from_pretrained(mt_dir, "checkpoint_best.pt", mt_data,
                                                  user_dir=plugin)
        from sequential_rationales_integrations.fairseq import load_hub_model
        lm2 = load_hub_model(lm_dir, "checkpoint_best.pt", lm_data)
        mt2 = load_hub_model(mt_dir, "checkpoint_best.pt", mt_data)
        stock = load_hub_model(stock_dir, "checkpoint_best.pt", mt_data)
        print(json.dumps({
            "classes": [type(h.models[0]).__name__ for h in (lm, mt, lm2, mt2, stock)],
            "word_dropout": [lm2.models[0].word_dropout.mixture,
                             lm2.models[0].word_dropout.independent_heads,
                             mt2.models[0].word_dropout.kind,
                             mt2.models[0].word_dropout.independent_heads],
            "translation": mt2.translate("s1 s2 s3", beam=1, max_len_b=5),
            "sample": lm2.sample("0 1 1", beam=1, max_len_b=4),
        }))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script, str(lm_checkpoints[1]), str(lm_data / "data-bin"),
         str(mt_checkpoints[1]), str(mt_data / "data-bin"), str(mt_checkpoints[0]), PLUGIN_DIR],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["classes"] == ["CompatibleTransformerLanguageModel",
                                 "CompatibleTransformerModel",
                                 "CompatibleTransformerLanguageModel",
                                 "CompatibleTransformerModel", "TransformerModel"]
    assert result["word_dropout"] == [1.0, False, "inverse_length", True]  # types' defaults
    assert isinstance(result["translation"], str)
    assert result["sample"].startswith("0 1 1")


@pytest.mark.parametrize("flag, value, message", [
    ("--word-dropout-mixture", "1.5",
     r"argument --word-dropout-mixture: must be a probability in \[0, 1\], got 1.5"),
    ("--word-dropout-type", "bogus", r"argument --word-dropout-type: invalid choice: 'bogus'"),
])
def test_bad_word_dropout_flags_stop_fairseq_train(lm_data, tmp_path, flag, value, message):
    # While fairseq parses its command line: argparse's one line and status 2, no traceback.
    proc = run_cli("fairseq-train", lm_data / "data-bin", "--user-dir", PLUGIN_DIR, "--arch",
                   "transformer_lm_majority_class", "--max-update", "1", "--save-dir", tmp_path,
                   flag, value, *LM_TRAIN, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert re.search(f"fairseq-train: error: {message}", proc.stderr), proc.stderr[-3000:]
    assert not list(tmp_path.glob("*.pt"))  # failed before training


def test_custom_architecture_from_the_docstring(lm_data, tmp_path):
    """The ``transformer_lm_custom`` pattern of the models docstring, as a user's --user-dir."""
    user_dir = tmp_path / "my_custom_lm_plugin"
    user_dir.mkdir()
    (user_dir / "__init__.py").write_text(textwrap.dedent("""
        from fairseq.models import register_model_architecture
        from fairseq.utils import safe_getattr

        from sequential_rationales_integrations.fairseq import compatible_transformer_lm_base

        @register_model_architecture("compatible_transformer_lm", "transformer_lm_custom")
        def transformer_lm_custom(args):
            args.decoder_layers = safe_getattr(args, "decoder_layers", 3)
            args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 32)
            args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", 64)
            args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", 2)
            compatible_transformer_lm_base(args)
    """))
    log = run_cli("fairseq-train", lm_data / "data-bin", "--user-dir", user_dir, "--arch",
                  "transformer_lm_custom", "--max-update", "1", "--lr", "1e-4", "--save-dir",
                  tmp_path / "ckpt", "--word-dropout-mixture", "0.5", "--word-dropout-per-head",
                  *LM_TRAIN).stdout
    assert "model: CompatibleTransformerLanguageModel" in log
    state = read_checkpoint(tmp_path / "ckpt" / "checkpoint_last.pt")
    assert state["cfg"]["model"]["word_dropout_per_head"] is True
    weights = state["model"]
    assert "decoder.layers.2.fc1.weight" in weights and "decoder.layers.3.fc1.weight" not in weights
    assert weights["decoder.layers.0.fc1.weight"].shape == (64, 32)
