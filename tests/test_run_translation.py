"""huggingface/run_translation.py and the seq2seq word-dropout collator, with tiny random
Marian, BART and T5 models and a word-level tokenizer built here (CPU, offline).

The task is a fixed word mapping (source word s_i becomes target word t_(7i mod 20), in order),
so target position t is explained by source position t - 1 and the previous target token.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers.processors import TemplateProcessing  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    Seq2SeqTrainingArguments,
)

from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq  # noqa: E402
from sequential_rationales.search import RationalizationProblem, build_batch  # noqa: E402
from sequential_rationales.word_dropout import WordDropout, word_dropout_keep_mask  # noqa: E402
from sequential_rationales_experiments.commands import run_translation  # noqa: E402
from sequential_rationales_integrations.huggingface.seq2seq_word_dropout import (  # noqa: E402
    Seq2SeqWordDropoutCollator,
    Seq2SeqWordDropoutTrainer,
    last_token_mask,
)
from sequential_rationales_integrations.huggingface.word_dropout import (  # noqa: E402
    RNG_STATE_FILE,
)
from sequential_rationales_integrations.huggingface.word_level_tokenizer import (  # noqa: E402
    build_word_level_tokenizer,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from huggingface.rationalization import rationalize_conditional_model  # noqa: E402

N = 20
SOURCE_WORDS = [f"s{i}" for i in range(N)]
TARGET_WORDS = [f"t{(7 * i) % N}" for i in range(N)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: extra threads only add contention (several times slower on a busy CPU).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def word_tokenizer(append_eos: bool = True):
    tok = build_word_level_tokenizer([" ".join(SOURCE_WORDS), " ".join(TARGET_WORDS)])
    if append_eos:  # like Marian, BART and T5 tokenizers: every text ends with </s>
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="$A </s>", special_tokens=[("</s>", tok.eos_token_id)])
    return tok


def tiny_model(family: str, tok, attn: str = "sdpa"):
    """Random tiny model; init_std 0.1 and scaled embeddings let it learn in a few hundred
    steps (at the default 0.02 the sinusoidal positions drown the token embeddings)."""
    torch.manual_seed(0)
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    if family == "t5":
        config = transformers.T5Config(vocab_size=len(tok), d_model=32, d_kv=16, d_ff=64,
                                       num_layers=2, num_heads=2, dropout_rate=0.0,
                                       decoder_start_token_id=tok.pad_token_id, **ids)
        return transformers.T5ForConditionalGeneration(config)
    common = dict(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                  decoder_ffn_dim=64, max_position_embeddings=32, dropout=0.0,
                  attention_dropout=0.0, activation_dropout=0.0, init_std=0.1,
                  scale_embedding=True, bos_token_id=tok.bos_token_id,
                  attn_implementation=attn, **ids)
    if family == "marian":  # the decoder starts with the pad id
        return transformers.MarianMTModel(transformers.MarianConfig(
            **common, decoder_start_token_id=tok.pad_token_id))
    return transformers.BartForConditionalGeneration(transformers.BartConfig(
        **common, decoder_start_token_id=tok.eos_token_id))


def mapping_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        idx = [rng.randrange(N) for _ in range(rng.randint(3, 7))]
        records.append({"translation": {"de": " ".join(SOURCE_WORDS[i] for i in idx),
                                        "en": " ".join(TARGET_WORDS[i] for i in idx)}})
    return records


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train.jsonl (400 pairs), valid.jsonl (40), and saved tiny models with the tokenizer."""
    root = tmp_path_factory.mktemp("translation")
    write_jsonl(root / "train.jsonl", mapping_pairs(400, seed=0))
    write_jsonl(root / "valid.jsonl", mapping_pairs(40, seed=1))
    tok = word_tokenizer()
    for family in ("marian", "bart", "t5"):
        tiny_model(family, tok).save_pretrained(root / family)
        tok.save_pretrained(root / family)
    return root


