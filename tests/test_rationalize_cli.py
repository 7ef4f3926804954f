"""The ``rationalize`` command on tiny random models saved to disk: its records equal the core's
on the same ids, runs resume (also after a SIGKILL), inputs come from texts, text files and
JSONL, greedy continuations are the model's argmax, bad input stops with one clear line, and a
fairseq translation checkpoint (trained by the real fairseq CLIs) works with --data."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import sequential_rationales as sr
from sequential_rationales import rationalize_sequence, rationalize_translation
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.validation import InputError
from sequential_rationales_integrations import models
from sequential_rationales_integrations import rationalize_cli as rationalize
from sequential_rationales_integrations.huggingface import text as hf_text

from .docs_examples import hub_snapshot

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "rationalize.py"
WORDS = "the cat sat on a mat and dog ran to big red house".split()
TEXTS = ["the cat sat on a mat", "a dog ran to the big red house", "the red cat ran"]


def save_tiny_lm(path: Path, seed: int = 0, extra_words: tuple[str, ...] = (),
                 chat_template: str | None = None) -> Path:
    """A random GPT-2 (2 layers) with a word-level tokenizer (``WORDS``, ``extra_words`` and
    an optional chat template), saved as a model directory."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    tokenizer = build_word_level_tokenizer([" ".join([*WORDS, *extra_words])])
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer),
                        n_positions=64, bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def lm(lm_dir):
    return hf_text.CausalLM.load(lm_dir, lm_dir, "cpu", None)


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_durations(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "duration"} for r in records]


def run(lm_dir: Path, *args: str) -> dict:
    return rationalize.main(["--model", str(lm_dir), "--device", "cpu", *args])


@pytest.fixture
def count_calls(monkeypatch) -> list[int]:
    """Counts the inputs the command rationalizes (one core call each)."""
    calls: list[int] = []
    real = hf_text.rationalize_sequence

    def counted(adapter, ids, *args, **kwargs):
        calls.append(len(ids))
        return real(adapter, ids, *args, **kwargs)

    monkeypatch.setattr(hf_text, "rationalize_sequence", counted)
    return calls


# -- results ----------------------------------------------------------------------------------
def test_greedy_records_equal_the_core_on_the_same_ids(lm_dir, lm, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    summary = run(lm_dir, "--text", *TEXTS, "--out", str(out), "--max-steps", "4")
    records = read(out)
    assert [r["input_index"] for r in records] == [0, 1, 2]
    assert [r["text"] for r in records] == TEXTS
    for text, record in zip(TEXTS, records):
        ids = torch.tensor(lm.tokenizer(text)["input_ids"])
        _, log = rationalize_sequence(HuggingFaceCausalLM(lm.model), ids, lm.decode, "greedy",
                                      0, max_steps=4)
        assert without_durations([record]) == without_durations(
            [{"input_index": record["input_index"], "text": text, **log}])
    targets = [t for r in records for t in r["rationalization"]]
    assert summary["inputs"] == summary["written"] == 3
    assert summary["targets"] == len(targets) == sum(len(t.split()) - 1 for t in TEXTS)
    assert summary["mean_rationale_length"] == pytest.approx(
        sum(len(t["rationale"]) for t in targets) / len(targets))
    assert summary["reached_argmax"] == pytest.approx(
        sum(t["reached_argmax"] for t in targets) / len(targets))
    assert "3 inputs (3 rationalized now" in capsys.readouterr().out


def test_a_baseline_method_and_start_step(lm_dir, lm, tmp_path):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", TEXTS[1], "--out", str(out), "--method", "last_attention",
        "--start-step", "4")
    record = read(out)[0]
    assert record["method"] == "last_attention"
    assert [t["target_position"] for t in record["rationalization"]] == [5, 6, 7]


def test_without_out_the_rationales_are_printed(lm_dir, capsys):
    summary = run(lm_dir, "--text", TEXTS[0])
    printed = capsys.readouterr().out
    assert "[input 0] the cat sat on a mat" in printed and "method: greedy" in printed
    assert summary["inputs"] == 1 and summary["out"] is None


