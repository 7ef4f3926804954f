"""Hugging Face encoder-decoder folders (Marian, BART, T5) through ``sr.load(...).rationalize``
and the ``rationalize`` command: the records are the core's on the same ids, for a given
target and for the model's own greedy translation; language-model options, unknown target
pieces and sources without ``</s>`` stop with one sentence; an empty translation is skipped;
``--out`` resumes, and ``--html`` shows source and target side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sequential_rationales as sr
from sequential_rationales import rationalize_translation
from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

from .fairseq_helpers import REPO_ROOT
from .test_rationalize_cli import read, without_durations

transformers = pytest.importorskip("transformers")

WORDS = "ich sehe einen hund . du siehst eine katze i see a dog you the cat".split()
SOURCE = "ich sehe einen hund ."
PAIR = {"source": "du siehst eine katze .", "target": "you see a cat ."}
# Special tokens in each family's order (Marian: </s> first; BART: <s>, <pad>, </s>, <unk>).
SPECIALS = {"marian": ["</s>", "<unk>", "<pad>"], "bart": ["<s>", "<pad>", "</s>", "<unk>"],
            "t5": ["<pad>", "</s>", "<unk>"]}


def word_tokenizer(family: str, append_eos: bool = True):
    """A word-level tokenizer over ``WORDS`` that ends every text with ``</s>`` (BART's also
    starts it with ``<s>``), as the family's own tokenizers do."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIALS[family], *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if append_eos:
        template = "<s> $A </s>" if family == "bart" else "$A </s>"
        core.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[(t, vocab[t]) for t in ("<s>", "</s>")
                                             if t in vocab])
    extra = {"bos_token": "<s>"} if family == "bart" else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", model_max_length=64, **extra)


def tiny_model(family: str, tokenizer, seed: int = 0):
    torch.manual_seed(seed)
    ids = dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
               eos_token_id=tokenizer.eos_token_id)
    if family == "t5":
        config = transformers.T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2,
                                       dropout_rate=0.0, decoder_start_token_id=ids[
                                           "pad_token_id"], **ids)
        return transformers.T5ForConditionalGeneration(config).eval()
    common = dict(d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
                  decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                  max_position_embeddings=64, dropout=0.0, attention_dropout=0.0, **ids)
    if family == "marian":  # the decoder starts with the pad id
        model = transformers.MarianMTModel(transformers.MarianConfig(
            decoder_start_token_id=ids["pad_token_id"], **common))
    else:  # BART: the decoder starts with </s>
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(
            bos_token_id=tokenizer.bos_token_id, decoder_start_token_id=ids["eos_token_id"],
            forced_eos_token_id=None, **common))
    with torch.no_grad():  # a varied greedy translation that neither stops at once nor pads
        model.final_logits_bias.normal_()
        model.final_logits_bias[0, ids["pad_token_id"]] = -10.0
        model.final_logits_bias[0, ids["eos_token_id"]] = -1.0
    return model.eval()


