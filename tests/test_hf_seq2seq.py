"""HuggingFaceSeq2Seq on tiny random Marian and BART models, against plain references.

The reference places each kept token at its original position by swapping the model's
position-embedding lookup for the given positions, then runs the model on the kept tokens only
(source plus its final </s>, target prefix), one row at a time, without any mask. The adapter
instead runs masked full sequences, so agreement checks its masks and layout.
"""

from __future__ import annotations

import contextlib
import json
import sys

import pytest
import torch

from sequential_rationales import BASELINE_METHODS, rationalize_translation
from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq
from sequential_rationales.search import RationalizationProblem, build_batch

from .fairseq_helpers import REPO_ROOT

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(REPO_ROOT))
from huggingface import rationalization  # noqa: E402

PAD, EOS, BOS = 1, 2, 0
COMMON = dict(vocab_size=20, d_model=16, encoder_layers=2, decoder_layers=2,
              encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
              decoder_ffn_dim=32, max_position_embeddings=64, dropout=0.0,
              attention_dropout=0.0, activation_dropout=0.0, pad_token_id=PAD,
              eos_token_id=EOS, bos_token_id=BOS)


def tiny_model(family: str, attn: str = "sdpa", seed: int = 0, double: bool = False):
    torch.manual_seed(seed)
    if family == "marian":  # the decoder starts with the pad id
        config = transformers.MarianConfig(**COMMON, decoder_start_token_id=PAD,
                                           attn_implementation=attn)
        model = transformers.MarianMTModel(config)
    else:  # BART: the decoder starts with </s>
        config = transformers.BartConfig(**COMMON, decoder_start_token_id=EOS,
                                         attn_implementation=attn)
        model = transformers.BartForConditionalGeneration(config)
    with torch.no_grad():  # Marian initializes this bias to zero; make it matter
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_()
    model.eval()
    return model.double() if double else model


def sentence_pair(model, seed: int, source_len: int = 5, target_len: int = 5):
    gen = torch.Generator().manual_seed(seed)
    src = torch.cat([torch.randint(3, 20, (source_len,), generator=gen), torch.tensor([EOS])])
    tgt = torch.cat([torch.tensor([model.config.decoder_start_token_id]),
                     torch.randint(3, 20, (target_len,), generator=gen)])
    return src, tgt


@contextlib.contextmanager
def at_positions(module, positions):
    """Make a position-embedding module return the embeddings of ``positions`` ([1, L, D])."""
    offset = getattr(module, "offset", 0)  # BART's learned positions start at 2
    module.forward = lambda *args, **kwargs: module.weight[torch.tensor(positions) + offset][None]
    try:
        yield
    finally:
        del module.forward


def reference_log_probs(model, src, tgt, src_subset, tgt_subset):
    """log p(next | kept source + </s>, kept target), tokens at their original positions."""
    s = sorted(set(src_subset) | {len(src) - 1})
    t = sorted(tgt_subset)
    with at_positions(model.get_encoder().embed_positions, s), \
            at_positions(model.get_decoder().embed_positions, t), torch.no_grad():
        logits = model(input_ids=src[s][None], decoder_input_ids=tgt[t][None]).logits
    return torch.log_softmax(logits[0, -1].float(), -1)


def split(problem, codes):
    s = problem.num_source
    return [c for c in codes if c < s], [c - s for c in codes if c >= s]