def test_generate_rationalizes_the_greedy_continuation(lm_dir, lm, tmp_path):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--generate", "4", "--out", str(out))
    record = read(out)[0]
    prompt = lm.tokenizer(TEXTS[0])["input_ids"]
    ids = list(prompt)
    with torch.no_grad():  # the known answer: the argmax, one token at a time
        for _ in range(4):
            ids.append(int(lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
            if ids[-1] == lm.tokenizer.eos_token_id:
                break
    assert record["input_ids"] == ids
    assert record["prompt_length"] == len(prompt)
    assert [t["target_position"] for t in record["rationalization"]] == list(
        range(len(prompt), len(ids)))
    # The continuation is the model's own prediction: every rationale reaches it.
    assert all(t["reached_argmax"] for t in record["rationalization"])


def test_input_text_file_and_jsonl_give_the_same_records(lm_dir, tmp_path):
    (tmp_path / "in.txt").write_text(f"{TEXTS[0]}\n\n  {TEXTS[1]}  \n{TEXTS[2]}\n")
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": t, "id": i}) + "\n"
                                               for i, t in enumerate(TEXTS)))
    for name in ("in.txt", "in.jsonl"):
        run(lm_dir, "--input", str(tmp_path / name), "--out", str(tmp_path / f"{name}.jsonl"))
    run(lm_dir, "--text", *TEXTS, "--out", str(tmp_path / "text.jsonl"))
    expected = without_durations(read(tmp_path / "text.jsonl"))
    assert without_durations(read(tmp_path / "in.txt.jsonl")) == expected
    assert without_durations(read(tmp_path / "in.jsonl.jsonl")) == expected


@pytest.mark.skipif(importlib.util.find_spec("sequential_rationales.html") is None,
                    reason="sequential_rationales.html is not there yet")
def test_html_page_is_written(lm_dir, tmp_path):
    run(lm_dir, "--text", *TEXTS[:2], "--out", str(tmp_path / "out.jsonl"), "--html",
        str(tmp_path / "page.html"))
    assert (tmp_path / "page.html").stat().st_size > 0


# -- resuming ---------------------------------------------------------------------------------
def test_a_rerun_skips_the_inputs_already_written(lm_dir, tmp_path, count_calls, monkeypatch):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", *TEXTS[:2], "--out", str(out))
    first = out.read_text()
    assert len(count_calls) == 2
    summary = run(lm_dir, "--text", *TEXTS, "--out", str(out))
    assert len(count_calls) == 3  # only the new input
    assert out.read_text().startswith(first)
    assert [r["input_index"] for r in read(out)] == [0, 1, 2]
    assert summary["written"] == 1 and summary["records"] == 3

    def no_model(*args):
        raise AssertionError("a finished run loads no model")

    monkeypatch.setattr(rationalize, "load_rationalizer", no_model)
    assert run(lm_dir, "--text", *TEXTS, "--out", str(out))["written"] == 0


def test_a_torn_last_line_is_redone(lm_dir, tmp_path, count_calls):
    out = tmp_path / "out.jsonl"
    run(lm_dir, "--text", *TEXTS, "--out", str(out))
    whole = out.read_text()
    lines = whole.splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:len(lines[2]) // 2])  # killed mid-line
    count_calls.clear()
    run(lm_dir, "--text", *TEXTS, "--out", str(out))
    assert len(count_calls) == 1
    assert without_durations(read(out)) == without_durations(
        [json.loads(line) for line in lines])