def args(data: Path, family: str, out: Path, *extra: str) -> list[str]:
    return ["--model_name_or_path", str(data / family), "--source_lang", "de",
            "--target_lang", "en", "--train_file", str(data / "train.jsonl"),
            "--validation_file", str(data / "valid.jsonl"), "--output_dir", str(out),
            "--use_cpu", "--save_strategy", "no", "--disable_tqdm", "true",
            "--report_to", "none", "--log_level", "warning", "--seed", "0",
            "--per_device_train_batch_size", "16", "--learning_rate", "3e-3", *extra]


# -- the collator ------------------------------------------------------------------------------

def collated(tok, mixture: float, kind: str, seed: int = 0, batches: int = 1):
    """Base and word-dropped batches of the same 4 pairs of different lengths."""
    base = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)
    features = []
    for record in mapping_pairs(4, seed=2):
        pair = record["translation"]
        enc = tok(pair["de"])
        features.append({**enc, "labels": tok(text_target=pair["en"])["input_ids"]})
    collator = Seq2SeqWordDropoutCollator(base, WordDropout(mixture, kind), seed=seed)
    return base(features), [collator(features) for _ in range(batches)]


@pytest.mark.parametrize("kind", ["inverse_length", "uniform_length"])
def test_collator_masks_are_the_keep_sets(kind):
    tok = word_tokenizer()
    base, (batch,) = collated(tok, 1.0, kind, seed=3)
    valid_src = base["attention_mask"].bool()
    valid_tgt = base["labels"] != -100
    # Replay the draws: a mixture of 1 draws no coin, then the source, then the target.
    gen = torch.Generator().manual_seed(3)
    src_keep = word_dropout_keep_mask(valid_src, kind, gen,
                                      always_keep=last_token_mask(valid_src))
    tgt_keep = word_dropout_keep_mask(valid_tgt, kind, gen)
    assert torch.equal(batch["attention_mask"], src_keep.long())
    for b in range(len(valid_src)):
        last = int(valid_src[b].sum()) - 1  # right padding: the final </s>
        assert int(base["input_ids"][b, last]) == tok.eos_token_id
        assert batch["attention_mask"][b, last] == 1
        assert not bool(batch["attention_mask"][b, ~valid_src[b]].any())
    mask = batch["decoder_attention_mask"]
    b_, _, t_, _ = mask.shape
    expected = torch.zeros(b_, 1, t_, t_, dtype=torch.bool)
    for b in range(b_):
        for i in range(t_):
            for j in range(t_):
                expected[b, 0, i, j] = j <= i and (i == j or bool(tgt_keep[b, j]))
    assert mask.dtype == torch.bool and torch.equal(mask, expected)
    assert not bool(tgt_keep[~valid_tgt].any())  # padding never kept
    assert torch.equal(batch["labels"], base["labels"])
    assert torch.equal(batch["input_ids"], base["input_ids"])


def test_collator_mixture_seed_and_padding_side():
    tok = word_tokenizer()
    base, batches = collated(tok, 0.0, "inverse_length", batches=3)
    for batch in batches:  # mixture 0: the base batch, untouched
        assert batch.keys() == base.keys()
        assert all(torch.equal(batch[k], base[k]) for k in base)
    _, first = collated(tok, 0.5, "uniform_length", seed=7, batches=12)
    _, again = collated(tok, 0.5, "uniform_length", seed=7, batches=12)
    _, other = collated(tok, 0.5, "uniform_length", seed=8, batches=12)
    dropped = ["decoder_attention_mask" in b for b in first]
    assert any(dropped) and not all(dropped)
    for x, y in zip(first, again):
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert any(x.keys() != y.keys() or not all(torch.equal(x[k], y[k]) for k in x)
               for x, y in zip(first, other))
    # Left padding: the last real token is still the one always kept.
    valid = torch.tensor([[False, False, True, True], [True, True, True, True]])
    assert last_token_mask(valid).tolist() == [[False, False, False, True],
                                               [False, False, False, True]]


