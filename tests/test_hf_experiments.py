"""End to end: the GPT-2 experiment scripts (analogies, annotated Lambada, figures, timing,
data download) on tiny random GPT-2 models with locally built tokenizers and the shared data.

The random models cannot solve analogies, so most runs use ``--no_filter``; the correctness
filter is tested with a GPT-2 rigged to always predict one word, whose rationales are known.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import urllib.error
from pathlib import Path

import pytest
import torch

from sequential_rationales.metrics import intersection_over_union, word_rationale
from sequential_rationales_experiments import analogies, lambada
from sequential_rationales_experiments.commands import (
    compare_rationalization_times,
    download_data,
    evaluate_analogies_rationales,
    evaluate_lambada_rationales,
    plot_gpt2_rationalization,
    plot_gpt2_the_repeats,
    rationalize_analogies,
    rationalize_lambada,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FAMILY = 4  # index of the "family" category in questions-words.txt


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread, and do not slow down badly when other jobs
    share the CPU (OpenMP threads spin-waiting for a busy core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if not (SHARED_DATA / "questions-words.txt").is_file():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (the tests read the paper's "
                    "data files from ../shared/data)")
    return SHARED_DATA


def word_level_tokenizer(texts):
    """Word-level fast tokenizer (words and punctuation runs), with character offsets."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    vocab = {"<unk>": 0, "<pad>": 1}
    for text in texts:
        for word, _ in pre.pre_tokenize_str(text):
            vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")


def tiny_gpt2(vocab_size: int, n_positions: int = 128, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=vocab_size,
                        n_positions=n_positions, bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


def rig_to_predict(model, token_id: int):
    """Make a GPT-2 predict ``token_id`` whatever its input, with probability ~1: the final
    layer norm outputs a constant (weight 0, bias along the token's embedding, scaled so that
    its logit is 50), and the tied output layer scores that token far above the others."""
    with torch.no_grad():
        wte = model.transformer.wte.weight
        wte[token_id] *= 5
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.copy_(50 * wte[token_id] / wte[token_id].norm() ** 2)
    probe = torch.randint(0, wte.shape[0], (3, 7))
    probs = model(input_ids=probe).logits.softmax(-1)
    assert (probs.argmax(-1) == token_id).all() and (probs[..., token_id] > 0.99).all()
    return model


@pytest.fixture(scope="module")
def analogy_texts(data_dir):
    pairs = analogies.read_analogy_pairs(data_dir / analogies.ANALOGIES_FILE)
    templates = analogies.read_templates(data_dir / analogies.TEMPLATES_FILE)
    return [analogies.fill_template(templates[c], a, b)[0]
            for c in ("family", "gram2-opposite") for a, b in pairs[c]]


@pytest.fixture(scope="module")
def word_model_dir(tmp_path_factory, analogy_texts) -> Path:
    path = tmp_path_factory.mktemp("word_model")
    tokenizer = word_level_tokenizer(analogy_texts)
    tiny_gpt2(len(tokenizer)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def sister_model_dir(tmp_path_factory, analogy_texts) -> Path:
    """A GPT-2 that always predicts "sister"."""
    path = tmp_path_factory.mktemp("sister_model")
    tokenizer = word_level_tokenizer(analogy_texts)
    model = rig_to_predict(tiny_gpt2(len(tokenizer)), tokenizer.convert_tokens_to_ids("sister"))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bpe_model_dir(tmp_path_factory, data_dir) -> Path:
    """Byte-level BPE (as GPT-2) trained on two Lambada passages without their last words, so
    that those words are split into several pieces."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rows = lambada.read_annotated_lambada(data_dir / lambada.LAMBADA_FILE)[:2]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    core.train_from_iterator([r["text"].rsplit(" ", 1)[0] for r in rows], trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>",
                                        bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    path = tmp_path_factory.mktemp("bpe_model")
    tiny_gpt2(len(tokenizer), n_positions=512).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def read_results(folder: Path) -> dict[str, dict]:
    """The result files of a runner folder (not its provenance.json)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))
            if p.name != "provenance.json"}