def random_subsets(problem, gen, n):
    """Subsets for random targets, each holding the previous target token."""
    subsets = []
    for _ in range(n):
        t = int(torch.randint(1, len(problem.target_ids), (1,), generator=gen))
        context = problem.context_size(t)
        keep = torch.rand(context, generator=gen) < 0.5
        keep[problem.previous_code(t)] = True
        subsets.append(tuple(keep.nonzero().flatten().tolist()))
    return subsets


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("family", ["marian", "bart"])
def test_log_probs_match_sparse_reference(family, attn):
    model = tiny_model(family, attn)
    src, tgt = sentence_pair(model, seed=1, source_len=6, target_len=6)
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    subsets = random_subsets(problem, torch.Generator().manual_seed(2), 12)
    subsets += [(problem.previous_code(3),), tuple(range(problem.context_size(6)))]
    batch = build_batch(problem, subsets)
    got = adapter.log_probs(batch)
    for row, codes in enumerate(subsets):
        expected = reference_log_probs(model, src, tgt, *split(problem, codes))
        torch.testing.assert_close(got[row], expected, atol=2e-5, rtol=1e-5)
    goals = torch.randint(0, 20, (len(subsets),))
    scores = adapter.score(batch, goals)
    torch.testing.assert_close(scores[:, 0], got.gather(1, goals[:, None])[:, 0].double(),
                               atol=1e-5, rtol=1e-5)
    assert torch.equal(scores[:, 1].long(), got.argmax(1))


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_substituted_embeddings_reach_the_model(family):
    """The gradient baselines' path: embed() fed back gives the same log-probs; scaled
    embeddings change them, and gradients reach every kept token."""
    model = tiny_model(family)
    src, tgt = sentence_pair(model, seed=3)
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    batch = build_batch(problem, random_subsets(problem, torch.Generator().manual_seed(4), 6))
    emb = adapter.embed(batch)
    torch.testing.assert_close(adapter.log_probs(batch, emb), adapter.log_probs(batch))
    inputs = [(e * 0.5).requires_grad_(True) for e in (emb.target, emb.source)]
    lp = adapter.log_probs(batch, type(emb)(*inputs))
    assert not torch.allclose(lp, adapter.log_probs(batch))
    grads = torch.autograd.grad(lp[:, 3].sum(), inputs)
    for grad, mask in zip(grads, (batch.target_mask, batch.source_mask)):
        assert bool((grad.norm(dim=-1)[mask] > 0).all())
        assert bool((grad.norm(dim=-1)[~mask] == 0).all())


def brute_force_greedy(model, src, tgt, t, top_1=False):
    """Vafa et al.'s greedy search, one candidate at a time on the reference model."""
    goal = int(tgt[t])
    context = [("source", i) for i in range(len(src) - 1)] + [("target", j) for j in range(t)]
    chosen = [("target", t - 1)]

    def lp_of(items):
        return reference_log_probs(model, src, tgt, [p for s, p in items if s == "source"],
                                   [p for s, p in items if s == "target"])

    lp = lp_of(chosen)
    while len(chosen) < len(context):
        if top_1 and any(s == "source" for s, _ in chosen):
            break
        if not top_1 and int(lp.argmax()) == goal:
            break
        scores = {c: lp_of(chosen + [c]) for c in context if c not in chosen}
        best = max(scores, key=lambda c: float(scores[c][goal]))  # first max: lowest code
        chosen.append(best)
        lp = scores[best]
    return chosen


@pytest.mark.parametrize("top_1", [False, True])
@pytest.mark.parametrize("family", ["marian", "bart"])
def test_greedy_matches_brute_force(family, top_1):
    model = tiny_model(family, seed=5, double=True)  # float64: no near-ties flip
    src, tgt = sentence_pair(model, seed=6)
    adapter = HuggingFaceSeq2Seq(model, len(src))
    result, log = rationalize_translation(adapter, src, tgt, str, str, "greedy", top_1=top_1,
                                          max_tokens_per_batch=40)
    for t in range(1, len(tgt)):
        expected = brute_force_greedy(model, src, tgt, t, top_1)
        got = [(step["from"], step["added_token_position"])
               for step in log["rationalizations"][t - 1]["log"]]
        assert got == expected
        assert log["all_source_rationales"][t - 1] == [p for s, p in expected if s == "source"]
        assert log["all_target_rationales"][t - 1] == [p for s, p in expected if s == "target"]
    json.dumps(log)