def test_a_killed_run_resumes_with_one_intact_record_per_input(lm_dir, tmp_path):
    """SIGKILL the command in a subprocess after its first records, then run it again."""
    inputs = tmp_path / "in.txt"
    sentences = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12 + i % 5))
                 for i in range(30)]
    inputs.write_text("\n".join(sentences) + "\n")
    out = tmp_path / "out.jsonl"
    command = [sys.executable, str(SCRIPT), "--model", str(lm_dir), "--device", "cpu",
               "--input", str(inputs), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = out.read_text().count("\n")
    assert 3 <= killed_at < len(sentences), "the run finished before it could be killed"
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    records = read(out)
    assert [r["input_index"] for r in records] == list(range(len(sentences)))
    assert [r["text"] for r in records] == sentences
    assert f"{len(sentences) - killed_at} rationalized now" in done.stdout


# -- errors -----------------------------------------------------------------------------------
def test_bad_inputs_stop_with_a_clear_error(lm_dir, tmp_path):
    no_tokenizer = tmp_path / "no_tokenizer"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((lm_dir / "config.json").read_text())
    (tmp_path / "empty.txt").write_text("\n  \n")
    (tmp_path / "other.jsonl").write_text(json.dumps({"input_index": 0, "text": "other"}) + "\n")
    cases = [
        (["--model", str(tmp_path / "absent"), "--text", "a b"], "does not exist"),
        (["--model", str(no_tokenizer), "--text", "a b"], "no tokenizer files"),
        (["--model", str(lm_dir), "--input", str(tmp_path / "empty.txt")], "no input"),
        (["--model", str(lm_dir), "--input", str(tmp_path / "absent.txt")], "not a file"),
        (["--model", str(lm_dir), "--text", "a b", "--method", "best"], "unknown --method"),
        (["--model", str(lm_dir), "--text", "cat"], "one token"),
        (["--model", str(lm_dir), "--text", "a b c", "--start-step", "5"], "--start-step"),
        (["--model", str(lm_dir), "--text", "a b", "--out", str(tmp_path / "x.json")],
         "must end with .jsonl"),
        (["--model", str(lm_dir), "--text", "a b", "--out", str(tmp_path / "other.jsonl")],
         "belongs to another run"),
        (["--model", str(tmp_path / "empty.txt"), "--text", "a b"], "neither"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", str(lm_dir), "--text", "a b", "--device", "cuda"],
                      "CUDA is not available"))
    for argv, message in cases:
        with pytest.raises((SystemExit, InputError), match=message):
            rationalize.main(["--device", "cpu", *argv])


def test_an_error_is_one_line_without_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--model", str(tmp_path / "absent"),
                           "--text", "a b"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --model {tmp_path / 'absent'} does not exist"]


def test_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        rationalize.main(["--help"])
    text = capsys.readouterr().out
    for action in rationalize.build_parser()._actions:
        assert action.help, action.option_strings
    for flag in ("--model", "--data", "--text", "--input", "--method", "--max-steps",
                 "--start-step", "--generate", "--device", "--dtype", "--max-tokens-per-batch",
                 "--integrated-gradient-steps", "--out", "--html"):
        assert flag in text


# -- fairseq translation ----------------------------------------------------------------------
def test_fairseq_translation_checkpoint(translation_checkpoint, tmp_path):
    checkpoints, data = translation_checkpoint
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"source": "s1 s2 s3", "target": "t3 t2 t1"}) + "\n"
                     + json.dumps({"source": "s4 s5"}) + "\n")
    out = tmp_path / "out.jsonl"
    summary = rationalize.main(["--model", str(checkpoints), "--data", str(data), "--device",
                                "cpu", "--input", str(pairs), "--out", str(out)])
    given, greedy = read(out)
    assert given["target_given"] and not greedy["target_given"]
    assert given["source_tokens_text"] == ["s1", "s2", "s3", "</s>"]
    assert given["target_tokens_text"] == ["</s>", "t3", "t2", "t1"]
    # The known answer: the core on the same ids with the same model.
    model = models.load_text_model(str(checkpoints / "checkpoint_last.pt"), None, "cpu", None,
                                   str(data))
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    source = torch.tensor(given["source_tokens"])
    _, log = rationalize_translation(FairseqTranslationModel(model.hub, len(source)), source,
                                     torch.tensor(given["target_tokens"]), model.decode_source,
                                     model.decode_target, "greedy", max_steps=1024)
    assert without_durations([given]) == without_durations([{**{
        k: given[k] for k in ("input_index", "text", "target", "target_given")}, **log}])
    # The greedy translation: at most 2 * 3 + 10 tokens (the source "s4 s5 </s>" has 3).
    assert greedy["target_tokens"][0] == given["target_tokens"][0]
    assert 1 <= len(greedy["rationalizations"]) <= 16
    assert summary["targets"] == 3 + len(greedy["rationalizations"])
    with pytest.raises(InputError, match=r"generating \(--generate\) is for language models"):
        rationalize.main(["--model", str(checkpoints), "--data", str(data), "--device", "cpu",
                          "--text", "s1 s2", "--generate", "2"])
    with pytest.raises((SystemExit, InputError), match="pass --data"):
        rationalize.main(["--model", str(checkpoints), "--device", "cpu", "--text", "s1"])
    with pytest.raises((SystemExit, InputError), match="--tokenizer is for Hugging Face models"):
        rationalize.main(["--model", str(checkpoints), "--data", str(data), "--tokenizer",
                          str(data), "--device", "cpu", "--text", "s1"])
    # A given target with words the target dictionary lacks would silently become <unk>.
    unknown = tmp_path / "unknown.jsonl"
    unknown.write_text(json.dumps({"source": "s1 s2", "target": "t2 zebra t1 quux"}) + "\n")
    out = tmp_path / "unknown-out.jsonl"
    with pytest.raises(InputError, match=r"input 0: the target has 2 piece\(s\) outside the "
                                         r"model's target dictionary \('zebra', 'quux'\)"):
        rationalize.main(["--model", str(checkpoints), "--data", str(data), "--device", "cpu",
                          "--input", str(unknown), "--out", str(out)])
    assert not out.exists()