# -- analogy data -----------------------------------------------------------------------------
def test_analogy_pairs_and_templates(data_dir):
    pairs = analogies.read_analogy_pairs(data_dir / analogies.ANALOGIES_FILE)
    assert len(pairs) == 14 and list(pairs)[FAMILY] == "family"
    assert pairs["family"][:2] == [("boy", "girl"), ("brother", "sister")]
    assert all(len(set(p)) == len(p) for p in pairs.values())  # unique pairs
    templates = analogies.read_templates(data_dir / analogies.TEMPLATES_FILE)
    assert set(templates) == set(pairs)
    # The placeholder that ends the template is the target.
    assert templates["family"].target == "B" and templates["family"].antecedent == "A"
    assert templates["capital-common-countries"].target == "A"


def test_fill_template_and_remove_distractor(data_dir):
    templates = analogies.read_templates(data_dir / analogies.TEMPLATES_FILE)
    text, spans = analogies.fill_template(templates["gram2-opposite"], "acceptable",
                                          "unacceptable")
    assert text == ("I thought it was acceptable. (Just then an ad came on the TV, but that's "
                    "irrelevant). It was the opposite of that: it was unacceptable")
    assert text[slice(*spans["A"])] == "acceptable" and text[slice(*spans["B"])] == (
        "unacceptable")
    start = text.index("(")
    assert analogies.remove_distractor(text, (start, text.index(")") + 1)) == (
        "I thought it was acceptable. It was the opposite of that: it was unacceptable")


def test_single_token_filter_and_capitalization(data_dir):
    pairs = analogies.read_analogy_pairs(data_dir / analogies.ANALOGIES_FILE)
    templates = analogies.read_templates(data_dir / analogies.TEMPLATES_FILE)
    examples = analogies.build_examples(pairs, templates, lambda w: w != "girl",
                                        ["family", "currency"])
    family = [e for e in examples if e.category == "family"]
    assert len(family) == len(pairs["family"]) - 1  # (boy, girl) dropped
    assert family[0].target_word == "sister" and family[0].antecedent_word == "brother"
    assert family[0].name == f"{FAMILY}_0"  # pair indices count the kept pairs
    currencies = {e.target_word for e in examples if e.category == "currency"}
    assert {"Euro", "Won"} <= currencies and "euro" not in currencies
    with pytest.raises(SystemExit, match="unknown categories"):
        analogies.build_examples(pairs, templates, lambda w: True, ["no-such-category"])


def test_missing_data_gives_a_hint(tmp_path):
    with pytest.raises(SystemExit, match="download_data.py"):
        rationalize_analogies.main(["--model_name_or_path", "unused",
                                    "--data_dir", str(tmp_path)])
    with pytest.raises(SystemExit, match="download_data.py"):
        rationalize_lambada.main(["--model_name_or_path", "unused",
                                  "--data_dir", str(tmp_path)])


# -- analogies end to end ---------------------------------------------------------------------
def test_filter_keeps_what_the_model_completes(data_dir, sister_model_dir, tmp_path):
    """The rigged model predicts "sister" everywhere: only the family examples whose target is
    "sister" pass, and one token (the previous one) suffices, for greedy and exhaustive."""
    common = ["--model_name_or_path", str(sister_model_dir), "--data_dir", str(data_dir),
              "--categories", "family", "--device", "cpu"]
    greedy = rationalize_analogies.main([*common, "--out", str(tmp_path / "greedy")])
    assert greedy["written"] == 1 and greedy["not_correct"] == 22
    exhaustive = rationalize_analogies.main([*common, "--out", str(tmp_path / "exhaustive"),
                                             "--method", "exhaustive",
                                             "--exhaustive_fraction", "1"])
    assert exhaustive["written"] == 1
    for method in ("greedy", "exhaustive"):
        records = read_results(tmp_path / method)
        assert list(records) == [f"{FAMILY}_1"]  # (brother, sister)
        record = records[f"{FAMILY}_1"]
        assert record["target_word"] == "sister" and record["checked_correct"] is True
        last = len(record["input_ids"]) - 1
        assert record["all_rationales"] == [[last - 1]]
        assert record["rationalization"][0]["reached_argmax"]
    evaluate = evaluate_analogies_rationales
    rows = evaluate.main(["--results_dir", str(tmp_path)])
    # Length 1, exhaustive length 1 -> Ratio 1; "brother" (position 4) is not in {last - 1};
    # the distractor is not either.
    assert rows["greedy"]["Length"] == 1 and rows["greedy"]["Ratio"] == 1.0
    assert rows["greedy"]["Ante"] == 0.0 and rows["greedy"]["No D"] == 1.0


