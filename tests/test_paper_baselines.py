"""The gradient baselines as the paper's code defined them, against plain re-implementations.

The paper's Hugging Face code multiplies the gradient by token + position embedding (signed
gradient) and averages 101 evenly spaced path points, ends included (integrated gradients);
its fairseq code multiplies by the first layer's input and averages 51 points. This package's
former definitions (token embedding, midpoint rule) stay available as named options.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from sequential_rationales import Embeddings, RationalizationProblem
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.baselines import (
    BASELINE_SCORERS,
    integrated_gradient_scores,
    path_alphas,
    signed_gradient_scores,
)
from sequential_rationales.search import build_batch

from . import fairseq_helpers
from .conftest import VOCAB

IDS = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6, 5, 3]) % VOCAB


def close(a, b, atol=1e-5):
    assert a.shape == b.shape
    assert torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-4), (a, b)


# -- plain Hugging Face re-implementations (the paper's huggingface/rationalization.py) ----------

def gpt2_path_gradient(model, ids, t, alphas):
    """Mean over ``alphas`` of d log p(ids[t]) / d(alpha e) for the prefix ``ids[:t]``."""
    e = model.transformer.wte(ids[:t]).detach()
    path = (alphas[:, None, None] * e).requires_grad_(True)
    lp = model(inputs_embeds=path).logits[:, -1].log_softmax(-1)[:, ids[t]]
    return torch.autograd.grad(lp.sum(), path)[0].mean(0), e


def gpt2_signed_gradient(model, ids, t):
    grad, e = gpt2_path_gradient(model, ids, t, torch.ones(1))
    x = e + model.transformer.wpe(torch.arange(t))
    return (grad * x).sum(-1)


def gpt2_integrated_gradient(model, ids, t, steps=100):
    alphas = torch.tensor([i / steps for i in range(steps + 1)])
    grad, e = gpt2_path_gradient(model, ids, t, alphas)
    return (grad * e).sum(-1)


def test_endpoint_and_midpoint_alphas():
    assert path_alphas(4, "endpoints").tolist() == [0, 0.25, 0.5, 0.75, 1]
    assert path_alphas(4, "midpoint").tolist() == [0.125, 0.375, 0.625, 0.875]
    with pytest.raises(ValueError, match="unknown integration rule"):
        path_alphas(4, "trapezoid")


def test_gpt2_signed_gradient_is_gradient_times_token_plus_position(tiny_gpt2):
    adapter, problem = HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS)
    scores = signed_gradient_scores(adapter, problem, problem.targets)
    token = BASELINE_SCORERS["signed_gradient_token"](adapter, problem, problem.targets)
    differs = False
    for t in problem.targets:
        close(scores[t], gpt2_signed_gradient(tiny_gpt2, IDS, t))
        grad, e = gpt2_path_gradient(tiny_gpt2, IDS, t, torch.ones(1))
        close(token[t], (grad * e).sum(-1))
        differs |= not torch.allclose(scores[t], token[t], atol=1e-4)
    assert differs  # the two definitions are really different here


def test_gpt2_integrated_gradient_averages_101_endpoint_points(tiny_gpt2):
    adapter, problem = HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS)
    targets = [2, 5, 9]
    scores = integrated_gradient_scores(adapter, problem, targets)
    for t in targets:
        close(scores[t], gpt2_integrated_gradient(tiny_gpt2, IDS, t))
    # An explicit step count overrides the adapter's default.
    scores = integrated_gradient_scores(adapter, problem, [5], steps=20)
    close(scores[5], gpt2_integrated_gradient(tiny_gpt2, IDS, 5, steps=20))


def test_gpt2_midpoint_option_is_the_former_definition(tiny_gpt2):
    adapter, problem = HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS)
    scores = BASELINE_SCORERS["integrated_gradient_midpoint"](adapter, problem, [4, 7])
    for t in (4, 7):
        grad, e = gpt2_path_gradient(tiny_gpt2, IDS, t, (torch.arange(100) + 0.5) / 100)
        close(scores[t], (grad * e).sum(-1))
        explicit = integrated_gradient_scores(adapter, problem, [t], steps=100, rule="midpoint")
        close(scores[t], explicit[t])


def completeness_gap(adapter, problem, t):
    batch = build_batch(problem, [tuple(range(problem.context_size(t)))])
    with torch.no_grad():
        emb = adapter.embed(batch)
        zero = Embeddings(torch.zeros_like(emb.target),
                          None if emb.source is None else torch.zeros_like(emb.source))
        goal = problem.goal(t)
        return float(adapter.log_probs(batch)[0, goal] - adapter.log_probs(batch, zero)[0, goal])


def test_gpt2_completeness_both_rules(tiny_gpt2):
    """Both rules approximate f(x) - f(0); endpoints only to O(1/steps)."""
    adapter, problem = HuggingFaceCausalLM(tiny_gpt2), RationalizationProblem(IDS)
    endpoints = integrated_gradient_scores(adapter, problem, [3, 8])
    midpoint = integrated_gradient_scores(adapter, problem, [3, 8], steps=400, rule="midpoint")
    for t in (3, 8):
        gap = completeness_gap(adapter, problem, t)
        assert abs(gap) > 1e-3
        assert float(midpoint[t].sum()) == pytest.approx(gap, abs=2e-3, rel=1e-3)
        assert float(endpoints[t].sum()) == pytest.approx(gap, abs=2e-2, rel=2e-2)


def test_rotary_model_first_layer_input_is_the_token_embedding(tiny_llama):
    adapter, problem = HuggingFaceCausalLM(tiny_llama), RationalizationProblem(IDS)
    batch = build_batch(problem, [(0, 2, 5)])
    close(adapter.input_embedding(batch).target, adapter.embed(batch).target)
    scores = signed_gradient_scores(adapter, problem, [6])
    token = signed_gradient_scores(adapter, problem, [6], embedding="token")
    close(scores[6], token[6])


def test_adapter_without_defaults_keeps_the_former_definitions(toy_seq2seq):
    problem = RationalizationProblem(IDS[:5], IDS[3:])
    for name, former in [("signed_gradient", "signed_gradient_token"),
                         ("integrated_gradient", "integrated_gradient_midpoint")]:
        a = BASELINE_SCORERS[name](toy_seq2seq, problem, [2, 4])
        b = BASELINE_SCORERS[former](toy_seq2seq, problem, [2, 4])
        for t in (2, 4):
            close(a[t], b[t], atol=0)


# -- fairseq: plain computations over the plugin's models (the paper's fairseq code) -------------

needs_fairseq = pytest.mark.skipif(importlib.util.find_spec("fairseq") is None,
                                   reason="fairseq is not installed")


class FirstLayerInput:
    """Captures what leaves a module's embedding dropout (``first_layer_embedding`` of the paper's
    fairseq code) and keeps its gradient."""

    def __init__(self, module):
        self.value = None
        self.handle = module.dropout_module.register_forward_hook(self.keep)

    def keep(self, _module, _args, out):
        if self.value is None:
            out.retain_grad()
            self.value = out


def fairseq_lm_log_prob(model, ids, t, token_embeddings):
    """log p(ids[t]) after ``ids[:t]`` fed as ``token_embeddings`` ``[N, t, D]``."""
    tokens = ids[:t][None].expand(len(token_embeddings), -1)
    features, _ = model.decoder(tokens, token_embeddings=token_embeddings, features_only=True)
    return model.decoder.output_layer(features[:, -1]).log_softmax(-1)[:, ids[t]]


@needs_fairseq
@pytest.mark.parametrize("learned_pos", [False, True])
def test_fairseq_lm_signed_gradient_is_first_layer_gradient_times_input(learned_pos):
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel

    model, _, _ = fairseq_helpers.tiny_lm(learned_pos=learned_pos, seed=4)
    eos = model.decoder.dictionary.eos()
    ids = torch.cat([torch.tensor([eos]), fairseq_helpers.random_tokens(
        1, 7, torch.Generator().manual_seed(1))[0]])
    adapter, problem = FairseqLanguageModel(model), RationalizationProblem(ids)
    scores = signed_gradient_scores(adapter, problem, problem.targets)
    for t in problem.targets:
        first = FirstLayerInput(model.decoder)
        features, _ = model.decoder(ids[:t][None], features_only=True)
        lp = model.decoder.output_layer(features[:, -1]).log_softmax(-1)[0, ids[t]]
        lp.backward()
        first.handle.remove()
        x = first.value
        close(scores[t], (x.grad * x).sum(-1)[0].detach())


@needs_fairseq
def test_fairseq_lm_integrated_gradient_averages_51_points_times_first_layer_input():
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel

    model, _, _ = fairseq_helpers.tiny_lm(seed=5)
    dec = model.decoder
    ids = torch.cat([torch.tensor([dec.dictionary.eos()]), fairseq_helpers.random_tokens(
        1, 6, torch.Generator().manual_seed(2))[0]])
    adapter, problem = FairseqLanguageModel(model), RationalizationProblem(ids)
    scores = integrated_gradient_scores(adapter, problem, [3, 6])
    for t in (3, 6):
        e = dec.embed_tokens(ids[:t]).detach()
        path = torch.stack([e * i / 50 for i in range(51)]).requires_grad_(True)
        grad = torch.autograd.grad(fairseq_lm_log_prob(model, ids, t, path).sum(), path)[0]
        x = dec.embed_scale * e + dec.embed_positions(ids[:t][None])[0]
        close(scores[t], (grad.mean(0) * x).sum(-1), atol=1e-4)


@needs_fairseq
def test_fairseq_translation_baselines_against_plain_computation():
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    model, _, _ = fairseq_helpers.tiny_translation(seed=6)
    enc, dec = model.encoder, model.decoder
    eos = dec.dictionary.eos()
    gen = torch.Generator().manual_seed(3)
    src = torch.cat([fairseq_helpers.random_tokens(1, 5, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), fairseq_helpers.random_tokens(1, 4, gen)[0]])
    adapter = FairseqTranslationModel(model, source_length=len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    t = 3
    real = slice(0, len(src) - 1)  # the always-visible source </s> is not scored

    def log_prob(src_emb, tgt_emb):
        n = len(tgt_emb)
        out = enc(src[None].expand(n, -1), src_lengths=torch.full((n,), len(src)),
                  token_embeddings=src_emb)
        features, _ = dec(tgt[:t][None].expand(n, -1), encoder_out=out,
                          token_embeddings=tgt_emb, features_only=True)
        return dec.output_layer(features[:, -1]).log_softmax(-1)[:, tgt[t]]

    # Signed gradient: d/dx . x on each stream's first-layer input.
    first_src, first_tgt = FirstLayerInput(enc), FirstLayerInput(dec)
    log_prob(enc.embed_tokens(src)[None], dec.embed_tokens(tgt[:t])[None]).sum().backward()
    first_src.handle.remove()
    first_tgt.handle.remove()
    expected = torch.cat([(v.grad * v).sum(-1)[0, sl].detach() for v, sl in
                          ((first_src.value, real), (first_tgt.value, slice(None)))])
    close(signed_gradient_scores(adapter, problem, [t])[t], expected)

    # Integrated gradients: 51 points from zero token embeddings (</s> kept), times x.
    e_src, e_tgt = enc.embed_tokens(src).detach(), dec.embed_tokens(tgt[:t]).detach()
    alphas = torch.arange(51.0)[:, None, None] / 50
    keep_eos = torch.zeros(len(src), 1)
    keep_eos[-1] = 1
    path_src = (e_src * (keep_eos + (1 - keep_eos) * alphas)).requires_grad_(True)
    path_tgt = (e_tgt * alphas).requires_grad_(True)
    g_src, g_tgt = torch.autograd.grad(log_prob(path_src, path_tgt).sum(), (path_src, path_tgt))
    x_src = enc.embed_scale * e_src + enc.embed_positions(src[None])[0]
    x_tgt = dec.embed_scale * e_tgt + dec.embed_positions(tgt[:t][None])[0]
    expected = torch.cat([(g_src.mean(0) * x_src).sum(-1)[real],
                          (g_tgt.mean(0) * x_tgt).sum(-1)])
    close(integrated_gradient_scores(adapter, problem, [t])[t], expected, atol=1e-4)


@needs_fairseq
def test_fairseq_translation_midpoint_option_keeps_completeness():
    """The former definition (midpoint rule, token embedding) on the fairseq adapter."""
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel

    model, _, _ = fairseq_helpers.tiny_translation(seed=7)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(3)
    src = torch.cat([fairseq_helpers.random_tokens(1, 5, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), fairseq_helpers.random_tokens(1, 4, gen)[0]])
    adapter = FairseqTranslationModel(model, source_length=len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    scores = BASELINE_SCORERS["integrated_gradient_midpoint"](adapter, problem, [3], steps=300)
    gap = completeness_gap(adapter, problem, 3)
    assert abs(gap) > 1e-3
    assert float(scores[3].sum()) == pytest.approx(gap, abs=2e-3, rel=1e-3)


@needs_fairseq
def test_fairseq_layernorm_embedding_is_refused_for_first_layer_input():
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel

    model, _, _ = fairseq_helpers.tiny_lm(seed=4)
    model.decoder.layernorm_embedding = torch.nn.LayerNorm(16)
    adapter, problem = FairseqLanguageModel(model), RationalizationProblem(IDS % 8 + 4)
    with pytest.raises(ValueError, match="layernorm_embedding"):
        signed_gradient_scores(adapter, problem, [3])
    signed_gradient_scores(adapter, problem, [3], embedding="token")  # still available


def test_gpt2_masked_fallback_gives_the_same_signed_gradient(tiny_gpt2):
    problem = RationalizationProblem(IDS)
    sparse = signed_gradient_scores(HuggingFaceCausalLM(tiny_gpt2, use_position_ids=True),
                                    problem, problem.targets)
    masked = signed_gradient_scores(HuggingFaceCausalLM(tiny_gpt2, use_position_ids=False),
                                    problem, problem.targets)
    for t in problem.targets:
        close(sparse[t], masked[t])
