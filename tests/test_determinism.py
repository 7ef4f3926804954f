"""Same seed, same inputs, same results: rationales, word-dropout masks, and training resumed
from a checkpoint against an uninterrupted run (the collator's mask generator included)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from sequential_rationales import WordDropout, rationalize_sequence, rationalize_translation
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

WORDS = [f"w{i}" for i in range(40)]


def write_clm_data(root: Path) -> Path:
    """A word-level tokenizer (``root/tokenizer``) and ``train.txt``/``valid.txt`` of
    counting-like word sequences."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<pad>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                            eos_token="</s>").save_pretrained(root / "tokenizer")
    rng = random.Random(0)

    def document() -> str:
        start, length = rng.randrange(len(WORDS)), rng.randint(3, 25)
        return " ".join(WORDS[(start + k) % len(WORDS)] for k in range(length))

    (root / "train.txt").write_text("\n".join(document() for _ in range(200)) + "\n")
    (root / "valid.txt").write_text("\n".join(document() for _ in range(20)) + "\n")
    return root


def clm_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A tiny GPT-2 trained from scratch on CPU, with word dropout."""
    return ["--model_type", "gpt2", "--config_overrides", "n_layer=2,n_embd=32,n_head=2,"
            "n_positions=64", "--tokenizer_name", str(data / "tokenizer"),
            "--train_file", str(data / "train.txt"), "--block_size", "32",
            "--output_dir", str(out), "--use_cpu", "--do_train", "--report_to", "none",
            "--disable_tqdm", "true", "--per_device_train_batch_size", "4", "--seed", "3",
            "--word_dropout_mixture", "0.5", "--learning_rate", "1e-2", *extra]


class _ToyTranslation:
    """The toy encoder-decoder with the token conventions of a translation adapter."""

    is_conditional = True
    source_eos = target_bos = 2
    source_pad = pad = 1

    def __init__(self, model) -> None:
        self.model = model
        self.vocab_size = self.source_vocab_size = model.vocab_size
        self.max_positions = self.max_source_positions = model.max_positions
        self.device = model.device

    def __getattr__(self, name: str):
        return getattr(self.model, name)


def _without_duration(log: dict) -> dict:
    return {k: v for k, v in log.items() if k != "duration"}


@pytest.mark.parametrize("method", ["greedy", "exhaustive", "integrated_gradient"])
def test_rationales_are_identical_twice_in_process(tiny_gpt2, method):
    ids = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])
    options = {"max_steps": 3} if method == "exhaustive" else {"integrated_gradient_steps": 4}
    runs = [rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), ids, str, method, **options)
            for _ in range(2)]
    (first, log_a), (second, log_b) = runs
    # Bit-identical: probabilities compared exactly, through their JSON text too.
    assert json.dumps(_without_duration(log_a)) == json.dumps(_without_duration(log_b))
    assert first.rationales == second.rationales


def test_log_records_provenance_and_texts(tiny_gpt2, toy_seq2seq):
    import sequential_rationales

    ids = torch.tensor([3, 7, 1, 9, 4])
    result, log = rationalize_sequence(HuggingFaceCausalLM(tiny_gpt2), ids, lambda i: f"<{i}>",
                                       "greedy", start_step=1, max_steps=5)
    assert log["version"] == sequential_rationales.__version__
    assert log["method"] == "greedy" and log["device"] == "cpu"
    assert log["settings"]["max_steps"] == 5 and log["settings"]["start_step"] == 1
    assert {"max_tokens_per_batch", "integrated_gradient_steps", "top_1"} <= set(log["settings"])
    json.dumps(log)  # still JSON
    assert result.extra["target_text"] == ["<3>", "<7>", "<1>", "<9>", "<4>"]

    source, target = torch.tensor([4, 5, 6, 2]), torch.tensor([2, 7, 8])
    result, log = rationalize_translation(_ToyTranslation(toy_seq2seq), source, target,
                                          lambda i: f"s{i}", lambda i: f"t{i}")
    assert result.extra["source_text"] == ["s4", "s5", "s6", "s2"]
    assert result.extra["target_text"] == ["t2", "t7", "t8"]
    assert log["settings"]["max_steps"] == 1024 and "version" in log


def _masks(collator, batches: int) -> list[torch.Tensor]:
    features = [{"input_ids": torch.arange(12)} for _ in range(3)]
    return [collator(features)["attention_mask"] for _ in range(batches)]


def _collator(seed: int):
    from transformers import default_data_collator

    from sequential_rationales_integrations.huggingface.word_dropout import WordDropoutCollator

    return WordDropoutCollator(default_data_collator, WordDropout(1.0, "inverse_length"), 2,
                               seed=seed)


def test_collator_masks_repeat_with_the_seed():
    pytest.importorskip("transformers")
    a, b, c = _masks(_collator(5), 4), _masks(_collator(5), 4), _masks(_collator(6), 4)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_collator_state_resumes_the_mask_stream():
    pytest.importorskip("transformers")
    full = _masks(_collator(5), 5)
    first = _collator(5)
    _masks(first, 3)  # collated 3 batches, but "trained" on 2 (the loader ran ahead)
    resumed = _collator(5)
    resumed.load_state_dict(first.state_dict(2))
    assert all(torch.equal(x, y) for x, y in zip(full[2:], _masks(resumed, 3)))
    with pytest.raises(ValueError, match="same --seed"):
        _collator(6).load_state_dict(first.state_dict())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _max_difference(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_resumed_word_dropout_training_equals_uninterrupted(tmp_path):
    """6 steps in one go (checkpoints at 3 and 6) against 3 + resume 3. The check is
    sensitive: resuming without the saved mask generator gives other weights."""
    pytest.importorskip("transformers")
    from sequential_rationales_experiments.commands import run_clm
    from sequential_rationales_integrations.huggingface.word_dropout import RNG_STATE_FILE

    data = write_clm_data(tmp_path)
    full = tmp_path / "full"
    run_clm.main(clm_args(data, full, "--max_steps", "6", "--save_steps", "3"))
    assert (full / "checkpoint-3" / RNG_STATE_FILE.format(0)).is_file()

    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    run_clm.main(clm_args(data, resumed, "--max_steps", "6", "--save_steps", "3",
                          "--resume_from_checkpoint", str(resumed / "checkpoint-3")))
    assert _max_difference(_weights(full), _weights(resumed)) == 0.0

    restarted = tmp_path / "restarted"  # the old behaviour: masks restart from the seed
    restarted.mkdir()
    shutil.copytree(full / "checkpoint-3", restarted / "checkpoint-3")
    (restarted / "checkpoint-3" / RNG_STATE_FILE.format(0)).unlink()
    run_clm.main(clm_args(data, restarted, "--max_steps", "6", "--save_steps", "3",
                          "--resume_from_checkpoint", str(restarted / "checkpoint-3")))
    assert _max_difference(_weights(full), _weights(restarted)) > 0.0
