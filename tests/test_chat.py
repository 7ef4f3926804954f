"""Chat models: the input as the user turn of the tokenizer's chat template, the model's answer
rationalized (the API, the command, the viewer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import sequential_rationales as sr
from sequential_rationales import rationalize_sequence
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

from .test_rationalize_cli import read, save_tiny_lm

transformers = pytest.importorskip("transformers")

TEMPLATE = ("{% for m in messages %}<{{ m.role }}> {{ m.content }} {% endfor %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def save_chat_lm(path: Path, template: str | None = TEMPLATE) -> Path:
    """A random GPT-2 whose word-level tokenizer knows the roles, with a chat template."""
    return save_tiny_lm(path, extra_words=("<system>", "<user>", "<assistant>", "be", "brief"),
                        chat_template=template)


@pytest.fixture(scope="module")
def chat_dir(tmp_path_factory) -> Path:
    return save_chat_lm(tmp_path_factory.mktemp("chat"))


def test_the_answer_is_rationalized_in_its_conversation(chat_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = sr.load(chat_dir, device="cpu").rationalize("the cat sat", chat=True,
                                                      system="be brief", generate=3)
    record = out[0]
    tokenizer = AutoTokenizer.from_pretrained(chat_dir)
    words = lambda text: tokenizer(text)["input_ids"]  # noqa: E731
    prompt = words("<system> be brief <user> the cat sat <assistant>")
    assert record["input_ids"][:len(prompt)] == prompt and record["prompt_length"] == len(prompt)
    assert [t["target_position"] for t in record["rationalization"]] == list(
        range(len(prompt), len(record["input_ids"])))
    assert [m["role"] for m in record["chat"]] == ["system", "user", "assistant"]
    assert record["chat"][:2] == [{"role": "system", "content": "be brief"},
                                  {"role": "user", "content": "the cat sat"}]
    assert record["chat_starts"] == [0, len(words("<system> be brief")),
                                     len(words("<system> be brief <user> the cat sat"))]
    # The known answer: the core on the same ids from the answer on.
    model = AutoModelForCausalLM.from_pretrained(chat_dir).eval()
    _, log = rationalize_sequence(HuggingFaceCausalLM(model), torch.tensor(record["input_ids"]),
                                  lambda i: tokenizer.decode([i]), start_step=len(prompt) - 1)
    assert record["all_rationales"] == log["all_rationales"]


@pytest.mark.parametrize("kwargs, message", [
    ({"chat": True}, "pass --generate N"),
    ({"chat": True, "generate": 2, "start_step": 1}, "--start-step does not apply to --chat"),
    ({"system": "be brief", "generate": 2}, "a system turn .* belongs to a chat"),
])
def test_chat_flags_that_do_not_fit_are_one_line(chat_dir, kwargs, message):
    with pytest.raises(sr.InputError, match=message):
        sr.load(chat_dir, device="cpu").rationalize("the cat", **kwargs)


def test_a_tokenizer_without_a_template_is_refused(tmp_path):
    folder = save_chat_lm(tmp_path / "plain", template=None)
    with pytest.raises(sr.InputError, match=r"has no chat template: --chat needs a chat "):
        sr.load(folder, device="cpu").rationalize("the cat", chat=True, generate=2)


def test_the_viewer_shows_the_roles(chat_dir, tmp_path):
    out = sr.load(chat_dir, device="cpu").rationalize(["the cat sat", "a dog ran"], chat=True,
                                                      system="be brief", generate=2)
    html = out.save_html(tmp_path / "chat.html").read_text(encoding="utf-8")
    for record in out:
        assert len(record["chat_starts"]) == 3
    roles = [chunk.split("</span>")[0] for chunk in html.split('<span class="sr-role">')[1:]]
    assert roles == ["system", "user", "assistant"] * 2
    assert html.count('<span class="sr-tok') == sum(len(r["input_ids"]) for r in out)
    assert html.count("<b>Chat ") == 2


def test_the_command_records_the_chat_and_keeps_it_in_the_provenance(chat_dir, tmp_path):
    from sequential_rationales_integrations import rationalize_cli

    out = tmp_path / "chat.jsonl"
    argv = ["--model", str(chat_dir), "--device", "cpu", "--text", "the cat sat", "--chat",
            "--system", "be brief", "--generate", "2", "--out", str(out)]
    rationalize_cli.main(argv)
    (record,) = read(out)
    api = sr.load(chat_dir, device="cpu").rationalize("the cat sat", chat=True,
                                                      system="be brief", generate=2)
    assert record["chat"] == api[0]["chat"] and record["all_rationales"] == (
        api[0]["all_rationales"])
    settings = json.loads(out.with_name("chat.provenance.json").read_text())["settings"]
    assert settings["chat"] is True and settings["system"] == "be brief"
    with pytest.raises(sr.InputError, match="--system"):
        rationalize_cli.main([*argv[:-6], "--chat", "--system", "be", "--generate", "2",
                              "--out", str(out)])