@pytest.mark.parametrize("family,attn", [("marian", "sdpa"), ("marian", "eager"),
                                         ("bart", "sdpa"), ("bart", "eager"), ("t5", None)])
def test_training_batches_match_the_rationalization_adapter(family, attn, tmp_path):
    """Each training position's logits under a word-dropped batch (through the Trainer, which
    makes the decoder mask additive) equal the adapter's for that subset: the source keep-set
    plus the kept earlier target tokens and the previous one. Gradients flow."""
    tok = word_tokenizer()
    model = tiny_model(family, tok, attn or "eager").eval()
    if attn:
        model.set_attn_implementation(attn)
    base = DataCollatorForSeq2Seq(tok, model=model, label_pad_token_id=-100)
    collator = Seq2SeqWordDropoutCollator(base, WordDropout(1.0, "uniform_length"), seed=1)
    features = []
    for record in mapping_pairs(4, seed=4):
        pair = record["translation"]
        features.append({**tok(pair["de"]), "labels": tok(text_target=pair["en"])["input_ids"]})
    batch = collator(features)
    trainer = Seq2SeqWordDropoutTrainer(
        model=model, args=Seq2SeqTrainingArguments(str(tmp_path), use_cpu=True,
                                                   report_to="none"))
    loss, outputs = trainer.compute_loss(model, batch, return_outputs=True)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)

    start = model.config.decoder_start_token_id
    decoder_ids = batch["decoder_input_ids"]
    decoder_keep = batch["decoder_attention_mask"][:, 0].diagonal(offset=-1, dim1=1, dim2=2)
    checked = 0
    for b in range(len(features)):
        src_len = int(base([features[b]])["attention_mask"].sum())
        src = batch["input_ids"][b, :src_len]
        labels = batch["labels"][b][batch["labels"][b] != -100]
        target = torch.cat([torch.tensor([start]), labels])
        assert torch.equal(decoder_ids[b, :len(labels)], target[:-1])
        problem = RationalizationProblem(target, src[:-1])
        s = src_len - 1
        source_codes = [p for p in range(s) if batch["attention_mask"][b, p]]
        # decoder_keep[b, j] = whether query j + 1 sees key j, i.e. whether key j is kept
        subsets = [tuple(source_codes + [s + j for j in range(i) if decoder_keep[b, j]]
                         + [s + i]) for i in range(len(labels))]
        adapter = HuggingFaceSeq2Seq(model, src_len)
        expected = adapter.log_probs(build_batch(problem, subsets))
        got = torch.log_softmax(outputs.logits[b, :len(labels)].detach().float(), -1)
        torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-5)
        checked += len(labels)
    assert checked > 10


# -- training through main ---------------------------------------------------------------------

def sparse_accuracy(out: Path, valid: Path) -> float:
    """How often the model predicts each target word from the aligned source word and the
    previous target token alone (fed through the rationalization adapter)."""
    model = AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    tok = AutoTokenizer.from_pretrained(out)
    right = total = 0
    for line in valid.read_text().splitlines():
        pair = json.loads(line)["translation"]
        src = tok(pair["de"], return_tensors="pt").input_ids[0]
        words = tok(text_target=pair["en"], return_tensors="pt").input_ids[0][:-1]
        target = torch.cat([torch.tensor([model.config.decoder_start_token_id]), words])
        problem = RationalizationProblem(target, src[:-1])
        subsets = [(t - 1, problem.previous_code(t)) for t in range(1, len(target))]
        log_probs = HuggingFaceSeq2Seq(model, len(src)).log_probs(build_batch(problem, subsets))
        right += int((log_probs.argmax(-1) == target[1:]).sum())
        total += len(subsets)
    return right / total