def test_filter_needs_both_versions(data_dir, word_model_dir, tmp_path, monkeypatch):
    """An example must be completed with AND without the distractor clause."""
    from transformers import AutoTokenizer

    paren = AutoTokenizer.from_pretrained(word_model_dir).convert_tokens_to_ids("(")
    argv = ["--model_name_or_path", str(word_model_dir), "--data_dir", str(data_dir),
            "--categories", "family", "--device", "cpu", "--max_steps", "2"]
    for with_distractor_only in (True, False):
        monkeypatch.setattr(rationalize_analogies, "predicts_last_token",
                            lambda model, ids, w=with_distractor_only: (paren in ids) == w)
        counts = rationalize_analogies.main(
            [*argv, "--out", str(tmp_path / str(with_distractor_only))])
        assert counts["written"] == 0 and counts["not_correct"] == 23
    monkeypatch.setattr(rationalize_analogies, "predicts_last_token", lambda model, ids: True)
    counts = rationalize_analogies.main(
        [*argv, "--max_examples", "2", "--out", str(tmp_path / "all")])
    assert counts["written"] == 2 and counts["not_correct"] == 0


@pytest.fixture(scope="module")
def analogy_results(tmp_path_factory, data_dir, word_model_dir) -> Path:
    results = tmp_path_factory.mktemp("analogy_results")
    common = ["--model_name_or_path", str(word_model_dir), "--data_dir", str(data_dir),
              "--categories", "family", "--max_examples", "3", "--no_filter",
              "--device", "cpu"]
    for method, steps in [("greedy", "6"), ("exhaustive", "2"), ("last_attention", "6")]:
        counts = rationalize_analogies.main([*common, "--method", method, "--max_steps", steps,
                                             "--exhaustive_fraction", "1",
                                             "--out", str(results / method)])
        assert counts["written"] == 3
    return results


def test_analogy_records(analogy_results):
    for method in ("greedy", "exhaustive", "last_attention"):
        records = read_results(analogy_results / method)
        assert sorted(records) == [f"{FAMILY}_{i}" for i in range(3)]
        for record in records.values():
            text = record["input_text"]
            assert text[-1] == record["target_word"]
            assert [text[p] for p in record["antecedent_positions"]] == [
                record["antecedent_word"]]
            d = record["distractor_positions"]
            assert text[d[0]] == "(" and text[d[-1]] == ")."
            assert d == list(range(record["distractor_start"], record["distractor_end"] + 1))
            (rationale,) = record["all_rationales"]  # the last token only
            assert rationale[0] == len(text) - 2 and record["method"] == method
            assert len(rationale) <= (2 if method == "exhaustive" else 6)
            assert record["checked_correct"] is False


def test_analogy_table(analogy_results, capsys):
    evaluate = evaluate_analogies_rationales
    rows = evaluate.main(["--results_dir", str(analogy_results), "--all"])
    assert list(rows) == ["last_attention", "greedy"]  # paper order, exhaustive excluded
    out = capsys.readouterr().out
    assert "| Method | Length | Ratio | Ante | No D |" in out
    assert "| Last attention |" in out and "| Greedy |" in out
    records = read_results(analogy_results / "greedy")
    by_hand_length = sum(len(r["all_rationales"][0]) for r in records.values()) / 3
    by_hand_no_d = sum(not set(r["all_rationales"][0]) & set(r["distractor_positions"])
                       for r in records.values()) / 3
    assert rows["greedy"]["Length"] == pytest.approx(by_hand_length)
    assert rows["greedy"]["No D"] == pytest.approx(by_hand_no_d)
    for row in rows.values():
        assert 1 <= row["Length"] <= 6 and row["n"] == 3
        assert 0 <= row["Ante"] <= 1 and 0 <= row["No D"] <= 1
        assert math.isnan(row["Ratio"]) or row["Ratio"] >= 0.5
    table = json.loads((analogy_results / "analogies_table.json").read_text())
    assert table["greedy"]["label"] == "Greedy"
    header = (analogy_results / "analogies_table.csv").read_text().splitlines()[0]
    assert header.startswith("method,label,Length,Ratio,Ante,No D")
    rows = evaluate.main(["--results_dir", str(analogy_results), "--baseline", "last_attention",
                          "--out", str(analogy_results / "vs_last")])
    assert list(rows) == ["last_attention", "greedy"]
    assert (analogy_results / "vs_last.csv").is_file()
    with pytest.raises(SystemExit, match="no results"):
        evaluate.main(["--results_dir", str(analogy_results), "--baseline", "gradient_norm"])