def test_seed_and_max_subsets_reach_the_methods(lm_dir, lm, tmp_path):
    text = " ".join(WORDS)
    ids = torch.tensor(lm.tokenizer(text)["input_ids"])
    core = {}
    for seed in (0, 3):
        out = tmp_path / f"random{seed}.jsonl"
        run(lm_dir, "--text", text, "--out", str(out), "--method", "random", "--seed", str(seed))
        _, log = rationalize_sequence(HuggingFaceCausalLM(lm.model), ids, lm.decode, "random",
                                      0, seed=seed)
        core[seed] = [t["rationale"] for t in log["rationalization"]]
        assert [t["rationale"] for t in read(out)[0]["rationalization"]] == core[seed]
    assert core[0] != core[3]  # so the flag, not chance, made the records equal the core's

    def settings(name):
        return json.loads((tmp_path / f"{name}.provenance.json").read_text())["settings"]

    assert settings("random3")["seed"] == 3
    assert "seed" not in settings("random0")  # as files written before --seed existed
    with pytest.raises(InputError, match="was written by"):
        run(lm_dir, "--text", text, "--out", str(tmp_path / "random0.jsonl"), "--method",
            "random", "--seed", "3")
    with pytest.raises(ValueError, match="more than max_subsets=10; .*--max-subsets"):
        run(lm_dir, "--text", text, "--method", "exhaustive", "--max-subsets", "10")


def test_a_hub_model_id_is_read_from_the_cache(lm_dir, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    snapshot = hub_snapshot(tmp_path / "cache", "someone/tiny-lm", lm_dir)
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    out = tmp_path / "hub.jsonl"
    rationalize.main(["--model", "someone/tiny-lm", "--device", "cpu", "--text", TEXTS[0],
                      "--out", str(out), "--max-steps", "4"])
    direct = tmp_path / "direct.jsonl"
    run(lm_dir, "--text", TEXTS[0], "--out", str(direct), "--max-steps", "4")
    assert without_durations(read(out)) == without_durations(read(direct))
    provenance = json.loads((tmp_path / "hub.provenance.json").read_text())
    assert Path(provenance["model"]["path"]) == snapshot.resolve()
    assert len(sr.load("someone/tiny-lm", device="cpu").rationalize(TEXTS[0])) == 1
    # Not cached and no Hub to download from: one sentence that says what to do.
    with pytest.raises(InputError, match="neither a local folder nor in the Hugging Face "
                                         "cache.*hf download someone/absent"):
        rationalize.main(["--model", "someone/absent", "--text", "a b"])
    # A snapshot without safetensors weights (only PyTorch .bin files) is refused.
    bare = hub_snapshot(tmp_path / "cache2", "someone/bare", lm_dir)
    for weights in bare.glob("*.safetensors"):
        weights.unlink()
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "cache2"))
    with pytest.raises(InputError, match="no config.json with safetensors weights"):
        sr.load("someone/bare")
    # A path that cannot be a Hub id stays a missing path.
    with pytest.raises(InputError, match="does not exist"):
        sr.load("./someone/absent")


def test_precision_is_recorded_and_exact_precisions_resume_each_other(lm_dir, tmp_path):
    screened, exact = tmp_path / "screened.jsonl", tmp_path / "exact.jsonl"
    run(lm_dir, "--text", *TEXTS[:2], "--out", str(screened), "--precision", "bf16-exact")
    run(lm_dir, "--text", *TEXTS[:2], "--out", str(exact), "--precision", "fp32")
    records = read(screened)
    assert {r["precision"] for r in records} == {"bf16-exact"}
    assert all(0 < r["screening"]["rescored"] <= r["screening"]["rows"] for r in records)
    assert {r["precision"] for r in read(exact)} == {"fp32"}

    def rationales(rs):
        return [r["rationalization"] for r in rs]

    assert rationales(records) == rationales(read(exact))
    # The exact precisions give the same results: a run may go on in another one ...
    summary = run(lm_dir, "--text", *TEXTS, "--out", str(screened), "--precision", "fp32")
    assert summary["written"] == 1 and summary["records"] == 3
    # ... but not in plain bfloat16, whose results differ.
    with pytest.raises(InputError, match="was written by .*precision"):
        run(lm_dir, "--text", *TEXTS, "--out", str(exact), "--precision", "bf16")