def logged_losses(out: Path) -> list[float]:
    state = json.loads((out / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def test_word_dropout_makes_marian_compatible(data, tmp_path):
    """Same model, data, seed and 300 steps, with and without word dropout (mixture 0.5,
    inverse_length). Measured: 0.22 of the sparse predictions right without word dropout,
    1.00 with it; the full-context eval loss is low for both."""
    accuracy, losses = {}, {}
    for mixture in ("0", "0.5"):
        out = tmp_path / mixture
        results = run_translation.main(args(
            data, "marian", out, "--do_train", "--do_eval", "--max_steps", "300",
            "--logging_steps", "50", "--word_dropout_mixture", mixture))
        losses[mixture] = logged_losses(out)
        assert losses[mixture][-1] < 0.5 * losses[mixture][0]
        assert results["eval_loss"] < 0.5  # uniform guessing: log(44) = 3.8
        accuracy[mixture] = sparse_accuracy(out, data / "valid.jsonl")
    assert accuracy["0.5"] >= 0.8
    assert accuracy["0"] <= 0.5
    assert accuracy["0.5"] - accuracy["0"] >= 0.4


def test_bart_eager_trains_resumes_and_rationalizes(data, tmp_path):
    """BART with eager attention: the loss falls, the model loads and rationalizes, and a run
    resumed from a checkpoint draws the masks of an uninterrupted one (the collator's
    generator state is in the checkpoint; without it the weights differ)."""
    from safetensors.torch import load_file

    def run(out: Path, *extra: str) -> None:
        run_translation.main(args(data, "bart", out, "--do_train", "--max_steps", "60",
                                  "--logging_steps", "10", "--save_strategy", "steps",
                                  "--save_steps", "30", "--word_dropout_mixture", "0.5",
                                  "--attn_implementation", "eager", *extra))

    full = tmp_path / "full"
    run(full)
    losses = logged_losses(full)
    assert losses[-1] < 0.9 * losses[0]
    assert (full / "checkpoint-30" / RNG_STATE_FILE.format(0)).is_file()
    weights = load_file(str(full / "model.safetensors"))

    def resumed(name: str, keep_state: bool) -> float:
        folder = tmp_path / name
        shutil.copytree(full / "checkpoint-30", folder / "checkpoint-30")
        if not keep_state:
            (folder / "checkpoint-30" / RNG_STATE_FILE.format(0)).unlink()
        run(folder, "--resume_from_checkpoint", str(folder / "checkpoint-30"))
        other = load_file(str(folder / "model.safetensors"))
        return max(float((weights[k] - other[k]).abs().max()) for k in weights)

    assert resumed("resumed", keep_state=True) == 0.0
    assert resumed("restarted", keep_state=False) > 0.0

    model = AutoModelForSeq2SeqLM.from_pretrained(full).eval()
    tok = AutoTokenizer.from_pretrained(full)
    src = tok("s1 s2 s3", return_tensors="pt").input_ids[0]
    target = model.generate(src[None], max_new_tokens=5, num_beams=1)[0]
    sources, targets, _ = rationalize_conditional_model(model, src, target, tok, verbose=False)
    assert len(sources) == len(targets) == len(target) - 1
    assert all(t[0] == i for i, t in enumerate(targets))  # the previous token comes first


def test_t5_with_prefix_and_generation_metrics(data, tmp_path):
    results = run_translation.main(args(
        data, "t5", tmp_path, "--do_train", "--do_eval", "--max_steps", "4",
        "--word_dropout_mixture", "1.0", "--source_prefix", "s0 ", "--predict_with_generate",
        "--max_eval_samples", "8", "--val_max_target_length", "10"))
    assert math.isfinite(results["eval_loss"]) and 0.0 <= results["eval_bleu"] <= 100.0
    assert results["eval_samples"] == 8 and results["eval_gen_len"] > 0
    saved = json.loads((tmp_path / "all_results.json").read_text())
    assert saved["eval_bleu"] == results["eval_bleu"]


# -- bad flags and data ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bad(data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    write_jsonl(root / "french.jsonl", [{"translation": {"de": "s1", "fr": "t7"}}])
    (root / "empty.jsonl").write_text("\n")
    (root / "broken.jsonl").write_text('{"translation": {"de": "s1", "en": "t7"}}\n{oops\n')
    write_jsonl(root / "flat.jsonl", [{"de": "s1", "en": "t7"}])
    (root / "train.txt").write_text("s1 s2\n")
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=44, n_embd=16, n_layer=1, n_head=2, n_positions=32))
    gpt2.save_pretrained(root / "gpt2")
    word_tokenizer().save_pretrained(root / "gpt2")
    no_eos = root / "no_eos"
    shutil.copytree(data / "marian", no_eos)
    word_tokenizer(append_eos=False).save_pretrained(no_eos)
    return root