def test_analogy_run_resumes(analogy_results, data_dir, word_model_dir):
    files = sorted((analogy_results / "greedy").glob("*.json"))
    before = [p.stat().st_mtime_ns for p in files]
    counts = rationalize_analogies.main(["--model_name_or_path", str(word_model_dir),
                                         "--data_dir", str(data_dir), "--categories", "family",
                                         "--max_examples", "3", "--no_filter",
                                         "--device", "cpu", "--max_steps", "6",
                                         "--out", str(analogy_results / "greedy")])
    assert counts["written"] == 0 and counts["existing"] == 3
    assert [p.stat().st_mtime_ns for p in files] == before


# -- Lambada end to end -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def lambada_results(tmp_path_factory, data_dir, bpe_model_dir) -> Path:
    results = tmp_path_factory.mktemp("lambada_results")
    for method in ("greedy", "gradient_norm"):
        counts = rationalize_lambada.main(["--model_name_or_path", str(bpe_model_dir),
                                           "--data_dir", str(data_dir), "--max_examples", "2",
                                           "--max_steps", "3", "--method", method,
                                           "--device", "cpu", "--out", str(results / method)])
        assert counts["written"] == 2
    return results


def test_lambada_records(lambada_results, data_dir):
    rows = lambada.read_annotated_lambada(data_dir / lambada.LAMBADA_FILE)[:2]
    records = read_results(lambada_results / "greedy")
    assert sorted(records) == ["0", "1"]
    pieces = []
    for name, row in zip(["0", "1"], rows):
        record = records[name]
        text, targets = record["input_text"], record["target_positions"]
        assert targets == list(range(targets[0], len(text)))
        pieces.append(len(targets))
        # All pieces rationalized; together they spell the last word.
        assert [r["target_position"] for r in record["rationalization"]] == targets
        assert "".join(text[p] for p in targets).strip() == row["text"].split()[-1]
        # Every human span's text appears among the human tokens.
        human = "".join(text[p] for p in record["human_subword_rationale"])
        for start, end in row["rationale"]:
            assert row["text"][start:end] in human
        assert record["lambada_index"] == row["lambadaIndex"]
    assert max(pieces) > 1  # a multi-piece last word was rationalized


def test_lambada_table(lambada_results, capsys):
    evaluate = evaluate_lambada_rationales
    rows = evaluate.main(["--results_dir", str(lambada_results)])
    assert list(rows) == ["gradient_norm", "greedy"]
    out = capsys.readouterr().out
    assert "| Method | Length | IOU | F1 |" in out and "| Gradient norms |" in out
    records = read_results(lambada_results / "greedy").values()
    ious = []
    for r in records:
        first = r["target_positions"][0]
        union = {p for rationale in r["all_rationales"] for p in rationale if p <= first}
        ious.append(intersection_over_union(union, r["human_subword_rationale"]))
        assert union == word_rationale(r["all_rationales"], first)
    assert rows["greedy"]["IOU"] == pytest.approx(sum(ious) / 2)
    for row in rows.values():
        assert 1 <= row["Length"] and 0 <= row["IOU"] <= 1 and 0 <= row["F1"] <= 1
    assert (lambada_results / "lambada_table.csv").is_file()


