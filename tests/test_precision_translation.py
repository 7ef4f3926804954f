"""``precision="bf16-exact"`` and ``"bf16"`` beyond causal LMs: fairseq language and translation
models and Hugging Face encoder-decoders get a bfloat16 twin, screening with it keeps float32
search's rationales, and the twin runs in bfloat16 throughout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sequential_rationales import RationalizationProblem, greedy_search
from sequential_rationales.search import build_batch

from .fairseq_helpers import random_tokens
from .test_precision import positions, probabilities, same_rationales

KINDS = ["fairseq_lm", "fairseq_translation", "marian", "bart", "t5"]


def fairseq_lm(seed: int):
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel

    from .fairseq_helpers import tiny_lm

    model, _, _ = tiny_lm(seed=seed)  # sinusoidal positions: a buffer, not a parameter
    ids = random_tokens(1, 10, torch.Generator().manual_seed(seed))[0]
    ids = torch.cat([torch.tensor([model.decoder.dictionary.eos()]), ids])
    return FairseqLanguageModel(model), RationalizationProblem(ids)


def fairseq_translation(seed: int):
    pytest.importorskip("fairseq")
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    from .fairseq_helpers import tiny_translation

    model, _, _ = tiny_translation(learned_pos=seed % 2 == 1, seed=seed)
    eos = torch.tensor([model.decoder.dictionary.eos()])
    gen = torch.Generator().manual_seed(seed)
    src = torch.cat([random_tokens(1, 6, gen)[0], eos])
    tgt = torch.cat([eos, random_tokens(1, 6, gen)[0]])
    return FairseqTranslationModel(model, len(src)), RationalizationProblem(tgt, src[:-1])


def hf_seq2seq(family: str, seed: int):
    transformers = pytest.importorskip("transformers")
    from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

    from .test_hf_seq2seq import sentence_pair, tiny_model

    if family == "t5":  # relative positions; the decoder starts with the pad id
        torch.manual_seed(seed)
        config = transformers.T5Config(vocab_size=20, d_model=16, d_kv=8, d_ff=32,
                                       num_layers=2, num_heads=2, dropout_rate=0.0,
                                       pad_token_id=0, eos_token_id=1,
                                       decoder_start_token_id=0)
        model = transformers.T5ForConditionalGeneration(config).eval()
        gen = torch.Generator().manual_seed(seed)
        src = torch.cat([torch.randint(2, 20, (6,), generator=gen), torch.tensor([1])])
        tgt = torch.cat([torch.tensor([0]), torch.randint(2, 20, (6,), generator=gen)])
    else:
        model = tiny_model(family, seed=seed)
        src, tgt = sentence_pair(model, seed, source_len=6, target_len=6)
    return HuggingFaceSeq2Seq(model, len(src)), RationalizationProblem(tgt, src[:-1])


def build(kind: str, seed: int):
    if kind.startswith("fairseq"):
        return {"fairseq_lm": fairseq_lm, "fairseq_translation": fairseq_translation}[kind](seed)
    return hf_seq2seq(kind, seed)


def output_dtypes(model: nn.Module, run) -> set[torch.dtype]:
    """The dtypes of every floating-point tensor that a module of ``model`` returns in ``run``."""
    seen: set[torch.dtype] = set()

    def record(_module, _args, output):
        for value in output if isinstance(output, tuple) else (output,):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                seen.add(value.dtype)

    handles = [m.register_forward_hook(record) for m in model.modules()]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bf16_exact_gives_the_float32_rationales(kind, seed):
    adapter, problem = build(kind, seed)
    same_rationales(greedy_search(adapter, problem, precision="bf16-exact"),
                    greedy_search(adapter, problem, precision="fp32"))


@pytest.mark.parametrize("kind", KINDS)
def test_plain_bf16_runs_on_a_bfloat16_twin_made_once(kind):
    adapter, problem = build(kind, 0)
    assert adapter.dtype == torch.float32 and adapter.with_dtype(torch.float32) is adapter
    twin = adapter.with_dtype(torch.bfloat16)
    assert twin.dtype == torch.bfloat16
    assert {p.dtype for p in twin.model.parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in adapter.model.parameters())  # a copy
    plain = greedy_search(adapter, problem, precision="bf16")
    assert adapter.with_dtype(torch.bfloat16) is twin  # kept, not made again
    on_twin = greedy_search(twin, problem)
    assert positions(plain) == positions(on_twin)
    assert probabilities(plain) == probabilities(on_twin)
    # Its scores are bfloat16's: the first step (the previous token alone) differs from float32.
    first = [r.steps[0].true_token_prob for r in greedy_search(adapter, problem)]
    assert [r.steps[0].true_token_prob for r in plain] != pytest.approx(first, rel=1e-4)
    # Nothing inside upcasts (a float32 positional table or mask would make float32 states).
    batch = build_batch(problem, [tuple(range(problem.context_size(t)))
                                  for t in problem.targets])
    goals = torch.tensor([problem.goal(t) for t in problem.targets])
    with torch.no_grad():
        assert output_dtypes(twin.model, lambda: twin.score(batch, goals)) == {torch.bfloat16}


@pytest.mark.parametrize("kind", ["fairseq_translation", "marian"])
def test_adapters_of_one_model_share_its_copy(kind):
    """Translation makes an adapter per sentence: the model is copied once, not per sentence."""
    adapter, _ = build(kind, 0)
    other = type(adapter)(adapter.model, adapter.source_length + 2)
    twin, other_twin = adapter.with_dtype(torch.bfloat16), other.with_dtype(torch.bfloat16)
    assert other_twin is not twin and other_twin.model is twin.model
    assert other_twin.source_length == other.source_length
