"""One test per class of bad input or fault: each must fail with an error that names the problem
(the file and line where there is one), never finish silently with empty or NaN results."""

from __future__ import annotations

import copy
import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from sequential_rationales import RationalizationProblem, rationalize, rationalize_sequence
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.methods import default_max_steps
from sequential_rationales.search import count_exhaustive_subsets, exhaustive_search
from sequential_rationales.validation import InputError
from sequential_rationales_integrations.sharding import resolve_device

from .test_determinism import clm_args, write_clm_data

transformers = pytest.importorskip("transformers")

from huggingface.rationalization import (  # noqa: E402
    exhaustive_rationalize_lm,
    rationalize_lm,
)
from sequential_rationales_experiments import analogies, hf_models, lambada  # noqa: E402
from sequential_rationales_experiments.commands import (  # noqa: E402
    demo,
    plot_gpt2_rationalization,
    rationalize_analogies,
    rationalize_lambada,
    run_clm,
)
from sequential_rationales_integrations.huggingface.training import (  # noqa: E402
    read_documents,
)

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])


class Words:
    """A stand-in tokenizer: decodes ids to ``w<id>``."""

    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)


@pytest.fixture(scope="module")
def clm_data(tmp_path_factory) -> Path:
    return write_clm_data(tmp_path_factory.mktemp("clm"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, clm_data) -> Path:
    """A tiny random GPT-2 with the word-level tokenizer, saved as a model folder."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("model")
    tokenizer = AutoTokenizer.from_pretrained(clm_data / "tokenizer")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(tokenizer),
                        n_positions=64, bos_token_id=2, eos_token_id=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- 1. silent results ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def nan_gpt2(tiny_gpt2):
    model = copy.deepcopy(tiny_gpt2)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight.fill_(float("nan"))
    return model


@pytest.mark.parametrize("method", ["greedy", "exhaustive", "gradient_norm", "signed_gradient",
                                    "integrated_gradient", "attention_rollout",
                                    "last_attention", "all_attention"])
def test_nan_model_is_an_error_for_every_method(nan_gpt2, method):
    options = {"max_steps": 3} if method == "exhaustive" else {"integrated_gradient_steps": 2}
    with pytest.raises(ValueError, match="NaN"):  # no result, so no log with NaN is written
        rationalize_sequence(HuggingFaceCausalLM(nan_gpt2), IDS, str, method, **options)


def test_nan_model_through_the_seed_function(nan_gpt2):
    with pytest.raises(ValueError, match="NaN weights"):
        rationalize_lm(nan_gpt2, IDS, Words(), verbose=False)


@pytest.mark.parametrize("max_steps", [0, -1, 1.5, True])
@pytest.mark.parametrize("function", [rationalize_lm, exhaustive_rationalize_lm])
def test_max_steps_below_one_is_an_error(tiny_gpt2, function, max_steps):
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        function(tiny_gpt2, IDS, Words(), verbose=False, max_steps=max_steps)


@pytest.mark.parametrize("max_steps", [0, -3])
@pytest.mark.parametrize("search", ["greedy_search", "exhaustive_search"])
def test_core_searches_refuse_max_steps_below_one(tiny_gpt2, search, max_steps):
    from sequential_rationales import search as module

    problem = RationalizationProblem(IDS)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        getattr(module, search)(HuggingFaceCausalLM(tiny_gpt2), problem, max_steps)


@pytest.mark.parametrize("main, argv", [
    (rationalize_lambada.main, ["--model_name_or_path", "m", "--max_steps", "0"]),
    (rationalize_analogies.main, ["--model_name_or_path", "m", "--max_steps", "-2"]),
    (plot_gpt2_rationalization.main, ["--model_name_or_path", "m", "--max_steps", "0"]),
    (demo.main, ["--steps", "0"]),
])
def test_max_steps_flags_below_one_are_usage_errors(main, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and "must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5"])
def test_run_clm_max_steps_zero_is_an_error(clm_data, tmp_path, value):
    with pytest.raises(ValueError, match=f"--max_steps must be >= 1.*got {value}"):
        run_clm.main(clm_args(clm_data, tmp_path / "out", "--max_steps", value))


def test_model_folder_without_tokenizer_files(tmp_path, clm_data):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=43)).save_pretrained(
        tmp_path / "bare")
    with pytest.raises(SystemExit, match="has no tokenizer files"):
        hf_models.load_tokenizer(str(tmp_path / "bare"))
    args = clm_args(clm_data, tmp_path / "out", "--max_steps", "1")
    args[:6] = ["--model_name_or_path", str(tmp_path / "bare")]  # no --tokenizer_name
    with pytest.raises(FileNotFoundError, match="has no tokenizer files.*--tokenizer_name"):
        run_clm.main(args)


def test_empty_data_files(tmp_path, clm_data):
    (tmp_path / "empty.txt").write_text("\n \n")
    args = clm_args(clm_data, tmp_path / "out", "--max_steps", "1")
    args[args.index("--train_file") + 1] = str(tmp_path / "empty.txt")
    with pytest.raises(ValueError, match="empty.txt contains no text"):
        run_clm.main(args)
    (tmp_path / lambada.LAMBADA_FILE).write_text("\n")
    with pytest.raises(ValueError, match="holds no passages"):
        lambada.read_annotated_lambada(tmp_path / lambada.LAMBADA_FILE)
    (tmp_path / analogies.ANALOGIES_FILE).write_text(": capital-common-countries\n")
    with pytest.raises(ValueError, match="questions-words.txt holds no word pairs"):
        analogies.read_analogy_pairs(tmp_path / analogies.ANALOGIES_FILE)


def test_analogies_with_no_example_is_an_error(tmp_path, model_dir):
    (tmp_path / analogies.ANALOGIES_FILE).write_text(": family\nw1 w2 w3 w4\n")
    (tmp_path / analogies.TEMPLATES_FILE).write_text(json.dumps(
        {"currency": "[A] is used in (a clause) [B]"}))
    with pytest.raises(SystemExit, match="no analogy example"):
        rationalize_analogies.main(["--model_name_or_path", str(model_dir), "--data_dir",
                                    str(tmp_path), "--out", str(tmp_path / "out"),
                                    "--device", "cpu"])


@pytest.mark.parametrize("spans, problem", [
    ([[0, 4], [3, 99]], r"\[3, 99\] lies outside the passage of 14 characters"),
    ([[-1, 2]], r"\[-1, 2\] lies outside the passage"),
    ([[5, 2]], r"\[5, 2\] is inverted"),
    ([[1, 2, 3]], r"\[1, 2, 3\] is not \[start, end\]"),
])
def test_lambada_spans_outside_the_passage(tmp_path, spans, problem):
    path = tmp_path / lambada.LAMBADA_FILE
    good = json.dumps({"text": "a b c d e f gh", "rationale": [[0, 1]]})
    path.write_text(good + "\n\n" + json.dumps({"text": "a b c d e f gh", "rationale": spans}))
    with pytest.raises(ValueError, match=f"{lambada.LAMBADA_FILE}:3: rationale span {problem}"):
        lambada.read_annotated_lambada(path)


@pytest.mark.parametrize("content, problem", [
    ('{"capital": "[A] (x) [B]",\n "city": oops}', r"analogy_templates.json:2: invalid JSON"),
    ('["[A] (x) [B]"]', "expected a non-empty JSON object"),
    ("{}", "expected a non-empty JSON object"),
    ('{"capital": 3}', "template 'capital' must be a string"),
    ('{"capital": "[A] (x) [A]"}', "template 'capital' needs exactly one"),
    ('{"capital": "[A] x [B]"}', "template 'capital' has no parenthetical"),
])
def test_malformed_templates_name_the_file_and_key(tmp_path, content, problem):
    path = tmp_path / analogies.TEMPLATES_FILE
    path.write_text(content)
    with pytest.raises(ValueError, match=problem) as error:
        analogies.read_templates(path)
    assert str(path) in str(error.value)


# -- 2. poor messages -----------------------------------------------------------------------
@pytest.mark.parametrize("name, content, where", [
    ("bad.jsonl", '{"text": "a"}\n\n{"text": "b"\n', "bad.jsonl:3: invalid JSON line"),
    ("bad.json", '[{"text": "a"},\n {"text": }]', "bad.json:2: invalid JSON"),
    ("fields.jsonl", '{"text": "a"}\n{"body": "b"}\n', "fields.jsonl:2: record 2 has no"),
])
def test_malformed_training_json_names_file_and_line(tmp_path, name, content, where):
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=where):
        list(read_documents(str(tmp_path / name)))


def test_malformed_lambada_json_names_file_and_line(tmp_path):
    path = tmp_path / lambada.LAMBADA_FILE
    path.write_text(json.dumps({"text": "a b", "rationale": []}) + '\n{"text": "a b",\n')
    with pytest.raises(ValueError, match=f"{lambada.LAMBADA_FILE}:2: invalid JSON"):
        lambada.read_annotated_lambada(path)


class Searched(Exception):
    pass


@pytest.mark.parametrize("tokenizer", [None, "gpt2", object()])
def test_tokenizer_without_decode_fails_before_the_search(tiny_gpt2, monkeypatch, tokenizer):
    import huggingface.rationalization as seed

    def search(*args, **kwargs):
        raise Searched

    monkeypatch.setattr(seed, "rationalize_sequence", search)
    with pytest.raises(TypeError, match="tokenizer must be a tokenizer with a decode"):
        rationalize_lm(tiny_gpt2, IDS, tokenizer, verbose=False)


@pytest.mark.parametrize("path", ["./no/such/model", "/no/such/model", "a/b/c"])
def test_missing_model_directory_is_not_a_hub_error(path, tmp_path, clm_data, capsys):
    with pytest.raises(SystemExit, match=f"model directory {path} does not exist"):
        hf_models.load_causal_lm(path, "cpu")
    with pytest.raises(SystemExit, match=f"tokenizer directory {path} does not exist"):
        hf_models.load_tokenizer(path)
    args = clm_args(clm_data, tmp_path / "out", "--max_steps", "1")
    args[:6] = ["--model_name_or_path", path]
    with pytest.raises(FileNotFoundError, match=f"model directory {path} does not exist"):
        run_clm.main(args)
    args = clm_args(clm_data, tmp_path / "out", "--max_steps", "1")
    args[args.index("--tokenizer_name") + 1] = path
    with pytest.raises(FileNotFoundError, match=f"tokenizer directory {path} does not exist"):
        run_clm.main(args)


def test_unwritable_output_dir_fails_before_training(tmp_path, clm_data, monkeypatch):
    (tmp_path / "file").write_text("")

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_clm.WordDropoutTrainer, "train", no_training)
    with pytest.raises(PermissionError, match="--output_dir .*file/out is not a writable"):
        run_clm.main(clm_args(clm_data, tmp_path / "file" / "out", "--max_steps", "1"))
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(PermissionError, match="is not a writable directory"):
            run_clm.main(clm_args(clm_data, tmp_path / "ro", "--max_steps", "1"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device, problem", [
    ("cuda", "device cuda: CUDA is not available on this machine"),
    ("cuda:1", "device cuda:1: CUDA is not available"),
    ("banana", "device banana is not a torch device"),
])
def test_unavailable_device_is_one_line(device, problem):
    with pytest.raises(InputError, match=problem) as raised:
        resolve_device(device)
    assert "\n" not in str(raised.value)


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    return T5ForConditionalGeneration(T5Config(d_model=16, d_ff=16, num_layers=1, num_heads=2,
                                               d_kv=8, vocab_size=12))


def _gpt2_without_head():
    from transformers import GPT2Config, GPT2Model

    return GPT2Model(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=12))


def _fairseq_lm():
    pytest.importorskip("fairseq")
    from .fairseq_helpers import tiny_lm

    return tiny_lm()[0]


@pytest.mark.parametrize("make, problem", [
    (lambda: nn.Linear(4, 4), "got Linear, which has no Hugging Face config"),
    (lambda: "gpt2", "got a str, which is not a torch module"),
    (_gpt2_without_head, "got GPT2Model, which has no language-model head"),
    (_t5, "got the encoder-decoder \\(seq2seq\\) model T5ForConditionalGeneration"),
    (_fairseq_lm, "got the fairseq model .*; use sequential_rationales.adapters.fairseq"),
])
def test_wrong_model_family_is_one_sentence(make, problem):
    model = make()
    with pytest.raises(TypeError, match=problem):
        HuggingFaceCausalLM(model)
    with pytest.raises(TypeError, match=problem):
        rationalize_lm(model, IDS, Words(), verbose=False)


# -- 3. long searches say so ----------------------------------------------------------------
def test_subset_count_matches_the_enumeration():
    problem = RationalizationProblem(torch.arange(9), targets=[3, 8])
    by_hand = sum(math.comb(t - 1, k - 1) for t in (3, 8) for k in range(1, 5))
    assert count_exhaustive_subsets(problem, 4) == by_hand == 1 + 2 + 1 + 0 + 1 + 7 + 21 + 35


def test_exhaustive_search_refuses_warns_and_reports(tiny_gpt2, monkeypatch):
    from sequential_rationales import search

    adapter, ids = HuggingFaceCausalLM(tiny_gpt2), torch.arange(1, 12)
    problem = RationalizationProblem(ids, targets=[10])
    total = count_exhaustive_subsets(problem, 4)  # 1 + 9 + 36 + 84 = 130
    with pytest.raises(ValueError, match=f"up to {total} subsets .*more than max_subsets=100; "
                                         f".*raise max_subsets to {total} "
                                         f"\\(--max-subsets {total}"):
        exhaustive_search(adapter, problem, 4, max_subsets=100)
    with pytest.raises(ValueError, match="max_subsets=100"):
        rationalize(adapter, problem, "exhaustive", max_steps=4, max_subsets=100)

    monkeypatch.setattr(search, "WARN_SUBSETS", 50)
    seen = []
    with pytest.warns(RuntimeWarning, match=f"up to {total} subsets"):
        reported = exhaustive_search(adapter, problem, 4, max_tokens_per_batch=24,
                                     progress=lambda d, t: seen.append(d))
    assert len(seen) > 10 and seen == sorted(seen) and seen[-1] == total
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = exhaustive_search(adapter, problem, 4, max_tokens_per_batch=24, progress=False)
    assert reported == plain  # progress reporting never changes the results


def test_exhaustive_search_defaults_to_six_steps(tiny_gpt2):
    """As in the original project: without max_steps, exhaustive search stops at subsets of 6
    tokens (every other method at 1024), so a 20-token context is searched, not refused."""
    assert default_max_steps("exhaustive") == 6 and default_max_steps("greedy") == 1024
    adapter = HuggingFaceCausalLM(tiny_gpt2)
    problem = RationalizationProblem(torch.arange(20) % 11 + 1, targets=[19])
    six = count_exhaustive_subsets(problem, 6)
    result = rationalize(adapter, problem, "exhaustive", max_subsets=six)
    assert 1 <= len(result.rationales[0].rationale) <= 6
    with pytest.raises(ValueError, match="max_steps=7 would score"):
        rationalize(adapter, problem, "exhaustive", max_steps=7, max_subsets=six)


def test_exhaustive_progress_on_stderr(tiny_gpt2, capsys):
    problem = RationalizationProblem(torch.arange(1, 8), targets=[6])
    exhaustive_search(HuggingFaceCausalLM(tiny_gpt2), problem, 3, progress=True)
    assert "exhaustive search:" in capsys.readouterr().err


def test_max_subsets_flag_reaches_the_search(tmp_path, model_dir, capsys):
    words = " ".join(f"w{i}" for i in range(30))
    (tmp_path / lambada.LAMBADA_FILE).write_text(json.dumps({"text": words, "rationale": []}))
    argv = ["--model_name_or_path", str(model_dir), "--data_dir", str(tmp_path), "--out",
            str(tmp_path / "out"), "--method", "exhaustive", "--max_steps", "8", "--device",
            "cpu"]
    with pytest.raises(ValueError, match="raise max_subsets to \\d+ \\(--max-subsets \\d+ "):
        rationalize_lambada.main([*argv, "--max_subsets", "1000"])
    written = [p.name for p in (tmp_path / "out").glob("*.json") if p.name != "provenance.json"]
    assert not written  # no result written (only the run's provenance record)


class NaNGoalScores(HuggingFaceCausalLM):
    """An adapter whose goal log-probabilities are NaN while the argmax looks fine."""

    def score(self, batch, goals):
        table = super().score(batch, goals)
        table[:, 0] = float("nan")
        return table


@pytest.mark.parametrize("method", ["greedy", "exhaustive", "last_attention"])
def test_nan_scores_from_an_adapter_are_an_error(tiny_gpt2, method):
    with pytest.raises(ValueError, match="NaN"):
        rationalize_sequence(NaNGoalScores(tiny_gpt2), IDS, str, method, max_steps=2)
