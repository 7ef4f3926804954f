"""Models spread by accelerate's ``device_map`` (weights on several devices, or offloaded to
disk and loaded as each layer runs): inputs go to the execution device of the embeddings, the
scores are reduced where the logits come out, and every method gives the rationales of the same
model loaded whole. On a CPU machine the split is between the CPU and the disk."""

from __future__ import annotations

import pytest

import sequential_rationales as sr
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

from .test_rationalize_cli import save_tiny_lm

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

TEXT = "the cat sat on a mat and the dog ran"
METHODS = ["greedy", "exhaustive", "gradient_norm", "signed_gradient", "integrated_gradient",
           "last_attention", "all_attention", "attention_rollout", "occlusion", "iba", "random"]
SPLITS = {  # GPT-2's modules (its head shares the token embeddings, so it goes with them)
    "embeddings in memory": {"transformer.wte": "cpu", "transformer.wpe": "cpu",
                             "transformer.h.0": "cpu", "transformer.h.1": "disk",
                             "transformer.ln_f": "disk", "lm_head": "cpu"},
    "embeddings on disk": {"transformer.wte": "disk", "transformer.wpe": "disk",
                           "transformer.h.0": "disk", "transformer.h.1": "cpu",
                           "transformer.ln_f": "cpu", "lm_head": "disk"},
}


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="module")
def whole(lm_dir):
    return sr.load(lm_dir, device="cpu")


@pytest.fixture(scope="module", params=list(SPLITS))
def split(request, lm_dir, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        lm_dir, device_map=SPLITS[request.param],
        offload_folder=str(tmp_path_factory.mktemp("offload")))
    assert {p.device.type for p in model.parameters()} == {"cpu", "meta"}  # really offloaded
    return sr.load(model, str(lm_dir))


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_the_whole_models_rationales(whole, split, method):
    assert HuggingFaceCausalLM(split.text_model.model).device.type == "cpu"
    expected = whole.rationalize(TEXT, method=method, max_steps=4)
    got = split.rationalize(TEXT, method=method, max_steps=4)
    assert got[0]["all_rationales"] == expected[0]["all_rationales"]


def test_lrp_refuses_offloaded_weights_in_one_sentence(split):
    with pytest.raises(sr.InputError, match="LRP reads GPT2LMHeadModel's weights as its layers "
                                            "run, but some are offloaded"):
        split.rationalize(TEXT, method="lrp")


def test_load_and_the_command_take_a_device_map(lm_dir, whole, tmp_path):
    mapped = sr.load(lm_dir, device_map="auto")
    assert mapped.rationalize(TEXT)[0]["all_rationales"] == whole.rationalize(TEXT)[0][
        "all_rationales"]
    from sequential_rationales_integrations import rationalize_cli

    summary = rationalize_cli.main(["--model", str(lm_dir), "--device-map", "auto", "--text",
                                    TEXT])
    assert summary["targets"] == len(whole.rationalize(TEXT)[0]["rationalization"])
