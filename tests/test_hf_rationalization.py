"""The seed-compatible Hugging Face functions: signatures, returns, logs, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from huggingface.rationalization import (
    baseline_rationalize_lm,
    exhaustive_rationalize_lm,
    rationalize_lm,
)
from sequential_rationales import list_methods, read_jsonl, write_jsonl

from .conftest import VOCAB


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


IDS = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]) % VOCAB


def test_rationalize_lm_returns_seed_structures(tiny_gpt2, capsys):
    rationales, log = rationalize_lm(tiny_gpt2, IDS, CharTokenizer(), verbose=True, start_step=2)
    assert len(rationales) == len(IDS) - 3
    for i, r in enumerate(rationales):
        assert r[0] == 2 + i  # previous position of target start_step + i + 1
        assert len(set(r)) == len(r)
    assert set(log) >= {"input_ids", "input_text", "rationalization", "all_rationales",
                        "duration"}
    assert log["all_rationales"] == rationales
    entry = log["rationalization"][0]
    assert entry["target_position"] == 3
    assert entry["goal_word"] == CharTokenizer().decode([int(IDS[3])])
    assert entry["rationale"] == rationales[0]
    step = entry["log"][0]
    assert set(step) == {"rationale_size", "added_token_position", "added_token_text",
                         "prediction", "prediction_prob", "true_token_prob"}
    assert step["added_token_position"] == 2 and step["rationale_size"] == 1
    json.loads(json.dumps(log))  # JSON-serializable
    assert "method: greedy" in capsys.readouterr().out


def test_baselines_and_exhaustive_share_the_log_format(tiny_llama):
    for method in ["gradient_norm", "signed_gradient", "integrated_gradient",
                   "attention_rollout", "last_attention", "all_attention"]:
        rationales, log = baseline_rationalize_lm(tiny_llama, IDS[:6], CharTokenizer(), method,
                                                  verbose=False, integrated_gradient_steps=10)
        assert len(rationales) == 5 and log["method"] == method
        json.dumps(log)
    rationales, log = exhaustive_rationalize_lm(tiny_llama, IDS[:6], CharTokenizer(),
                                                verbose=False, max_steps=3)
    assert all(len(r) <= 3 for r in rationales)
    json.dumps(log)


def test_model_mode_is_restored(tiny_gpt2):
    tiny_gpt2.train()
    try:
        rationalize_lm(tiny_gpt2, IDS[:4], CharTokenizer(), verbose=False)
        assert tiny_gpt2.training
    finally:
        tiny_gpt2.eval()


def test_jsonl_roundtrip_survives_a_truncated_last_line(tiny_gpt2, tmp_path):
    _, log = rationalize_lm(tiny_gpt2, IDS[:5], CharTokenizer(), verbose=False)
    path = tmp_path / "out.jsonl"
    assert write_jsonl([log, log], path) == 2
    with open(path, "a") as f:
        f.write('{"input_ids": [1, 2')  # an interrupted write
    records = list(read_jsonl(path))
    assert records == [json.loads(json.dumps(log))] * 2


@pytest.mark.parametrize("ids, error, message", [
    (torch.tensor([], dtype=torch.long), ValueError, "0 token"),
    (torch.tensor([4]), ValueError, "1 token"),
    (torch.tensor([[1, 2, 3]]), ValueError, "1-D"),
    (torch.ones(2, 3, dtype=torch.long), ValueError, "1-D"),
    (torch.tensor([1.0, 2.0, 3.0]), TypeError, "integer"),
    (torch.tensor([1, 2, VOCAB]), ValueError, f"id {VOCAB}, outside the vocabulary"),
    (torch.tensor([1, -1, 2]), ValueError, "id -1"),
    (torch.zeros(33, dtype=torch.long), ValueError, "at most 32 positions"),
    ([1, 2, 3], TypeError, "torch.Tensor"),
])
def test_bad_input_ids_are_named(tiny_gpt2, ids, error, message):
    with pytest.raises(error, match=message):
        rationalize_lm(tiny_gpt2, ids, CharTokenizer(), verbose=False)


def test_bad_options_are_named(tiny_gpt2):
    tok = CharTokenizer()
    with pytest.raises(ValueError, match="start_step"):
        rationalize_lm(tiny_gpt2, IDS[:4], tok, start_step=3)
    with pytest.raises(ValueError, match="start_step"):
        rationalize_lm(tiny_gpt2, IDS[:4], tok, start_step=-1)
    with pytest.raises(ValueError, match="max_steps"):
        rationalize_lm(tiny_gpt2, IDS[:4], tok, max_steps=0)
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        rationalize_lm(tiny_gpt2, IDS[:4], tok, max_tokens_per_batch=0)
    with pytest.raises(ValueError, match="unknown baseline method 'bogus'"):
        baseline_rationalize_lm(tiny_gpt2, IDS[:4], tok, "bogus")


def test_list_methods_names_every_method():
    assert list_methods() == ["greedy", "exhaustive", "gradient_norm", "signed_gradient",
                              "integrated_gradient", "attention_rollout", "last_attention",
                              "all_attention", "signed_gradient_token",
                              "integrated_gradient_midpoint", "occlusion", "lrp", "iba",
                              "random", "amortized"]


def test_unknown_method_is_named(tiny_gpt2):
    from sequential_rationales import RationalizationProblem, rationalize
    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

    with pytest.raises(ValueError, match="unknown method 'nope'; choose one of: greedy"):
        rationalize(HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS), "nope")


def test_core_never_imports_a_framework():
    code = ("import sys, sequential_rationales, sequential_rationales.adapters.huggingface;"
            "bad = sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'fairseq'});"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendering_names_tokens_and_marks_rationales(tiny_gpt2):
    from sequential_rationales import RationalizationProblem, format_rationales, rationalize
    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
    from sequential_rationales.render import highlight_rationale

    assert highlight_rationale(["a", "b", "c", "d"], [2, 0], 3) == "[a] b [c]  ->  d"
    result = rationalize(HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS[:4]))
    text = format_rationales(result, lambda i: CharTokenizer().decode([i]))
    lines = text.splitlines()
    assert lines[1] == "target: " + " ".join(CharTokenizer().decode([int(i)]) for i in IDS[:4])
    assert len(lines) == 2 + 3  # header, target line, one line per rationalized token


def test_demo_runs_end_to_end(tmp_path):
    """The README's main job with tiny settings: data, training, rationales, summary."""
    from sequential_rationales_experiments.commands import demo

    summary = demo.main(["--out", str(tmp_path), "--steps", "20", "--train-sentences", "300",
                         "--rationalize", "3", "--batch-size", "16", "--parts", "hf"])["hf"]
    tmp_path = tmp_path / "hf"
    assert (tmp_path / "summary.json").exists()
    for name in ("compatible", "standard"):
        assert summary[name]["perplexity"] > 1.0
        logs = list(read_jsonl(tmp_path / f"{name}_label_rationales.jsonl"))
        assert len(logs) == 3
        assert all(log["rationalization"][0]["target_position"] == 18 for log in logs)