def save_seq2seq(path: Path, family: str) -> Path:
    tokenizer = word_tokenizer(family)
    tiny_model(family, tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    return {family: save_seq2seq(root / family, family) for family in SPECIALS}


@pytest.fixture(scope="module")
def translators(folders) -> dict[str, sr.Rationalizer]:
    return {family: sr.load(folder, device="cpu") for family, folder in folders.items()}


def _core(folder: Path, source: list[int], target: list[int], method: str = "greedy",
          **options) -> dict:
    """The known answer: the core with the adapter on the same ids."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)

    def decode(i: int) -> str:
        return tokenizer.decode([i])

    _, log = rationalize_translation(HuggingFaceSeq2Seq(model, len(source)),
                                     torch.tensor(source), torch.tensor(target), decode, decode,
                                     method, **options)
    return log


def _greedy(folder: Path, source: list[int]) -> list[int]:
    """The model's greedy translation, as ``generate`` gives it (start token first)."""
    from transformers import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(folder).eval()
    ids = torch.tensor([source])
    out = model.generate(input_ids=ids, do_sample=False, num_beams=1,
                         max_new_tokens=2 * len(source) + 10)
    return [int(i) for i in out[0]]


def _search_keys(record: dict) -> dict:
    return {k: v for k, v in record.items()
            if k not in ("input_index", "text", "target", "target_given", "duration")}


@pytest.mark.parametrize("family", list(SPECIALS))
def test_records_are_the_cores_for_given_and_greedy_targets(folders, translators, family):
    folder, rationalizer = folders[family], translators[family]
    assert rationalizer.kind == "translation model"
    tokenizer = rationalizer.text_model.tokenizer
    out = rationalizer.rationalize([SOURCE, PAIR])
    greedy, given = out.records
    assert (greedy["input_index"], greedy["text"], greedy["target_given"]) == (0, SOURCE, False)
    assert (given["input_index"], given["text"], given["target_given"]) == (1, PAIR["source"],
                                                                            True)
    start = rationalizer.text_model.model.config.decoder_start_token_id
    # A given target: decoder start, then the labels without their final </s>.
    labels = tokenizer(text_target=PAIR["target"])["input_ids"]
    assert given["source_tokens"] == tokenizer(PAIR["source"])["input_ids"]
    assert given["target_tokens"] == [start, *labels[:-1]]
    assert given["target"] == PAIR["target"]
    expected = _core(folder, given["source_tokens"], given["target_tokens"])
    assert without_durations([_search_keys(given)]) == without_durations([expected])
    # The greedy translation: generate's, without its final </s>.
    source = tokenizer(SOURCE)["input_ids"]
    generated = _greedy(folder, source)
    eos = tokenizer.eos_token_id
    translation = generated[1:generated.index(eos, 1)] if eos in generated[1:] else generated[1:]
    assert greedy["source_tokens"] == source and translation
    assert greedy["target_tokens"] == [generated[0], *translation]
    expected = _core(folder, source, greedy["target_tokens"])
    assert without_durations([_search_keys(greedy)]) == without_durations([expected])
    assert greedy["target"] == tokenizer.decode(translation, skip_special_tokens=True)
    text = out.text()
    assert text.startswith(f"[input 0] {SOURCE}\n") and f"[input 1] {PAIR['source']}" in text


def test_a_loaded_model_with_its_tokenizer_is_a_translator(folders, translators):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    folder = folders["marian"]
    loaded = sr.load(AutoModelForSeq2SeqLM.from_pretrained(folder),
                     AutoTokenizer.from_pretrained(folder))
    assert loaded.kind == "translation model"
    from_folder = translators["marian"].rationalize([SOURCE, PAIR]).records
    assert without_durations([_search_keys(r) for r in loaded.rationalize([SOURCE, PAIR])]) \
        == without_durations([_search_keys(r) for r in from_folder])


def test_the_seed_function_gives_the_same_rationales(folders, translators):
    import sys

    sys.path.insert(0, str(REPO_ROOT))
    from huggingface.rationalization import rationalize_conditional_model

    rationalizer = translators["marian"]
    record = rationalizer.rationalize(PAIR)[0]
    model, tokenizer = rationalizer.text_model.model, rationalizer.text_model.tokenizer
    sources, targets, _ = rationalize_conditional_model(
        model, torch.tensor(record["source_tokens"]), torch.tensor(record["target_tokens"]),
        tokenizer, verbose=False)
    assert (record["all_source_rationales"], record["all_target_rationales"]) == (sources,
                                                                                  targets)


def test_the_command_writes_resumes_and_shows_translations(folders, translators, tmp_path):
    from sequential_rationales_integrations import rationalize_cli

    folder = folders["marian"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"source": SOURCE}) + "\n" + json.dumps(PAIR) + "\n")
    out, page = tmp_path / "t.jsonl", tmp_path / "t.html"
    command = ["--model", str(folder), "--device", "cpu", "--input", str(pairs),
               "--out", str(out), "--html", str(page)]
    summary = rationalize_cli.main(command)
    records = read(out)
    # The command passes its default --max-steps, which the records' settings show.
    expected = translators["marian"].rationalize([SOURCE, PAIR], max_steps=1024).records
    assert without_durations(records) == without_durations(expected)
    assert summary["written"] == 2 and summary["targets"] == sum(
        len(r["rationalizations"]) for r in records)
    html = page.read_text(encoding="utf-8")
    assert 'class="sr-pair"' in html and html.count('class="sr-seq"') == 2
    provenance = json.loads((tmp_path / "t.provenance.json").read_text())
    assert provenance["method"] == "greedy" and provenance["model"]["fingerprint"]
    assert provenance["model"]["path"] == str(folder.resolve())
    again = rationalize_cli.main(command)  # everything is written: nothing to do
    assert again["written"] == 0 and without_durations(read(out)) == without_durations(records)
    with pytest.raises(sr.InputError, match="method"):
        rationalize_cli.main([*command, "--method", "last_attention"])