@pytest.mark.parametrize("method", sorted(BASELINE_METHODS))
@pytest.mark.parametrize("family", ["marian", "bart"])
def test_baselines_return_valid_rationales(family, method):
    model = tiny_model(family, seed=7)
    src, tgt = sentence_pair(model, seed=8, source_len=4, target_len=4)
    adapter = HuggingFaceSeq2Seq(model, len(src))
    _, log = rationalize_translation(adapter, src, tgt, str, str, method,
                                     integrated_gradient_steps=4)
    for t in range(1, len(tgt)):
        sources = log["all_source_rationales"][t - 1]
        targets = log["all_target_rationales"][t - 1]
        assert targets[0] == t - 1  # the previous token comes first
        assert all(0 <= p < len(src) - 1 for p in sources)  # never the final </s>
        assert all(0 <= p < t for p in targets)
        assert len(set(sources)) == len(sources) and len(set(targets)) == len(targets)
    assert model.config._attn_implementation == "sdpa"  # restored after attention maps
    json.dumps(log)


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_attention_maps_leave_out_the_final_eos(family):
    model = tiny_model(family)
    src, tgt = sentence_pair(model, seed=9)
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    batch = build_batch(problem, [tuple(range(problem.context_size(len(tgt) - 1)))])
    maps = adapter.attentions(batch)
    t, s = len(tgt) - 1, len(src) - 1
    assert maps.decoder_self.shape == (2, 2, t, t)
    assert maps.cross.shape == (2, 2, t, s) and maps.encoder_self.shape == (2, 2, s, s)
    torch.testing.assert_close(maps.decoder_self.sum(-1), torch.ones(2, 2, t))
    assert bool((maps.cross.sum(-1) < 1).all())  # the </s> column took the rest


class Tokenizer:
    def decode(self, ids):
        return " ".join(f"w{i}" for i in ids)


@pytest.mark.parametrize("family", ["marian", "bart"])
def test_seed_functions(family, capsys):
    model = tiny_model(family, seed=10)
    src, tgt = sentence_pair(model, seed=11, source_len=4, target_len=3)
    sources, targets, log = rationalization.rationalize_conditional_model(
        model, src, tgt, Tokenizer(), verbose=True, top_1=True)
    assert len(sources) == len(targets) == len(tgt) - 1
    assert all(len(s) <= 1 for s in sources)
    assert "w" in capsys.readouterr().out
    sources, targets, log = rationalization.baseline_rationalize_conditional_model(
        model, src, tgt, Tokenizer(), "last_attention", verbose=False)
    assert [g[0] for g in targets] == list(range(len(tgt) - 1))
    assert log["source_tokens"] == src.tolist()
    json.dumps(log)


def test_seed_function_refuses_bad_inputs():
    model = tiny_model("marian")
    src, tgt = sentence_pair(model, seed=12)
    with pytest.raises(ValueError, match="pad id"):
        rationalization.rationalize_conditional_model(
            model, src, torch.cat([tgt, torch.tensor([PAD])]), Tokenizer(), verbose=False)
    with pytest.raises(ValueError, match="must start with"):
        rationalization.rationalize_conditional_model(model, src, tgt[1:], Tokenizer(),
                                                      verbose=False)
    with pytest.raises(ValueError, match="must end with"):
        rationalization.rationalize_conditional_model(model, src[:-1], tgt, Tokenizer(),
                                                      verbose=False)
    with pytest.raises(TypeError, match="encoder-decoder"):
        HuggingFaceSeq2Seq(torch.nn.Linear(2, 2), 3)


def test_t5_full_context_and_search_run():
    """T5 (relative positions, decoder starts with the pad id): the full context gives the
    plain model's prediction and the search and an attention baseline run."""
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=20, d_model=16, d_kv=8, d_ff=32, num_layers=2,
                                   num_heads=2, dropout_rate=0.0, pad_token_id=0,
                                   eos_token_id=1, decoder_start_token_id=0)
    model = transformers.T5ForConditionalGeneration(config).eval()
    src, tgt = torch.tensor([5, 6, 7, 8, 1]), torch.tensor([0, 9, 10, 11, 12])
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    got = adapter.log_probs(build_batch(problem, [tuple(range(problem.context_size(4)))]))
    with torch.no_grad():
        logits = model(input_ids=src[None], decoder_input_ids=tgt[None, :4]).logits[0, -1]
    torch.testing.assert_close(got[0], torch.log_softmax(logits, -1), atol=1e-5, rtol=1e-5)
    for method in ("greedy", "attention_rollout"):
        _, log = rationalize_translation(adapter, src, tgt, str, str, method)
        assert [g[0] for g in log["all_target_rationales"]] == [0, 1, 2, 3]


def test_refuses_a_causal_lm():
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=20, n_embd=16, n_layer=1, n_head=2, eos_token_id=2, bos_token_id=2))
    with pytest.raises(TypeError, match="HuggingFaceCausalLM"):
        HuggingFaceSeq2Seq(model, 3)
