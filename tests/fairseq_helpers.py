"""Shared helpers of the fairseq plugin tests: tiny in-process models, tiny corpora, CLI runner."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = "fairseq/sequential_rationales_plugin"  # relative to REPO_ROOT, as users pass it

CLI_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")


def make_dictionary(num_words: int = 12):
    from fairseq.data import Dictionary

    dictionary = Dictionary()
    for i in range(num_words):
        dictionary.add_symbol(f"w{i}")
    return dictionary


def tiny_lm(learned_pos: bool = False, seed: int = 0, layers: int = 2, heads: int = 2,
            dim: int = 16, **word_dropout):
    """A random ``compatible_transformer_lm`` (dropout 0, eval mode) on a 12-word dictionary."""
    from sequential_rationales_integrations.fairseq import (
        CompatibleTransformerLanguageModel,
        compatible_transformer_lm_base,
    )

    args = argparse.Namespace(
        decoder_layers=layers, decoder_embed_dim=dim, decoder_ffn_embed_dim=2 * dim,
        decoder_attention_heads=heads, decoder_learned_pos=learned_pos, dropout=0.0,
        tokens_per_sample=64, max_target_positions=64, **word_dropout)
    compatible_transformer_lm_base(args)
    dictionary = make_dictionary()
    task = SimpleNamespace(source_dictionary=dictionary, target_dictionary=dictionary)
    torch.manual_seed(seed)
    return CompatibleTransformerLanguageModel.build_model(args, task).eval(), args, task


def tiny_translation(learned_pos: bool = False, seed: int = 0, enc_heads: int = 2,
                     dec_heads: int = 2, normalize_before: bool = False, **word_dropout):
    """A random ``compatible_transformer`` (dropout 0, eval mode), 12-word dictionaries."""
    from sequential_rationales_integrations.fairseq import (
        CompatibleTransformerModel,
        compatible_transformer,
    )

    args = argparse.Namespace(
        encoder_layers=2, decoder_layers=2, encoder_embed_dim=16, decoder_embed_dim=16,
        encoder_ffn_embed_dim=32, decoder_ffn_embed_dim=32, encoder_attention_heads=enc_heads,
        decoder_attention_heads=dec_heads, encoder_learned_pos=learned_pos,
        decoder_learned_pos=learned_pos, encoder_normalize_before=normalize_before,
        decoder_normalize_before=normalize_before, dropout=0.0, max_source_positions=64,
        max_target_positions=64, **word_dropout)
    compatible_transformer(args)
    task = SimpleNamespace(source_dictionary=make_dictionary(), target_dictionary=make_dictionary())
    torch.manual_seed(seed)
    return CompatibleTransformerModel.build_model(args, task).eval(), args, task


def random_tokens(batch: int, length: int, generator: torch.Generator, low: int = 4,
                  high: int = 16) -> torch.Tensor:
    """Token ids of real words (ids 4.. of :func:`make_dictionary`, never pad/eos/unk/bos)."""
    return torch.randint(low, high, (batch, length), generator=generator)


# ---------------------------------------------------------------------------------------------
# Tiny corpora and the real command-line tools.


def write_majority_class_corpus(directory: Path, sizes=(("train", 200), ("valid", 40),
                                                        ("test", 40))) -> None:
    from sequential_rationales_experiments.majority_class import (
        write_majority_class_corpus as write,
    )

    write(directory, sizes, seed=0)


def write_translation_corpus(directory: Path, sizes=(("train", 200), ("valid", 12),
                                                     ("test", 12))) -> None:
    """Source ``s3 s7 s1`` -> target ``t1 t7 t3``: a lexicon mapping plus reversal."""
    from sequential_rationales_experiments.synthetic_translation import write_reversal_corpus

    write_reversal_corpus(directory, sizes, seed=0, vocabulary=10, lengths=(3, 7))


def cli(tool: str) -> str:
    """Path of a fairseq console script: next to this interpreter (the venv), else on PATH."""
    candidate = Path(sys.executable).parent / tool
    if candidate.exists():
        return str(candidate)
    found = shutil.which(tool)
    if found is None:
        raise FileNotFoundError(f"{tool} not found next to {sys.executable} nor on PATH")
    return found


def run_cli(tool: str, *args: object, check: bool = True, timeout: float = 300
            ) -> subprocess.CompletedProcess:
    """Run a fairseq CLI from the repository root (as the README does), one thread each."""
    env = {k: v for k, v in os.environ.items() if k in CLI_ENV_KEEP}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.run([cli(tool), *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{tool} failed ({proc.returncode}):\n{proc.stderr[-4000:]}\n"
                             f"{proc.stdout[-2000:]}")
    return proc