@pytest.mark.parametrize("method", ["last_attention", "gradient_norm"])
def test_baselines_through_the_command(folders, tmp_path, method):
    from sequential_rationales_integrations import rationalize_cli

    out = tmp_path / "b.jsonl"
    rationalize_cli.main(["--model", str(folders["bart"]), "--device", "cpu", "--text", SOURCE,
                          "--method", method, "--out", str(out)])
    (record,) = read(out)
    expected = _core(folders["bart"], record["source_tokens"], record["target_tokens"], method,
                     max_steps=1024)
    assert without_durations([_search_keys(record)]) == without_durations([expected])


@pytest.mark.parametrize("options, message", [
    ({"generate": 2}, r"generating \(--generate\) is for language models"),
    ({"start_step": 1}, r"a start step \(--start-step\) is for language models"),
    ({"chat": True, "generate": 2}, r"chat templates \(--chat, --system\) are for causal"),
])
def test_language_model_options_are_refused(translators, options, message):
    with pytest.raises(sr.InputError, match=message):
        translators["marian"].rationalize(SOURCE, **options)


def test_the_command_refuses_generate(folders):
    from sequential_rationales_integrations import rationalize_cli

    with pytest.raises(sr.InputError, match=r"generating \(--generate\) is for language"):
        rationalize_cli.main(["--model", str(folders["marian"]), "--device", "cpu", "--text",
                              SOURCE, "--generate", "2"])


def test_unknown_target_pieces_stop_before_any_work(translators, folders, tmp_path):
    bad = [SOURCE, {"source": SOURCE, "target": "i see zebra a quux"}]
    with pytest.raises(sr.InputError, match=r"input 1: the target has 2 piece\(s\) outside the "
                                            r"tokenizer's vocabulary \('zebra', 'quux'\)"):
        translators["bart"].rationalize(bad)
    from sequential_rationales_integrations import rationalize_cli

    pairs = tmp_path / "unknown.jsonl"
    pairs.write_text("".join(json.dumps({"source": s} if isinstance(s, str) else s) + "\n"
                             for s in bad))
    out = tmp_path / "unknown-out.jsonl"
    with pytest.raises(sr.InputError, match="input 1: the target has 2 piece"):
        rationalize_cli.main(["--model", str(folders["marian"]), "--device", "cpu", "--input",
                              str(pairs), "--out", str(out)])
    assert not out.exists()
    # The unknown token written out is taken as it is.
    record = translators["marian"].rationalize({"source": SOURCE, "target": "i see <unk>"})[0]
    assert record["target_tokens"][-1] == translators["marian"].text_model.tokenizer.unk_token_id


def test_a_source_without_eos_is_refused(folders):
    rationalizer = sr.load(folders["marian"], word_tokenizer("marian", append_eos=False),
                           device="cpu")
    with pytest.raises(sr.InputError, match=r"input 0: the tokenizer does not end the source "
                                            r"with </s>"):
        rationalizer.rationalize(SOURCE)


def test_an_empty_translation_is_skipped(folders):
    rationalizer = sr.load(folders["marian"], device="cpu")
    model = rationalizer.text_model.model
    with torch.no_grad():  # the model now ends every translation at once
        model.final_logits_bias[0, model.config.eos_token_id] = 1e4
    out = rationalizer.rationalize([SOURCE, PAIR])
    assert out[0]["skipped"] == "the translation is empty" and out.results[0] is None
    assert out[0]["target"] == "" and not out[0]["target_given"]
    assert "skipped" not in out[1] and out.results[1] is not None
    assert "[input 0] ich sehe einen hund .\nskipped: the translation is empty" in out.text()


def test_a_device_map_and_a_lora_adapter_load(folders, translators, tmp_path):
    pytest.importorskip("accelerate")
    expected = translators["marian"].rationalize(PAIR, max_steps=3)
    mapped = sr.load(folders["marian"], device_map="auto").rationalize(PAIR, max_steps=3)
    assert mapped[0]["all_source_rationales"] == expected[0]["all_source_rationales"]
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForSeq2SeqLM

    base = AutoModelForSeq2SeqLM.from_pretrained(folders["marian"])
    lora = peft.get_peft_model(base, peft.LoraConfig(task_type="SEQ_2_SEQ_LM", r=2,
                                                     target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA starts as the identity; make it change the model
        for name, parameter in lora.named_parameters():
            if "lora_B" in name:
                parameter.normal_()
    lora.save_pretrained(tmp_path / "adapter")
    merged = lora.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    word_tokenizer("marian").save_pretrained(tmp_path / "merged")
    by_adapter = sr.load(tmp_path / "adapter", device="cpu")
    assert by_adapter.kind == "translation model"
    got = by_adapter.rationalize(PAIR, max_steps=3)
    want = sr.load(tmp_path / "merged", device="cpu").rationalize(PAIR, max_steps=3)
    assert without_durations(got.records) == without_durations(want.records)
