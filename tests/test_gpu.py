"""The CUDA paths, run by ``make gpu-check`` on a machine with a GPU (``pytest -m cuda``); every
test here is skipped without CUDA, so CI never depends on one.

Greedy rationales on the GPU in float32 must equal the CPU's; bfloat16 must run; the fused flex
word-dropout kernel must give the dense mask's loss and gradients; a real out-of-memory must be
survived by halving the batch with the same rationales; and a sharded run must write what a
single process writes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import sequential_rationales as sr
from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

from .test_rationalize_cli import TEXTS, read, save_tiny_lm, without_durations

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {
    "gpt2": "n_layer=4,n_embd=128,n_head=4,n_positions=256,resid_pdrop=0,embd_pdrop=0,"
            "attn_pdrop=0",
    "llama": "num_hidden_layers=4,hidden_size=128,intermediate_size=256,num_attention_heads=4,"
             "num_key_value_heads=2,head_dim=32,max_position_embeddings=256",
}


def tiny(model_type: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type)
    config.update_from_string(CONFIGS[model_type] + ",vocab_size=1000")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).to(dtype).eval()


def generated(model: torch.nn.Module, length: int = 48) -> torch.Tensor:
    prompt = torch.randint(0, 1000, (1, 4), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                             max_new_tokens=length - 4, min_new_tokens=length - 4,
                             do_sample=False, pad_token_id=0)
    return out[0]


def rationales(model: torch.nn.Module, ids: torch.Tensor, **options) -> list[list[int]]:
    problem = RationalizationProblem(ids.cpu(), targets=list(range(4, len(ids))))
    result = rationalize(HuggingFaceCausalLM(model), problem, "greedy", progress=False,
                         **options)
    return [[c.position for c in r.rationale] for r in result.rationales]


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_greedy_on_the_gpu_equals_the_cpu_in_float32(model_type):
    model = tiny(model_type)
    ids = generated(model)
    on_cpu = rationales(model, ids)
    on_gpu = rationales(model.cuda(), ids)
    assert on_gpu == on_cpu


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_bf16_exact_on_the_gpu_gives_the_float32_rationales(model_type):
    model = tiny(model_type).cuda()
    ids = generated(model)
    assert rationales(model, ids, precision="bf16-exact") == rationales(model, ids,
                                                                        precision="fp32")


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_greedy_runs_in_bfloat16(model_type):
    model = tiny(model_type)
    ids = generated(model)
    full = rationales(model.cuda(), ids)
    half = rationales(model.to(torch.bfloat16), ids)
    assert len(half) == len(full) and all(r and r[0] == t - 1 for r, t in zip(
        half, range(4, len(ids)), strict=True))
    same = sum(a == b for a, b in zip(half, full, strict=True)) / len(full)
    print(f"bf16 rationales equal to fp32: {same:.0%} of {len(full)} targets")


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_flex_word_dropout_matches_the_dense_mask_forward_and_backward(model_type):
    from .test_hf_word_dropout import KEEP_KWARG, model_pair, paired_batches

    dense_model, flex_model = (m.cuda() for m in model_pair(model_type))
    dense, flex = paired_batches("inverse_length", None)
    dense = {k: v.cuda() for k, v in dense.items()}
    flex = {k: v.cuda() for k, v in flex.items()}
    loss_dense = dense_model.train()(**dense).loss
    loss_flex = flex_model.train()(**flex).loss  # the fused, compiled kernel on CUDA
    loss_dense.backward()
    loss_flex.backward()
    torch.testing.assert_close(loss_flex, loss_dense, rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(dense_model.named_parameters(), flex_model.parameters(),
                            strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4, msg=name)
    assert KEEP_KWARG in flex


def test_a_real_out_of_memory_halves_the_batch_with_the_same_rationales():
    model = tiny("gpt2").cuda()
    ids = generated(model)
    expected = rationales(model, ids, max_tokens_per_batch=512)
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(max(free - (160 << 20), 0), dtype=torch.uint8, device="cuda")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = rationales(model, ids, max_tokens_per_batch=1 << 22)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert got == expected
    assert any("out of memory" in str(w.message) for w in caught), "no out-of-memory happened"


def test_a_sharded_run_on_one_gpu_writes_what_one_process_writes(tmp_path):
    lm_dir = save_tiny_lm(tmp_path / "lm")
    single = sr.load(lm_dir, device="cuda").rationalize(TEXTS)
    out = tmp_path / "sharded.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                           "1", str(ROOT / "scripts" / "rationalize.py"), "--model",
                           str(lm_dir), "--device", "cuda", "--text", *TEXTS, "--out",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert without_durations(read(out)) == without_durations(single.records)