# -- figures, timing, data download -----------------------------------------------------------
def test_plot_rationalization(tmp_path, word_model_dir):
    from transformers import AutoTokenizer

    from huggingface.rationalization import rationalize_lm

    plot = plot_gpt2_rationalization
    tokenizer = AutoTokenizer.from_pretrained(word_model_dir)
    model = tiny_gpt2(len(tokenizer))
    ids = torch.tensor(tokenizer("I thought it was the opposite")["input_ids"])
    _, log = rationalize_lm(model, ids, tokenizer, verbose=False)
    (tmp_path / "log.json").write_text(json.dumps(log))
    paths = plot.main(["--log", str(tmp_path / "log.json"), "--out", str(tmp_path / "fig1"),
                       "--highlight", "3"])
    assert all(p.stat().st_size > 0 for p in paths) and paths[0].suffix == ".png"
    paths = plot.main(["--model_name_or_path", str(word_model_dir), "--prompt",
                       "I thought it was", "--device", "cpu", "--out", str(tmp_path / "m")])
    assert paths[0].is_file()
    tokens, matrix = plot.rationale_matrix(log)
    assert matrix[2].nonzero()[0].tolist() == sorted(log["all_rationales"][1])
    with pytest.raises(SystemExit):
        plot.main(["--out", str(tmp_path / "none")])  # neither a log nor a model


def test_merge_word_pieces_by_hand():
    plot = plot_gpt2_rationalization
    import numpy as np

    tokens = ["The", " cat", "s", " sat"]
    matrix = np.zeros((4, 4))
    matrix[2, 1] = 1  # "s" <- " cat"
    matrix[3, [2, 0]] = 1  # " sat" <- "s", "The"
    words, merged = plot.merge_word_pieces(tokens, matrix)
    assert words == ["The", " cats", " sat"]
    # " cats" row: union of rows 1-2 -> only " cat" itself (cleared diagonal);
    # " sat" row: columns {0} and {1,2} -> 1, 1
    assert merged.tolist() == [[0, 0, 0], [0, 0, 0], [1, 1, 0]]


def test_plot_the_repeats(tmp_path, analogy_texts):
    tokenizer = word_level_tokenizer(analogy_texts)
    the = tokenizer.convert_tokens_to_ids("the")
    standard, compatible = tmp_path / "standard", tmp_path / "compatible"
    rig_to_predict(tiny_gpt2(len(tokenizer)), the).save_pretrained(standard)
    tiny_gpt2(len(tokenizer), seed=1).save_pretrained(compatible)
    tokenizer.save_pretrained(compatible)
    script = plot_gpt2_the_repeats
    series = script.main(["--standard_model", str(standard), "--compatible_model",
                          str(compatible), "--word", "the", "--num_positions", "12",
                          "--device", "cpu", "--out", str(tmp_path / "fig4")])
    # The rigged "standard" model always repeats "the"; the random one rarely does.
    assert len(series["Standard"]) == 12 and min(series["Standard"]) > 0.9
    assert max(series["Compatible"]) < 0.5
    assert (tmp_path / "fig4.png").is_file() and (tmp_path / "fig4.json").is_file()
    with pytest.raises(SystemExit, match="single token"):
        script.main(["--standard_model", str(standard), "--compatible_model", str(compatible),
                     "--word", "the opposite", "--out", str(tmp_path / "x")])


def test_compare_rationalization_times_tiny(tmp_path):
    script = compare_rationalization_times
    summary = script.main(["--tiny", "--num_sequences", "2", "--length", "10",
                           "--exhaustive_max_steps", "3", "--out", str(tmp_path / "t.json")])
    assert set(summary["methods"]) == {"greedy_sparse", "greedy_masked", "exhaustive"}
    assert summary["greedy_rationales_agree"] is True
    assert summary["methods"]["greedy_sparse"]["ratio_to_greedy_sparse"] == 1.0
    assert all(s > 0 for m in summary["methods"].values() for s in m["seconds"])
    # exhaustive sizes are minimal: never larger than greedy's when it reached the argmax
    ex, gr = summary["methods"]["exhaustive"], summary["methods"]["greedy_sparse"]
    for e, g, ok in zip(ex["rationales"], gr["rationales"], ex["reached_argmax"]):
        assert not ok or len(e) <= len(g)
    assert json.loads((tmp_path / "t.json").read_text())["num_sequences"] == 2


