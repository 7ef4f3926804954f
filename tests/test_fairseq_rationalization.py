"""fairseq/rationalization.py: seed functions over the plugin's models, against brute force."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from .fairseq_helpers import REPO_ROOT, random_tokens, tiny_lm, tiny_translation

sys.path.insert(0, str(REPO_ROOT / "fairseq"))
rationalization = pytest.importorskip("rationalization")

BASELINES = ["gradient_norm", "signed_gradient", "integrated_gradient", "attention_rollout",
             "last_attention", "all_attention"]


class Hub:
    """The two attributes of a fairseq hub interface that the functions use."""

    def __init__(self, model):
        self.models = [model]


def lm_log_probs(model, ids, subset):
    pos = torch.tensor(sorted(subset))
    with torch.no_grad():
        out, _ = model.decoder(ids[pos][None], positions=pos[None])
    return torch.log_softmax(out[0, -1], -1)


def test_lm_greedy_matches_brute_force():
    model, _, _ = tiny_lm(seed=3)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.tensor([eos]), random_tokens(1, 8, gen)[0]])
    rationales, log = rationalization.rationalize_lm(Hub(model), ids, verbose=False)
    for t, rationale in enumerate(rationales, start=1):
        goal = int(ids[t])
        chosen = [t - 1]
        lp = lm_log_probs(model, ids, chosen)
        while int(lp.argmax()) != goal and len(chosen) < t:
            scores = {c: lm_log_probs(model, ids, chosen + [c]) for c in range(t)
                      if c not in chosen}
            best = max(scores, key=lambda c: (float(scores[c][goal]), -c))
            chosen.append(best)
            lp = scores[best]
        assert rationale == chosen
    assert log["input_text"][0] == "</s>"
    json.dumps(log)


def translation_log_probs(model, src, tgt, src_subset, tgt_subset):
    """Direct encoder/decoder call; the final source </s> is always included."""
    s = sorted(set(src_subset) | {len(src) - 1})
    t = sorted(tgt_subset)
    with torch.no_grad():
        enc = model.encoder(src[s][None], src_lengths=torch.tensor([len(s)]),
                            positions=torch.tensor(s)[None])
        out, _ = model.decoder(tgt[t][None], encoder_out=enc, positions=torch.tensor(t)[None])
    return torch.log_softmax(out[0, -1], -1)


def brute_force_conditional(model, src, tgt, t, top_1=False):
    goal = int(tgt[t])
    context = [("source", i) for i in range(len(src) - 1)] + [("target", j) for j in range(t)]
    chosen = [("target", t - 1)]

    def lp_of(items):
        return translation_log_probs(model, src, tgt, [p for s, p in items if s == "source"],
                                     [p for s, p in items if s == "target"])

    lp = lp_of(chosen)
    while len(chosen) < len(context):
        if (top_1 and any(s == "source" for s, _ in chosen)) or (
                not top_1 and int(lp.argmax()) == goal):
            break
        scores = {c: lp_of(chosen + [c]) for c in context if c not in chosen}
        best = max(scores, key=lambda c: float(scores[c][goal]))  # first max: lowest code
        chosen.append(best)
        lp = scores[best]
    return chosen


@pytest.mark.parametrize("top_1", [False, True])
def test_conditional_greedy_matches_brute_force(top_1):
    model, _, _ = tiny_translation(seed=4)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(1)
    src = torch.cat([random_tokens(1, 5, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 5, gen)[0]])
    sources, targets, log = rationalization.rationalize_conditional_model(
        Hub(model), src, tgt, verbose=False, top_1=top_1)
    for t in range(1, len(tgt)):
        expected = brute_force_conditional(model, src, tgt, t, top_1)
        entry = log["rationalizations"][t - 1]
        got = [(step["from"], step["added_token_position"]) for step in entry["log"]]
        assert got == expected
        assert sources[t - 1] == [p for s, p in expected if s == "source"]
        assert targets[t - 1] == [p for s, p in expected if s == "target"]
        assert len(src) - 1 not in sources[t - 1]  # </s> is context, never a rationale token
    assert set(log) >= {"source_tokens", "target_tokens", "source_tokens_text",
                        "target_tokens_text", "rationalizations", "all_source_rationales",
                        "all_target_rationales"}
    json.dumps(log)


@pytest.mark.parametrize("method", BASELINES)
def test_conditional_baselines_run_and_start_with_previous_token(method):
    model, _, _ = tiny_translation(seed=5)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(2)
    src = torch.cat([random_tokens(1, 6, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 4, gen)[0]])
    sources, targets, log = rationalization.baseline_rationalize_conditional_model(
        Hub(model), src, tgt, method, verbose=False, integrated_gradient_steps=10)
    for t, (s, g) in enumerate(zip(sources, targets), start=1):
        assert g[0] == t - 1
        assert all(0 <= p < len(src) - 1 for p in s)
        assert log["rationalizations"][t - 1]["log"][0]["from"] == "target"


@pytest.mark.parametrize("method", BASELINES + ["exhaustive"])
def test_lm_baselines_and_exhaustive_run(method):
    model, _, _ = tiny_lm(seed=6)
    eos = model.decoder.dictionary.eos()
    ids = torch.cat([torch.tensor([eos]), random_tokens(1, 5, torch.Generator())[0]])
    if method == "exhaustive":
        rationales, log = rationalization.exhaustive_rationalize_lm(Hub(model), ids,
                                                                    verbose=False, max_steps=3)
        assert all(len(r) <= 3 for r in rationales)
    else:
        rationales, log = rationalization.baseline_rationalize_lm(
            Hub(model), ids, method, verbose=False, integrated_gradient_steps=10)
    assert [r[0] for r in rationales] == list(range(len(ids) - 1))
    json.dumps(log)


def test_translation_integrated_gradients_completeness():
    from sequential_rationales import Embeddings, RationalizationProblem
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel
    from sequential_rationales.baselines import integrated_gradient_scores
    from sequential_rationales.search import build_batch

    model, _, _ = tiny_translation(seed=7)
    eos = model.decoder.dictionary.eos()
    gen = torch.Generator().manual_seed(3)
    src = torch.cat([random_tokens(1, 5, gen)[0], torch.tensor([eos])])
    tgt = torch.cat([torch.tensor([eos]), random_tokens(1, 4, gen)[0]])
    adapter = FairseqTranslationModel(model, source_length=len(src))
    problem = RationalizationProblem(tgt, src[:-1])
    scores = integrated_gradient_scores(adapter, problem, [3], steps=300, rule="midpoint",
                                        embedding="token")
    batch = build_batch(problem, [tuple(range(problem.context_size(3)))])
    with torch.no_grad():
        emb = adapter.embed(batch)
        zero = Embeddings(torch.zeros_like(emb.target), torch.zeros_like(emb.source))
        goal = problem.goal(3)
        gap = float(adapter.log_probs(batch)[0, goal] - adapter.log_probs(batch, zero)[0, goal])
    assert abs(gap) > 1e-3
    assert float(scores[3].sum()) == pytest.approx(gap, abs=2e-3, rel=1e-3)


def test_bad_translation_input_is_named():
    model, _, _ = tiny_translation(seed=8)
    hub = Hub(model)
    eos, pad = model.decoder.dictionary.eos(), model.decoder.dictionary.pad()
    src = torch.tensor([5, 6, 7, eos])
    tgt = torch.tensor([eos, 5, 6])
    cases = [
        (src[:-1], tgt, ValueError, "source_tokens must end with </s>"),
        (torch.tensor([eos]), tgt, ValueError, "source_tokens is empty"),
        (src, tgt[1:], ValueError, "target_tokens must start with </s>"),
        (src, torch.tensor([eos]), ValueError, "target_tokens has 1 token"),
        (torch.tensor([5, 99, eos]), tgt, ValueError, "id 99, outside the vocabulary"),
        (src, torch.tensor([eos, 5, pad]), ValueError, "padding"),
        (src[None], tgt, ValueError, "1-D"),
        (src.float(), tgt, TypeError, "integer"),
    ]
    for source, target, error, message in cases:
        with pytest.raises(error, match=message):
            rationalization.rationalize_conditional_model(hub, source, target, verbose=False)
    with pytest.raises(ValueError, match="unknown baseline method"):
        rationalization.baseline_rationalize_conditional_model(hub, src, tgt, "bogus")
