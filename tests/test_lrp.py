"""The ``lrp`` ordering: each rule in isolation, conservation of the explained logit (exact for
the conservative variant with zero biases; for AttnLRP exact once the softmax rule's leak is
counted), unchanged outputs and removed hooks, a hand-set model whose prediction depends on
one known token, and runs through ``rationalize`` and the seed functions of Hugging Face and
fairseq; the same checks on tiny random models of more decoder-only families (GPT-NeoX, Gemma 1
to 3, Phi-3, OLMo 1 and 2, Qwen2 and 3, Mistral, Falcon's three q/k/v layouts, Persimmon,
Cohere, CodeGen), and one-sentence refusals of the families without rules."""

from __future__ import annotations

import copy
import inspect
import json
import sys

import pytest
import torch
from torch import nn

from sequential_rationales import (
    BASELINE_METHODS,
    Embeddings,
    RationalizationProblem,
    rationalize,
)
from sequential_rationales.adapters.fairseq import FairseqLanguageModel, FairseqTranslationModel
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq
from sequential_rationales.baselines import importance_order, signed_gradient_token_scores
from sequential_rationales.lrp import identity_rule, lrp_rules, lrp_scores, scale_gradient
from sequential_rationales.search import build_batch

from .conftest import VOCAB
from .fairseq_helpers import REPO_ROOT, random_tokens, tiny_lm, tiny_translation

IDS = torch.tensor([3, 7, 1, 9, 4, 4, 2, 8])


def float64_without_biases(model: nn.Module) -> nn.Module:
    """A float64 copy with every bias zero: biases absorb relevance, so only then does the
    input relevance add up to the logit."""
    model = copy.deepcopy(model).double()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.zero_()
    return model


def full_rows(problem: RationalizationProblem):
    return build_batch(problem, [tuple(range(problem.context_size(t))) for t in problem.targets])


def goal_logits(adapter, problem) -> torch.Tensor:
    with torch.no_grad():
        logits = adapter.logits(full_rows(problem))
    return logits.gather(1, torch.tensor([problem.goal(t) for t in problem.targets])[:, None])[:, 0]


def relevance_sums(adapter, problem, variant: str) -> torch.Tensor:
    scores = lrp_scores(adapter, problem, problem.targets, variant=variant)
    return torch.stack([scores[t].sum() for t in problem.targets])


def all_hooks(model: nn.Module) -> list:
    return [(name, list(m._forward_hooks), list(m._forward_pre_hooks))
            for name, m in model.named_modules()]


def fairseq_lm_problem(activation: str = "relu"):
    model, _, _ = tiny_lm(seed=6, activation_fn=activation)
    eos = model.decoder.dictionary.eos()
    ids = torch.cat([torch.tensor([eos]), random_tokens(1, 6, torch.Generator().manual_seed(0))[0]])
    return model, RationalizationProblem(ids)


@pytest.fixture(scope="module")
def models(tiny_gpt2, tiny_llama):
    """name -> (adapter of a float64 model without biases, problem)."""
    fairseq_relu, problem = fairseq_lm_problem("relu")
    fairseq_gelu, _ = fairseq_lm_problem("gelu")
    hf = RationalizationProblem(IDS)
    return {
        "gpt2": (HuggingFaceCausalLM(float64_without_biases(tiny_gpt2)), hf),
        "llama": (HuggingFaceCausalLM(float64_without_biases(tiny_llama)), hf),
        "fairseq_relu": (FairseqLanguageModel(float64_without_biases(fairseq_relu)), problem),
        "fairseq_gelu": (FairseqLanguageModel(float64_without_biases(fairseq_gelu)), problem),
    }


# -- each rule alone ----------------------------------------------------------------------------
def test_value_preserving_gradient_scaling():
    y = torch.randn(5, dtype=torch.float64, requires_grad=True)
    for scale in [0.25, 0.5, 1.0]:
        out = scale_gradient(y, scale)
        assert torch.equal(out, y)  # bit for bit
        (grad,) = torch.autograd.grad(out.sum(), y)
        assert torch.equal(grad, torch.full_like(y, scale))
    assert not scale_gradient(y, 0.0).requires_grad