def test_compare_rationalization_times_on_analogies(tmp_path, data_dir, sister_model_dir):
    """With a model, the timed sequences are analogy sentences it completes correctly: for the
    model that always says "sister" only (brother, sister) qualifies, explained by one token.
    """
    script = compare_rationalization_times
    summary = script.main(["--model_name_or_path", str(sister_model_dir), "--data_dir",
                           str(data_dir), "--num_sequences", "1", "--device", "cpu",
                           "--out", str(tmp_path / "t.json")])
    assert summary["num_sequences"] == 1
    for entry in summary["methods"].values():
        assert [len(r) for r in entry["rationales"]] == [1] and entry["reached_argmax"] == [True]


def test_download_data_copies_and_checks(tmp_path, data_dir, monkeypatch):
    script = download_data
    target = tmp_path / "data"
    written = script.main(["--data_dir", str(target), "--source", str(data_dir)])
    assert sorted(p.name for p in written) == sorted(script.FILES)
    assert (target / "questions-words.txt").read_bytes() == (
        data_dir / "questions-words.txt").read_bytes()
    assert script.main(["--data_dir", str(target), "--source", str(data_dir)]) == []  # kept
    with pytest.raises(SystemExit, match="lacks"):
        script.main(["--data_dir", str(target), "--source", str(tmp_path / "empty")])

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(script.urllib.request, "urlopen", offline)
    with pytest.raises(SystemExit, match="--source"):
        script.main(["--data_dir", str(tmp_path / "fresh")])


def test_templates_are_read_out_of_the_papers_code():
    script = download_data
    source = (
        "def create(all_analogies):\n"
        "  all_analogies['cat-one']['template'] = (\n"
        "    \"First [A], then \"\n"
        "    \"(an aside). Finally [B]\")\n"
        "  all_analogies['cat-two']['template'] = \"[B] (x). [A]\"\n"
        "  all_analogies['cat-two']['other'] = 'ignored'\n"
        "  return all_analogies\n")
    assert script.templates_from_data_utils(source) == {
        "cat-one": "First [A], then (an aside). Finally [B]", "cat-two": "[B] (x). [A]"}


@pytest.mark.parametrize("command", [
    "rationalize_analogies", "rationalize_lambada",
    "evaluate_analogies_rationales", "evaluate_lambada_rationales",
    "plot_gpt2_rationalization", "plot_gpt2_the_repeats",
    "compare_rationalization_times", "download_data"])
def test_help_explains_every_flag(command, monkeypatch, capsys):
    module = importlib.import_module(f"sequential_rationales_experiments.commands.{command}")
    parsers = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        parsers.append(self)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit) as exit_info:
        module.parse_args(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out
    (parser,) = parsers
    flags = [a for a in parser._actions if a.dest != "help"]
    assert flags
    assert all(a.help and len(a.help) > 10 for a in flags), [
        a.option_strings for a in flags if not a.help]


def test_dataset_runners_take_the_extractor_and_top_k(data_dir, word_model_dir, tmp_path):
    from sequential_rationales.extractor import ExtractorConfig, RationaleExtractor

    torch.manual_seed(0)
    extractor = RationaleExtractor(ExtractorConfig(hidden_size=32, rank=4)).save(
        tmp_path / "extractor")
    common = ["--model_name_or_path", str(word_model_dir), "--data_dir", str(data_dir),
              "--categories", "family", "--max_examples", "2", "--no_filter", "--device", "cpu"]
    out = tmp_path / "amortized"
    counts = rationalize_analogies.main([*common, "--method", "amortized", "--extractor",
                                         str(extractor), "--top_k", "2", "--out", str(out)])
    assert counts["written"] == 2
    for record in read_results(out).values():
        assert record["method"] == "amortized"
        assert all(len(r) == 2 for r in record["all_rationales"])
    saved = json.loads(next(out.glob("*provenance*.json")).read_text())
    assert saved["settings"]["top_k"] == 2 and saved["settings"]["extractor"]["fingerprint"]
    with pytest.raises(SystemExit, match="needs --extractor"):
        rationalize_analogies.main([*common, "--method", "amortized", "--out",
                                    str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="--top_k needs a method that ranks"):
        rationalize_analogies.main([*common, "--top_k", "2", "--out", str(tmp_path / "y")])