@pytest.mark.parametrize("change,message", [
    ({"--train_file": "french.jsonl"},
     r"french.jsonl:1: the translation has no 'en' text \(it has 'de', 'fr'\)"),
    ({"--train_file": "empty.jsonl"}, "contains no translation pairs"),
    ({"--train_file": "broken.jsonl"}, "broken.jsonl:2: invalid JSON line"),
    ({"--train_file": "flat.jsonl"}, 'expected a record {"translation"'),
    ({"--train_file": "train.txt"}, r"must be a \.json or \.jsonl file"),
    ({"--train_file": "missing.jsonl"}, "does not exist"),
    ({"--model_name_or_path": "gpt2"},
     "run_translation needs an encoder-decoder model .*use run_clm.py"),
    ({"--model_name_or_path": "no_eos"}, "did not end the source with its end-of-sequence"),
    ({"--word_dropout_mixture": "1.5"}, r"--word_dropout_mixture must be a probability"),
    ({"--word_dropout_type": "zipf"}, "--word_dropout_type must be one of"),
    ({"--target_lang": "de"}, "are both 'de'"),
    ({"--max_steps": "0"}, "--max_steps must be >= 1"),
    ({"--max_source_length": "1"}, "--max_source_length must leave room"),
])
def test_bad_flags_and_data(data, bad, tmp_path, change, message):
    argv = args(data, "marian", tmp_path / "out", "--do_train", "--max_steps", "1")
    for flag, value in change.items():
        if flag in ("--train_file", "--model_name_or_path"):
            value = str(bad / value)
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        run_translation.main(argv)


def test_bad_flags_without_files(data, tmp_path):
    base = args(data, "marian", tmp_path / "out")
    with pytest.raises(ValueError, match="nothing to do"):
        run_translation.main(base)
    no_train = [a for a in base if a not in ("--train_file", str(data / "train.jsonl"))]
    with pytest.raises(ValueError, match="--do_train needs --train_file"):
        run_translation.main(no_train + ["--do_train"])
    with pytest.raises(FileNotFoundError, match="model directory .* does not exist"):
        run_translation.main(args(data, "nowhere", tmp_path / "out", "--do_train"))


def test_lora_on_marian_saves_an_adapter_that_evaluates_as_merged(data, tmp_path):
    pytest.importorskip("peft")
    from peft import PeftModel

    out = tmp_path / "lora"
    run_translation.main(args(data, "marian", out, "--do_train", "--max_steps", "4",
                              "--use_peft", "--lora_r", "4", "--word_dropout_mixture", "0.5"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_2_SEQ_LM" and not (out / "model.safetensors").exists()
    assert config["base_model_name_or_path"] == str((data / "marian").resolve())
    def evaluate(model: Path, where: str) -> dict:
        argv = args(data, "marian", tmp_path / where, "--do_eval")
        return run_translation.main([argv[0], str(model), *argv[2:]])

    evaluated = evaluate(out, "eval")  # the adapter folder as the model
    merged = PeftModel.from_pretrained(transformers.MarianMTModel.from_pretrained(
        data / "marian"), str(out)).merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    word_tokenizer().save_pretrained(tmp_path / "merged")
    expected = evaluate(tmp_path / "merged", "eval2")
    assert evaluated["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)
