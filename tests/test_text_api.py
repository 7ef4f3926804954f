"""The three-line Python API (``sr.load(...).rationalize(...)``, ``.show()``): its records are
the core's contracts on the same ids, the same the ``rationalize`` command writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import sequential_rationales as sr
from sequential_rationales import rationalize_sequence
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

from .test_rationalize_cli import TEXTS, read, save_tiny_lm, without_durations

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def rationalizer(lm_dir):
    return sr.load(lm_dir, device="cpu")


def _core_log(lm_dir, text: str, start_step: int = 0, generate: int | None = None) -> dict:
    """The known answer: the core on the tokenizer's ids (and the greedy continuation)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    model = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if generate:
        ids = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                             max_new_tokens=generate, pad_token_id=tokenizer.eos_token_id)
    _, log = rationalize_sequence(HuggingFaceCausalLM(model), ids[0],
                                  lambda i: tokenizer.decode([i]), start_step=start_step)
    return log


def test_three_lines_give_the_cores_rationales(lm_dir, rationalizer):
    out = rationalizer.rationalize(TEXTS[0])
    assert len(out) == 1 and rationalizer.kind == "language model"
    record = out[0]
    assert record["input_index"] == 0 and record["text"] == TEXTS[0]
    expected = _core_log(lm_dir, TEXTS[0])
    assert without_durations([{k: v for k, v in record.items()
                               if k not in ("input_index", "text")}]) == without_durations(
        [expected])
    assert out.results[0].rationales[0].target_position == 1


def test_generate_rationalizes_the_continuation_only(lm_dir, rationalizer):
    prompt = "the cat sat"
    out = rationalizer.rationalize(prompt, generate=3)
    record = out[0]
    prompt_length = record["prompt_length"]
    positions = [t["target_position"] for t in record["rationalization"]]
    assert positions == list(range(prompt_length, prompt_length + 3))
    expected = _core_log(lm_dir, prompt, start_step=prompt_length - 1, generate=3)
    assert record["all_rationales"] == expected["all_rationales"]


def test_the_api_and_the_command_write_the_same_records(lm_dir, rationalizer, tmp_path):
    from sequential_rationales_integrations import rationalize_cli

    out = rationalizer.rationalize(TEXTS[:2], method="greedy", max_steps=4)
    path = tmp_path / "out.jsonl"
    rationalize_cli.main(["--model", str(lm_dir), "--device", "cpu", "--text", *TEXTS[:2],
                          "--max-steps", "4", "--out", str(path)])
    assert without_durations(out.records) == without_durations(read(path))
    assert without_durations([json.loads(line) for line in out.to_json().splitlines()]) == (
        without_durations(read(path)))


def test_show_save_html_and_text(rationalizer, tmp_path, capsys):
    out = rationalizer.rationalize(["the cat sat", "a dog ran"], method="last_attention")
    page = out.save_html(tmp_path / "page.html")
    html = page.read_text(encoding="utf-8")
    assert html.lower().startswith("<!doctype html>") and html.count('class="sr-seq"') == 2
    assert out._repr_html_().count('class="sr-seq"') == 2
    out.show()  # not in a notebook: the text
    shown = capsys.readouterr().out
    assert shown.splitlines()[0] == "[input 0] the cat sat"
    assert "method: last_attention" in shown and "[input 1] a dog ran" in shown
    targets = len(out[0]["rationalization"]) + len(out[1]["rationalization"])
    assert repr(out) == f"<Rationales: 2 input(s), {targets} target(s)>"


def test_a_loaded_model_with_its_tokenizer(lm_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(lm_dir)
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    by_object = sr.load(model, tokenizer).rationalize(TEXTS[1], max_steps=3)
    by_folder = sr.load(lm_dir, device="cpu").rationalize(TEXTS[1], max_steps=3)
    assert without_durations(by_object.records) == without_durations(by_folder.records)
    assert without_durations(sr.load(model, str(lm_dir)).rationalize(
        TEXTS[1], max_steps=3).records) == without_durations(by_folder.records)


@pytest.mark.parametrize("call, error, message", [
    (lambda m: sr.load(m), sr.InputError, "needs its tokenizer"),
    (lambda m: sr.load(3), TypeError, "takes a model folder"),
    (lambda m: sr.load("no/such/folder"), sr.InputError, "does not exist"),
])
def test_load_refuses_in_one_sentence(lm_dir, call, error, message):
    from transformers import AutoModelForCausalLM

    with pytest.raises(error, match=message):
        call(AutoModelForCausalLM.from_pretrained(lm_dir))


@pytest.mark.parametrize("texts, error, message", [
    ([], sr.InputError, "no input"),
    (["the cat", "  "], sr.InputError, "input 1 is empty"),
    ([{"txt": "x"}], TypeError, "input 0 must be a string or a record"),
])
def test_bad_texts_are_one_line(rationalizer, texts, error, message):
    with pytest.raises(error, match=message):
        rationalizer.rationalize(texts)


def test_importing_the_api_loads_no_framework():
    code = ("import sys, sequential_rationales as sr; sr.load; sr.Rationales; "
            "sys.exit(1 if {'transformers', 'fairseq'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


def test_terminal_text_can_be_coloured(rationalizer):
    from sequential_rationales.render import BOLD, CYAN, RESET

    out = rationalizer.rationalize("the cat sat", max_steps=2)
    plain, coloured = out.text(), out.text(color=True)
    assert BOLD not in plain and CYAN not in plain
    assert coloured.count(BOLD) == len(out[0]["rationalization"])
    assert coloured.replace(BOLD, "").replace(CYAN, "").replace(RESET, "") == plain