def test_identity_rule_keeps_the_value_and_conserves():
    x = torch.tensor([-2.0, -1e-3, 0.0, 1e-300, 0.5, 3.0], dtype=torch.float64,
                     requires_grad=True)
    y = torch.nn.functional.gelu(x)
    out = identity_rule(x, y)
    assert torch.equal(out, y)
    (grad,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(grad).all()
    # relevance x * grad is exactly f(x) (0 at x = 0); the plain gradient would not conserve
    torch.testing.assert_close(x * grad, y.detach(), rtol=1e-15, atol=1e-300)
    assert grad[2] == 0


@pytest.mark.parametrize("which", ["gpt2_layernorm", "llama_rmsnorm"])
def test_normalizer_is_a_constant(which, tiny_gpt2, tiny_llama):
    """The rule's gradient is the normalization with the std (rms) held fixed; its value is
    the module's own output, bit for bit."""
    if which == "gpt2_layernorm":
        model = float64_without_biases(tiny_gpt2)
        norm = model.transformer.ln_f
        with torch.no_grad():
            norm.weight.normal_()
    else:
        model = copy.deepcopy(tiny_llama).double()
        norm = model.model.norm
        with torch.no_grad():
            norm.weight.normal_()
    x = torch.randn(3, 32, dtype=torch.float64) * 2 + 0.5
    c = torch.randn(3, 32, dtype=torch.float64)
    plain = norm(x)
    xg = x.clone().requires_grad_(True)
    with lrp_rules(model, "cp"):
        out = norm(xg)
        (grad,) = torch.autograd.grad((out * c).sum(), xg)
    assert torch.equal(out, plain)
    w = norm.weight.detach()
    if which == "gpt2_layernorm":
        std = (x.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
        expected = (c * w - (c * w).mean(-1, keepdim=True)) / std
    else:
        rms = (x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
        expected = c * w / rms
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-9)
    # zero bias: the relevance x . grad is the output's, exactly what LRP conserves
    torch.testing.assert_close((x * grad).sum(-1), (plain * c).sum(-1), rtol=1e-6, atol=1e-9)


def test_gated_mlp_uniform_rule_conserves(tiny_llama):
    """Llama's down_proj(act(gate x) * up x) is quadratic in x; the identity rule on the act
    and half the gradient into each factor of the product make x . grad its output."""
    model = float64_without_biases(tiny_llama)
    mlp = model.model.layers[0].mlp
    x = torch.randn(4, 32, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 32, dtype=torch.float64)
    with lrp_rules(model, "attnlrp") as applied:
        out = mlp(x)
        (grad,) = torch.autograd.grad((out * c).sum(), x)
    assert applied["product"] == 1 and applied["activation"] == 1
    torch.testing.assert_close((x * grad).sum(), (out * c).sum(), rtol=1e-12, atol=1e-12)
    (plain,) = torch.autograd.grad((mlp(x) * c).sum(), x)
    difference = (x * plain).sum() - (out * c).sum()
    assert abs(float(difference.detach())) > 1e-3  # the rules matter


# -- whole models ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gpt2", "llama", "fairseq_relu", "fairseq_gelu"])
def test_conservative_variant_conserves_the_logit(models, name):
    adapter, problem = models[name]
    logits = goal_logits(adapter, problem)
    sums = relevance_sums(adapter, problem, "cp")
    # Llama's RMSNorm computes in float32 whatever the model's dtype: 1e-7 rather than 1e-15.
    torch.testing.assert_close(sums, logits.double(), rtol=1e-6, atol=1e-9)
    attnlrp = relevance_sums(adapter, problem, "attnlrp")
    assert ((attnlrp - logits).abs() > 1e-3 * logits.abs()).any()  # the softmax rule leaks


def test_conservative_variant_conserves_through_t5():
    """An encoder-decoder without biases (T5: q/k/v attention with relative position bias,
    gated-GELU MLP, RMS layer norm): the relevance of source and target embeddings together
    is the logit (1e-7: T5LayerNorm computes in float32)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=20, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                   num_heads=2, feed_forward_proj="gated-gelu", pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0)
    model = transformers.T5ForConditionalGeneration(config).double().eval()
    embed = model.get_input_embeddings()
    source = embed(torch.tensor([[5, 9, 4, 12, 1]])).detach().requires_grad_(True)
    target = embed(torch.tensor([[0, 7, 3, 15]])).detach().requires_grad_(True)
    for variant, tolerance in [("cp", 1e-6), ("attnlrp", None)]:
        with torch.enable_grad(), lrp_rules(model, variant) as applied:
            logit = model(inputs_embeds=source, decoder_inputs_embeds=target).logits[0, -1, 6]
            grads = torch.autograd.grad(logit, [source, target])
        relevance = float((source.detach() * grads[0]).sum() + (target.detach() * grads[1]).sum())
        logit = logit.detach()
        assert applied["product"] == 4 and applied["attention"] == 3 * 6
        if tolerance is not None:
            assert abs(relevance - float(logit)) < tolerance * abs(float(logit))
        else:
            assert abs(relevance - float(logit)) > 1e-3 * abs(float(logit))


def softmax_leak(q, k, v, g_o, allowed) -> float:
    """What AttnLRP's softmax rule leaves out in one attention: the weights A = softmax(S)
    receive R_A = A * grad_A with grad_A = 1/2 grad_o V^T (uniform rule on A V), but only
    S * grad_S (gradient x input of the softmax) is passed on to q k^T. ``q``, ``k``, ``v``,
    ``g_o`` (the modified gradient at the attention output) are ``[heads, L, d]``; ``allowed``
    is ``[heads or 1, Lq, Lk]``."""
    q, k, v, g_o = (x.detach() for x in (q, k, v, g_o))
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    a = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    grad_a = 0.5 * g_o @ v.transpose(-1, -2)
    grad_s = a * (grad_a - (a * grad_a).sum(-1, keepdim=True))
    return float((a * grad_a).sum() - (scores * grad_s).masked_fill(~allowed, 0.0).sum())


def per_head(x, heads):
    """``[1, L, heads * d]`` (Hugging Face) -> ``[heads, L, d]``."""
    return x[0].unflatten(-1, (heads, -1)).transpose(0, 1)


def test_attnlrp_accounting_is_exact_on_gpt2(models):
    """AttnLRP's softmax rule is not conservative; the logit equals the input relevance plus
    the leak of every attention (:func:`softmax_leak`), recomputed from the layer's q, k, v
    and the modified gradient at its output."""
    adapter, problem = models["gpt2"]
    model = adapter.model
    t = problem.targets[-1]
    seen: dict[int, dict] = {}
    handles = []
    for i, block in enumerate(model.transformer.h):
        def keep_qkv(_m, _args, out, i=i):
            seen.setdefault(i, {})["qkv"] = out.detach()

        def keep_output(_m, args, i=i):
            args[0].register_hook(lambda g, i=i: seen[i].__setitem__("g", g))

        handles.append(block.attn.c_attn.register_forward_hook(keep_qkv))
        handles.append(block.attn.c_proj.register_forward_pre_hook(keep_output))
    try:
        relevance = lrp_scores(adapter, problem, [t], variant="attnlrp")[t].sum()
    finally:
        for h in handles:
            h.remove()
    heads = model.config.n_head
    causal = torch.ones(1, t, t, dtype=torch.bool).tril()
    leak = sum(softmax_leak(*(per_head(x, heads) for x in layer["qkv"].chunk(3, -1)),
                            per_head(layer["g"], heads), causal) for layer in seen.values())
    logit = float(goal_logits(adapter, RationalizationProblem(IDS, targets=[t]))[0])
    assert abs(relevance + leak - logit) < 1e-9 * abs(logit)
    assert abs(leak) > 1e-3 * abs(logit)  # the accounting is not trivially the CP one


class KeepAttention(torch.overrides.TorchFunctionMode):
    """Records what reaches ``F.multi_head_attention_forward`` (under the LRP rules: the
    projected q, k, v with identity projection weights) and the gradient at its output."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.nn.functional.multi_head_attention_forward:
            call = {"args": args, "kwargs": kwargs or {}}
            out[0].register_hook(lambda g: call.__setitem__("g", g))
            self.calls.append(call)
        return out


def test_attnlrp_accounting_is_exact_on_fairseq(models):
    """The same accounting through the plugin's attention (torch's multi-head attention
    function, reached through the function mode rather than module hooks)."""
    adapter, problem = models["fairseq_gelu"]
    t = problem.targets[-1]
    with KeepAttention() as keep:  # below the LRP rules' mode: it sees what they pass on
        relevance = lrp_scores(adapter, problem, [t], variant="attnlrp")[t].sum()
    leak = 0.0
    signature = inspect.signature(torch.nn.functional.multi_head_attention_forward)
    for call in keep.calls:
        bound = signature.bind(*call["args"], **call["kwargs"]).arguments
        query, key, value, heads = (bound[n] for n in ("query", "key", "value", "num_heads"))
        eye = torch.eye(query.shape[-1], dtype=query.dtype)
        assert torch.equal(bound["q_proj_weight"], eye)
        out_weight, blocked = bound["out_proj_weight"], bound["attn_mask"]

        def split(x, heads=heads):  # [L, 1, heads * d] -> [heads, L, d]
            return x[:, 0].unflatten(-1, (heads, -1)).transpose(0, 1)

        g_o = call["g"] @ out_weight  # through the output projection inside the function
        leak += softmax_leak(split(query), split(key), split(value), split(g_o),
                             ~blocked.view(-1, *blocked.shape[-2:]))
    logit = float(goal_logits(adapter, RationalizationProblem(problem.target_ids,
                                                              targets=[t]))[0])
    assert len(keep.calls) == 2  # one self-attention per layer
    assert abs(relevance + leak - logit) < 1e-9 * abs(logit)
    assert abs(leak) > 1e-3 * abs(logit)


def test_hooks_keep_outputs_and_are_removed(models):
    for name, (adapter, problem) in models.items():
        model = adapter.model
        batch = full_rows(problem)
        before = all_hooks(model)
        plain = adapter.logits(batch)
        for variant in ["attnlrp", "cp"]:
            with torch.enable_grad(), lrp_rules(model, variant) as applied:
                hooked = adapter.logits(batch)
            assert applied["attention"] > 0 and applied["norm"] > 0, name
            assert torch.equal(hooked, plain), name
            assert all_hooks(model) == before
        with pytest.raises(RuntimeError, match="inside"), lrp_rules(model):
            raise RuntimeError("inside")
        assert all_hooks(model) == before
        assert torch.equal(adapter.logits(batch), plain)


def test_batching_does_not_change_the_scores(models):
    adapter, problem = models["gpt2"]
    together = lrp_scores(adapter, problem, problem.targets)
    alone = lrp_scores(adapter, problem, problem.targets, max_tokens_per_batch=1)
    for t in problem.targets:
        torch.testing.assert_close(together[t], alone[t], rtol=1e-10, atol=1e-12)


# -- a known answer -------------------------------------------------------------------------------
KEY, KEY_POSITION = 7, 2


def copy_the_key_model(tiny_gpt2):
    """One layer of GPT-2 that copies token KEY: uniform attention (q = k = 0) with identity
    values and output, no MLP, no positions; KEY's embedding is large and orthogonal to the
    others (all of zero mean). The logit of KEY then comes from KEY alone, while plain
    gradient x input gives every non-previous token 0 (LayerNorm is scale-invariant)."""
    from transformers import GPT2LMHeadModel

    config = copy.deepcopy(tiny_gpt2.config)
    config.n_layer, config.n_embd, config.n_head = 1, 8, 1
    model = GPT2LMHeadModel(config).double().eval()
    dim = config.n_embd
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for norm in (model.transformer.h[0].ln_1, model.transformer.h[0].ln_2,
                     model.transformer.ln_f):
            norm.weight.fill_(1.0)
        others = torch.zeros(VOCAB, dim, dtype=torch.float64)
        others[:, 2:] = 0.1 * torch.randn(VOCAB, dim - 2, generator=gen, dtype=torch.float64)
        others[:, 2:] -= others[:, 2:].mean(-1, keepdim=True)
        model.transformer.wte.weight.copy_(others)
        model.transformer.wte.weight[KEY] = torch.tensor([100.0, -100.0] + [0.0] * (dim - 2))
        attn = model.transformer.h[0].attn
        attn.c_attn.weight[:, 2 * dim:] = torch.eye(dim)  # values: identity (q, k stay 0)
        attn.c_proj.weight.copy_(torch.eye(dim))
    return model


def test_the_one_token_the_prediction_depends_on_comes_first(tiny_gpt2):
    model = copy_the_key_model(tiny_gpt2)
    adapter = HuggingFaceCausalLM(model)
    ids = torch.tensor([3, 5, KEY, 1, 4, 9, KEY])
    t = len(ids) - 1
    problem = RationalizationProblem(ids, targets=[t])
    for variant in ["attnlrp", "cp"]:
        scores = lrp_scores(adapter, problem, [t], variant=variant)[t]
        assert scores[KEY_POSITION] > 0.1
        others = torch.cat([scores[:KEY_POSITION], scores[KEY_POSITION + 1:]])
        assert others.abs().max() < 1e-9
        assert importance_order(problem, t, scores)[:2] == [t - 1, KEY_POSITION]
    plain = signed_gradient_token_scores(adapter, problem, [t])[t]
    assert plain[KEY_POSITION].abs() < 1e-6  # what the normalization rule changes
    result = rationalize(adapter, problem, "lrp")
    (r,) = result.rationales
    assert r.target_rationale == [t - 1, KEY_POSITION] and r.reached_argmax


# -- refusals -------------------------------------------------------------------------------------
class PlainLM(nn.Module):
    """An adapter and model of plain torch modules: an embedding bag and a linear head."""

    is_conditional = False
    vocab_size, max_positions, device = VOCAB, None, torch.device("cpu")

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.head = nn.Linear(8, VOCAB)

    def embed(self, batch):
        return Embeddings(self.embedding(batch.target_ids))

    def logits(self, batch, embeddings=None):
        emb = (embeddings or self.embed(batch)).target
        return self.head(torch.tanh((emb * batch.target_mask[..., None]).sum(1)))

    def log_probs(self, batch, embeddings=None):
        return torch.log_softmax(self.logits(batch, embeddings), -1)


class FusedAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)


class HalvesRMSNorm(nn.Module):
    """An RMS norm of each half of the features on its own: two normalizers per row, which no
    normalization formula of the rule (one normalizer per row) reproduces."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = 1e-6

    def forward(self, x):
        halves = x.unflatten(-1, (2, -1))
        halves = halves * torch.rsqrt(halves.pow(2).mean(-1, keepdim=True) + self.eps)
        return halves.flatten(-2) * self.weight


def test_models_without_rules_are_refused(tiny_gpt2):
    problem = RationalizationProblem(IDS[:4])
    plain = PlainLM()
    with pytest.raises(ValueError, match="LRP has no rules for PlainLM: it has no attention"):
        rationalize(plain, problem, "lrp")
    plain.attention = FusedAttention()
    with pytest.raises(ValueError, match="attention FusedAttention .* has no q/k/v"):
        rationalize(plain, problem, "lrp")
    model = copy.deepcopy(tiny_gpt2)
    model.transformer.ln_f = HalvesRMSNorm(32)
    # Other tests share tiny_gpt2, and transformers installs its own output-capturing hooks.
    hooks_before = all_hooks(model)
    with pytest.raises(ValueError, match="normalization HalvesRMSNorm does not compute"):
        rationalize(HuggingFaceCausalLM(model), problem, "lrp")
    with pytest.raises(ValueError, match="unknown LRP variant"):
        lrp_scores(HuggingFaceCausalLM(tiny_gpt2), problem, [1], variant="bogus")
    assert all_hooks(model) == hooks_before


# -- end to end -----------------------------------------------------------------------------------
def check_rationales(result, problem, lrp):
    """Valid rationales that follow the order of the LRP scores."""
    assert [r.target_position for r in result.rationales] == list(problem.targets)
    for r in result.rationales:
        t = r.target_position
        codes = [c.position if c.stream == "source" else problem.num_source + c.position
                 for c in r.rationale]
        assert codes == importance_order(problem, t, lrp[t])[:len(codes)]
        assert codes[0] == problem.previous_code(t) and len(set(codes)) == len(codes)
        assert all(0 <= c < problem.context_size(t) for c in codes)


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_rationalize_causal_lms(name, tiny_gpt2, tiny_llama):
    adapter = HuggingFaceCausalLM(tiny_gpt2 if name == "gpt2" else tiny_llama)
    problem = RationalizationProblem(IDS[:6])
    result = rationalize(adapter, problem, "lrp", max_tokens_per_batch=8)
    assert result.method == "lrp"
    check_rationales(result, problem, lrp_scores(adapter, problem, problem.targets))


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_rationalize_hugging_face_translation(family):
    transformers = pytest.importorskip("transformers")
    common = dict(vocab_size=20, d_model=16, encoder_layers=1, decoder_layers=1,
                  encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                  decoder_ffn_dim=32, max_position_embeddings=64, pad_token_id=1,
                  eos_token_id=2, bos_token_id=0)
    torch.manual_seed(3)
    if family == "marian":
        model = transformers.MarianMTModel(transformers.MarianConfig(
            **common, decoder_start_token_id=1))
    else:
        model = transformers.BartForConditionalGeneration(transformers.BartConfig(
            **common, decoder_start_token_id=2))
    model = model.double().eval()
    src, tgt = torch.tensor([5, 9, 4, 12, 2]), torch.tensor([common["pad_token_id"]
                                                             if family == "marian" else 2,
                                                             7, 3, 15])
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    batch = full_rows(problem)
    plain = adapter.logits(batch)
    with torch.enable_grad(), lrp_rules(model) as applied:
        assert torch.equal(adapter.logits(batch), plain)
    assert applied["attention"] == 3 * 3  # encoder self, decoder self and cross: q, k, v
    result = rationalize(adapter, problem, "lrp")
    check_rationales(result, problem, lrp_scores(adapter, problem, problem.targets))

    if family == "bart":
        return
    sys.path.insert(0, str(REPO_ROOT))
    from huggingface.rationalization import baseline_rationalize_conditional_model

    class Tokenizer:
        def decode(self, ids):
            return " ".join(f"w{i}" for i in ids)

    sources, targets, log = baseline_rationalize_conditional_model(
        model, src, tgt, Tokenizer(), "lrp", verbose=False)
    assert log["method"] == "lrp" and [g[0] for g in targets] == [0, 1, 2]
    assert all(0 <= p < len(src) - 1 for s in sources for p in s)
    json.dumps(log)


def test_rationalize_fairseq_translation():
    model, _, _ = tiny_translation(seed=5)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(2)
    src = random_tokens(1, 4, gen)[0]
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 3, gen)[0]])
    adapter = FairseqTranslationModel(model, len(src) + 1)
    problem = RationalizationProblem(tgt, src)
    together = lrp_scores(adapter, problem, problem.targets)
    alone = lrp_scores(adapter, problem, problem.targets, max_tokens_per_batch=1)
    for t in problem.targets:  # padded rows in one batch, or one row at a time
        assert together[t].shape == (len(src) + t,)
        torch.testing.assert_close(together[t], alone[t], rtol=1e-4, atol=1e-6)
    check_rationales(rationalize(adapter, problem, "lrp"), problem, together)


class Hub:
    """The one attribute of a fairseq hub interface that the seed functions use."""

    def __init__(self, model):
        self.models = [model]


class CharTokenizer:
    def decode(self, ids):
        return "".join(chr(ord("a") + i) for i in ids)


def test_seed_functions_accept_lrp(tiny_gpt2):
    assert "lrp" in BASELINE_METHODS
    from huggingface.rationalization import baseline_rationalize_lm

    rationales, log = baseline_rationalize_lm(tiny_gpt2, IDS, CharTokenizer(), "lrp",
                                              verbose=False, start_step=2)
    assert log["method"] == "lrp" and [r[0] for r in rationales] == list(range(2, len(IDS) - 1))
    json.dumps(log)

    pytest.importorskip("fairseq")
    sys.path.insert(0, str(REPO_ROOT / "fairseq"))
    fairseq_rationalization = pytest.importorskip("rationalization")
    model, problem = fairseq_lm_problem()
    rationales, log = fairseq_rationalization.baseline_rationalize_lm(
        Hub(model), problem.target_ids, "lrp", verbose=False)
    assert [r[0] for r in rationales] == list(range(len(problem.target_ids) - 1))
    model, _, _ = tiny_translation(seed=5)
    gen = torch.Generator().manual_seed(2)
    src = torch.cat([random_tokens(1, 6, gen)[0], torch.tensor([model.encoder.dictionary.eos()])])
    tgt = torch.cat([torch.tensor([model.decoder.dictionary.eos()]), random_tokens(1, 3, gen)[0]])
    sources, targets, log = fairseq_rationalization.baseline_rationalize_conditional_model(
        Hub(model), src, tgt, "lrp", verbose=False)
    assert [g[0] for g in targets] == [0, 1, 2] and log["method"] == "lrp"
    assert all(0 <= p < len(src) - 1 for s in sources for p in s)


# -- more decoder-only families -------------------------------------------------------------------
FAMILY_IDS = torch.tensor([5, 17, 3, 42, 8, 8, 61, 12])
COUNTERS = ("attention", "norm", "activation", "product", "tanh")
SMALL = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=64, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
             eos_token_id=2)
GQA = dict(num_key_value_heads=2)
FALCON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=64, bos_token_id=1, eos_token_id=2)

#: family -> (config class, model class, config arguments, rules applied by one forward pass
#: (COUNTERS, tanh once for AttnLRP and once for CP-LRP, under which the attention scores carry
#: no gradient), whether the model computes in its own dtype throughout: float64 conservation
#: to 1e-10 (measured 1e-15); else its RMS / layer norms compute in float32 (measured up to
#: 1.5e-6 relative, tested to 1e-5; the softmax rule's leak is 1e-3 and more).
FAMILIES = {
    # fused q/k/v, interleaved per head; partial rotary; parallel residual
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", dict(SMALL, rotary_pct=0.5),
                 (2, 5, 2, 0, 0, 0), True),
    # RMS norm (1 + w), embedding scaled by sqrt(hidden), gated MLP
    "gemma": ("GemmaConfig", "GemmaForCausalLM", dict(SMALL, **GQA, head_dim=8),
              (6, 5, 2, 2, 0, 0), False),
    # + tanh softcapping of attention scores (2 layers) and of the final logits
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM", dict(SMALL, **GQA, head_dim=8),
               (6, 9, 2, 2, 3, 1), False),
    # + q/k norms, sliding-window layers
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", dict(SMALL, **GQA, head_dim=8),
               (6, 13, 2, 2, 0, 0), False),
    # fused q | k | v of unequal sizes (grouped keys and values), fused gate_up_proj
    "phi3": ("Phi3Config", "Phi3ForCausalLM", dict(SMALL, **GQA), (2, 5, 2, 2, 0, 0), False),
    # layer norm without weight or bias (and a fixed epsilon)
    "olmo": ("OlmoConfig", "OlmoForCausalLM", SMALL, (6, 5, 2, 2, 0, 0), False),
    # q/k norms over all heads, norms after attention and MLP
    "olmo2": ("Olmo2Config", "Olmo2ForCausalLM", SMALL, (6, 9, 2, 2, 0, 0), False),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(SMALL, **GQA), (6, 5, 2, 2, 0, 0), False),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(SMALL, **GQA, head_dim=8),
              (6, 9, 2, 2, 0, 0), False),
    "mistral": ("MistralConfig", "MistralForCausalLM", dict(SMALL, **GQA), (6, 5, 2, 2, 0, 0),
                False),
    # fused q | k | v with one key/value head; attention and MLP in parallel
    "falcon_multi_query": ("FalconConfig", "FalconForCausalLM", FALCON, (2, 3, 2, 0, 0, 0), True),
    # fused q/k/v interleaved per head
    "falcon_heads": ("FalconConfig", "FalconForCausalLM", dict(FALCON, multi_query=False),
                     (2, 3, 2, 0, 0, 0), True),
    # fused q/k/v interleaved per key/value group, two layer norms per layer
    "falcon_new_architecture": ("FalconConfig", "FalconForCausalLM",
                                dict(FALCON, new_decoder_architecture=True, num_kv_heads=2),
                                (2, 5, 2, 0, 0, 0), True),
    # fused q/k/v per head, q/k layer norms, squared ReLU
    "persimmon": ("PersimmonConfig", "PersimmonForCausalLM", SMALL, (2, 9, 2, 0, 0, 0), True),
    # centered layer norm without bias (also on q and k), parallel attention and MLP
    "cohere": ("CohereConfig", "CohereForCausalLM", dict(SMALL, **GQA, use_qk_norm=True),
               (6, 7, 2, 2, 0, 0), False),
    # fused q/k/v in four parts of q | v | k, partial rotary, attention in float32
    "codegen": ("CodeGenConfig", "CodeGenForCausalLM",
                dict(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                     rotary_dim=4, bos_token_id=1, eos_token_id=2), (2, 3, 2, 0, 0, 0), True),
}
_FAMILY_MODELS: dict[str, nn.Module] = {}


def family_model(family: str) -> nn.Module:
    """A tiny random float32 model of ``family`` (shared: copy it before changing it)."""
    if family not in _FAMILY_MODELS:
        transformers = pytest.importorskip("transformers")
        config_class, model_class, arguments = FAMILIES[family][:3]
        torch.manual_seed(4)
        config = getattr(transformers, config_class)(**arguments)
        _FAMILY_MODELS[family] = getattr(transformers, model_class)(config).eval()
    return _FAMILY_MODELS[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_family_rules_keep_outputs_and_conserve(family):
    """Every rule fires as many times as the family has parts for it, the outputs stay bit for
    bit, the hooks go, and with CP-LRP and zero biases the relevance of the context is the
    logit (float64)."""
    expected, exact = FAMILIES[family][3:]
    adapter = HuggingFaceCausalLM(float64_without_biases(family_model(family)))
    problem = RationalizationProblem(FAMILY_IDS)
    batch = full_rows(problem)
    before = all_hooks(adapter.model)
    plain = adapter.logits(batch)
    for variant in ["attnlrp", "cp"]:
        with torch.enable_grad(), lrp_rules(adapter.model, variant) as applied:
            hooked = adapter.logits(batch)
        counts = expected[:4] + (expected[4] if variant == "attnlrp" else expected[5],)
        assert applied == dict(zip(COUNTERS, counts))
        assert torch.equal(hooked, plain)
        assert all_hooks(adapter.model) == before
    logits = goal_logits(adapter, problem).double()
    sums = relevance_sums(adapter, problem, "cp")
    torch.testing.assert_close(sums, logits, rtol=1e-10 if exact else 1e-5, atol=1e-12)
    attnlrp = relevance_sums(adapter, problem, "attnlrp")
    assert ((attnlrp - logits).abs() > 1e-3 * logits.abs()).any()  # the softmax rule leaks
    assert all_hooks(adapter.model) == before


@pytest.mark.parametrize("family", FAMILIES)
def test_rationalize_family(family):
    """The ``lrp`` ordering of the float32 model (biases kept) through HuggingFaceCausalLM:
    finite scores, rationales in their order, no hook left."""
    model = family_model(family)
    adapter = HuggingFaceCausalLM(model)
    before = all_hooks(model)
    problem = RationalizationProblem(FAMILY_IDS[:6])
    scores = lrp_scores(adapter, problem, problem.targets)
    assert all(torch.isfinite(scores[t]).all() and scores[t].shape == (t,)
               for t in problem.targets)
    result = rationalize(adapter, problem, "lrp", max_tokens_per_batch=8)
    check_rationales(result, problem, scores)
    assert all_hooks(model) == before


class KeepAttentionWeights(torch.overrides.TorchFunctionMode):
    """Records, per attention, what the AttnLRP accounting needs: the softmax's input ``x``
    (scores and mask), the weights ``a``, the values ``v`` (one per query head) and the
    gradient ``g`` at ``a @ v``; from eager attention (softmax, then the product with the
    values) or from ``F.scaled_dot_product_attention`` (recomputed from q, k, v)."""

    def __init__(self):
        super().__init__()
        self.calls, self.softmax = [], None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        functional = torch.nn.functional
        if func is functional.scaled_dot_product_attention:
            q, k, v = (t.detach() for t in args[:3])
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            k, v = (t.repeat_interleave(q.shape[-3] // t.shape[-3], -3) for t in (k, v))
            x = q @ k.transpose(-1, -2) * (kwargs.get("scale") or q.shape[-1] ** -0.5)
            if mask is None and kwargs.get("is_causal"):
                mask = torch.ones(x.shape[-2:], dtype=torch.bool).tril()
            if mask is not None:
                x = (x + mask if mask.is_floating_point()
                     else x.masked_fill(~mask, torch.finfo(x.dtype).min))
            self.keep({"x": x, "a": x.softmax(-1), "v": v}, out)
        elif func in (functional.softmax, torch.softmax, torch.Tensor.softmax):
            self.softmax = {"x": args[0].detach()}
        elif func in (torch.matmul, torch.Tensor.__matmul__) and self.softmax is not None:
            call, self.softmax = self.softmax, None
            call.update(a=args[0].detach(), v=args[1].detach())
            self.keep(call, out)
        return out

    def keep(self, call, out):
        if out.requires_grad:  # not a forward pass without gradients
            out.register_hook(lambda g: call.__setitem__("g", g))
            self.calls.append(call)

    def leak(self) -> float:
        """What AttnLRP's softmax rule leaves out (see :func:`softmax_leak`), all attentions."""
        total = 0.0
        for call in self.calls:
            a, x, v, g = (call[n].double() for n in ("a", "x", "v", "g"))
            grad_a = 0.5 * g @ v.transpose(-1, -2)
            grad_x = a * (grad_a - (a * grad_a).sum(-1, keepdim=True))
            total += float((a * grad_a).sum() - (x * grad_x).sum())  # masked: grad_x = 0
        return total


@pytest.mark.parametrize("family", ["gpt_neox", "phi3", "falcon_multi_query",
                                    "falcon_new_architecture", "persimmon", "codegen", "gemma2",
                                    "olmo2"])
def test_attnlrp_accounting_is_exact_on_more_families(family):
    """The AttnLRP accounting of the GPT-2 test for fused q/k/v layouts (each slice's gradient
    scaled by 1/4, 1/4, 1/2), q/k norms and Gemma 2's softcapped scores (tanh's identity rule
    passes the scores' relevance on unchanged)."""
    adapter = HuggingFaceCausalLM(float64_without_biases(family_model(family)))
    t = len(FAMILY_IDS) - 1
    problem = RationalizationProblem(FAMILY_IDS, targets=[t])
    with KeepAttentionWeights() as keep:  # below the LRP rules' mode: it sees what they pass on
        relevance = float(lrp_scores(adapter, problem, [t], variant="attnlrp")[t].sum())
    assert len(keep.calls) == 2  # one attention per layer
    leak, logit = keep.leak(), float(goal_logits(adapter, problem)[0])
    exact = FAMILIES[family][4]
    assert abs(relevance + leak - logit) < (1e-9 if exact else 1e-5) * abs(logit)
    assert abs(leak) > 1e-3 * abs(logit)


class ToyFusedAttention(nn.Module):
    """Causal attention with one fused q/k/v projection of a given layout and an output
    projection, as Hugging Face families write it."""

    def __init__(self, layout: str, dim: int = 8, num_heads: int = 2) -> None:
        super().__init__()
        self.layout, self.num_heads = layout, num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        y = self.qkv(x)
        if self.layout == "per_head":  # [head: q k v] ...
            q, k, v = y.unflatten(-1, (self.num_heads, 3, -1)).unbind(-2)
        else:  # three equal parts in the layout's order
            parts = dict(zip(self.layout, y.chunk(3, -1)))
            q, k, v = (parts[n].unflatten(-1, (self.num_heads, -1)) for n in "qkv")
        q, k, v = (t.transpose(-2, -3) for t in (q, k, v))
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(o.transpose(-2, -3).flatten(-2))


class ToyFusedLM(nn.Module):
    def __init__(self, layout: str) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.attention = ToyFusedAttention(layout)
        self.head = nn.Linear(8, VOCAB, bias=False)

    def forward(self, x):
        return self.head(x + self.attention(x))


@pytest.mark.parametrize("layout", ["qkv", "qvk", "per_head", "vqk"])
def test_fused_projection_layout_is_checked(layout):
    """A fused projection's layout is the candidate whose value part the first query's
    attention returns: q | k | v, q | v | k and per head conserve the logit (CP-LRP); a layout
    with the values first is none of the candidates and is refused."""
    model = ToyFusedLM(layout).double()
    x = torch.randn(1, 5, 8, dtype=torch.float64, requires_grad=True)
    before = all_hooks(model)
    if layout == "vqk":
        with pytest.raises(ValueError, match=r"^LRP has no rules for ToyFusedLM: its attention "
                           r"ToyFusedAttention's fused projection qkv splits into q, k and v in "
                           r"no layout this module knows \(.*\)$"), lrp_rules(model, "cp"):
            model(x)
        assert all_hooks(model) == before
        return
    for variant in ["cp", "attnlrp"]:
        with torch.enable_grad(), lrp_rules(model, variant) as applied:
            logit = model(x)[0, -1, 3]
            (grad,) = torch.autograd.grad(logit, x)
        assert applied["attention"] == 1
        relevance, logit = float((x.detach() * grad).sum()), float(logit.detach())
        if variant == "cp":
            assert abs(relevance - logit) < 1e-12 * abs(logit)
        else:
            assert abs(relevance - logit) > 1e-4 * abs(logit)
    assert all_hooks(model) == before


@pytest.mark.parametrize("family", ["gemma", "olmo", "cohere"])
def test_normalization_forms(family):
    """Gemma's ``x / rms * (1 + w)``, OLMo's ``(x - mean) / std`` without weight (its epsilon
    is a constant of the code, not an attribute) and Cohere's ``(x - mean) / std * w`` without
    bias: the rule's gradient is the normalization with the normalizer fixed, its value the
    module's own output, bit for bit."""
    model = copy.deepcopy(family_model(family)).double()
    norm = model.model.norm
    if hasattr(norm, "weight"):
        with torch.no_grad():
            norm.weight.normal_()
    x = torch.randn(3, 32, dtype=torch.float64) * 2 + 0.5
    c = torch.randn(3, 32, dtype=torch.float64)
    plain = norm(x)
    xg = x.clone().requires_grad_(True)
    with lrp_rules(model, "cp") as applied:
        out = norm(xg)
        (grad,) = torch.autograd.grad((out * c).sum(), xg)
    assert torch.equal(out, plain) and applied["norm"] == 1
    if family == "gemma":
        rms = (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()
        expected = c * (1 + norm.weight.detach()) / rms
    else:
        std = (x.var(-1, unbiased=False, keepdim=True)
               + (1e-5 if family == "olmo" else norm.variance_epsilon)).sqrt()
        cw = c if family == "olmo" else c * norm.weight.detach()
        expected = (cw - cw.mean(-1, keepdim=True)) / std
    # These norms compute in float32 whatever the model's dtype.
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close((x * grad).sum(-1), (plain * c).sum(-1), rtol=1e-5, atol=1e-7)


def test_tanh_functions_get_the_identity_rule(tiny_gpt2):
    """``tanh`` called as a function (Gemma 2's softcapping) keeps its value and gets the
    gradient tanh(x) / x; inside an activation module (GPT-2's gelu_new) the module's rule is
    the one that counts."""
    x = torch.tensor([-3.0, -0.5, 0.0, 0.25, 2.0], dtype=torch.float64, requires_grad=True)
    ids = IDS[None, :4]
    with torch.enable_grad(), lrp_rules(tiny_gpt2) as applied:
        tiny_gpt2(input_ids=ids)
        assert applied["tanh"] == 0 and applied["activation"] == 2
        for tanh in (torch.tanh, torch.Tensor.tanh, torch.nn.functional.tanh):
            y = tanh(x)
            assert torch.equal(y, torch.tanh(x.detach()))
            (grad,) = torch.autograd.grad(y.sum(), x)
            torch.testing.assert_close(x.detach() * grad, y.detach(), rtol=1e-15, atol=0.0)
        assert applied["tanh"] == 3
    (plain,) = torch.autograd.grad(torch.tanh(x).sum(), x)  # the rule is gone
    torch.testing.assert_close(plain, 1 - torch.tanh(x.detach()) ** 2)


REFUSED = {
    # a GELU module of its own (BloomGelu, kept as gelu_impl)
    "bloom": ("BloomConfig", "BloomForCausalLM",
              dict(vocab_size=100, hidden_size=32, n_layer=2, n_head=4),
              "its MLP BloomMLP (transformer.h.0.mlp) has no activation module"),
    # a state-space model
    "mamba": ("MambaConfig", "MambaForCausalLM",
              dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=4),
              "no rule for its state-space or recurrent layer MambaMixer "
              "(backbone.layers.0.mixer)"),
    "olmo_clip_qkv": ("OlmoConfig", "OlmoForCausalLM", dict(SMALL, clip_qkv=8.0),
                      "its attention OlmoAttention (model.layers.0.self_attn) clips q, k and v"),
    "mixtral": ("MixtralConfig", "MixtralForCausalLM",
                dict(SMALL, **GQA, num_local_experts=2, num_experts_per_tok=1),
                "no rule for its mixture of experts MixtralSparseMoeBlock (model.layers.0.mlp)"),
}


@pytest.mark.parametrize("family", REFUSED)
def test_unsupported_families_are_refused_in_one_sentence(family):
    transformers = pytest.importorskip("transformers")
    config_class, model_class, arguments, why = REFUSED[family]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**arguments))
    model.eval()
    before = all_hooks(model)
    with pytest.raises(ValueError) as refusal, lrp_rules(model):
        model(input_ids=FAMILY_IDS[None])
    message = str(refusal.value)
    assert message.startswith(f"LRP has no rules for {model_class}: {why}")
    assert "\n" not in message and ". " not in message  # one sentence
    assert all_hooks(model) == before
