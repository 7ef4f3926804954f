"""Importance scores of the paper's baseline orderings.

Each scorer returns, for every target ``t`` of a problem, a 1-D tensor of scores over the
context codes ``0 .. S + t - 1`` (source positions, then target positions; see
:mod:`sequential_rationales.search`). Higher means "add earlier". The ordering then forces the
previous target token first (:func:`importance_order`).

* ``gradient_norm``: L2 norm of d log p(y_t) / d e_i (Li et al., 2016).
* ``signed_gradient``: gradient x embedding, ``(d log p(y_t) / d e_i) . e_i`` (Denil et al.).
* ``integrated_gradient``: Sundararajan et al. (2017), straight path from the all-zero token
  embeddings (positions kept) to the input, midpoint rule with ``steps`` points.
* ``attention_rollout``: Abnar & Zuidema (2020): per-layer head-mean attention mixed 0.5/0.5
  with the identity, multiplied through the layers.
* ``last_attention``: head-mean attention of the last layer at the predicting position.
* ``all_attention``: attention averaged over all layers and heads.

For conditional models the attention scores of source positions come from cross-attention and
those of target positions from decoder self-attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from .adapter import AttentionMaps, Embeddings, ModelAdapter
from .search import RationalizationProblem, build_batch, token_budget_chunks

Scores = dict[int, Tensor]


def _full_context_subset(problem: RationalizationProblem, t: int) -> tuple[int, ...]:
    return tuple(range(problem.context_size(t)))


def _scatter_to_codes(problem: RationalizationProblem, t: int, target_row: Tensor,
                      target_mask: Tensor, source_row: Tensor | None,
                      source_mask: Tensor | None) -> Tensor:
    """Per-token values of one padded row, laid out over the context codes of target ``t``."""
    parts = []
    if problem.num_source:
        assert source_row is not None and source_mask is not None
        parts.append(source_row[source_mask])
    parts.append(target_row[target_mask])
    out = torch.cat(parts)
    assert out.numel() == problem.context_size(t)
    return out


def _gradients(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int, alphas: Tensor | None
               ) -> dict[int, tuple[Embeddings, Embeddings, object]]:
    """For each target: input embeddings, the gradient of log p(y_t) w.r.t. them (averaged over
    ``alphas``-scaled inputs when given, for integrated gradients), and the batch row masks."""
    n_alpha = 1 if alphas is None else len(alphas)
    rows = [t for t in targets for _ in range(n_alpha)]
    row_alpha = None if alphas is None else alphas.repeat(len(targets))
    out: dict[int, tuple[Embeddings, Embeddings, object]] = {}
    grads_t: dict[int, list[Tensor]] = {t: [] for t in targets}
    grads_s: dict[int, list[Tensor]] = {t: [] for t in targets}
    embeds: dict[int, Embeddings] = {}
    masks: dict[int, tuple[Tensor, Tensor | None]] = {}
    lengths = [problem.context_size(t) for t in rows]
    for chunk in token_budget_chunks(lengths, max_tokens_per_batch):
        chunk_targets = rows[chunk]
        batch = build_batch(problem, [_full_context_subset(problem, t) for t in chunk_targets])
        batch = batch.to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(batch)
        scale = torch.ones(len(chunk_targets)) if row_alpha is None else row_alpha[chunk]
        scale = scale.to(emb.target.device, emb.target.dtype)[:, None, None]
        tgt_in = (emb.target * scale).detach().requires_grad_(True)
        src_in = None if emb.source is None else (emb.source * scale).detach().requires_grad_(True)
        with torch.enable_grad():
            lp = adapter.log_probs(batch, Embeddings(tgt_in, src_in))
            goals = torch.tensor([problem.goal(t) for t in chunk_targets], device=lp.device)
            objective = lp.gather(1, goals[:, None]).sum()
            inputs = [tgt_in] + ([src_in] if src_in is not None else [])
            grads = torch.autograd.grad(objective, inputs)
        for i, t in enumerate(chunk_targets):
            grads_t[t].append(grads[0][i].detach().float().cpu())
            if src_in is not None:
                grads_s[t].append(grads[1][i].detach().float().cpu())
            if t not in embeds:
                embeds[t] = Embeddings(
                    emb.target[i].detach().float().cpu(),
                    None if emb.source is None else emb.source[i].detach().float().cpu())
                masks[t] = (batch.target_mask[i].cpu(),
                            None if batch.source_mask is None else batch.source_mask[i].cpu())
    for t in targets:
        g_t = torch.stack(grads_t[t]).mean(0)
        g_s = torch.stack(grads_s[t]).mean(0) if grads_s[t] else None
        out[t] = (embeds[t], Embeddings(g_t, g_s), masks[t])
    return out


def _gradient_scorer(combine: Callable[[Tensor, Tensor], Tensor], integrated: bool = False
                     ) -> Callable[..., Scores]:
    def scorer(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int = 4096, steps: int = 100) -> Scores:
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps if integrated else None
        scores = {}
        for t, (emb, grad, (t_mask, s_mask)) in _gradients(
                adapter, problem, targets, max_tokens_per_batch, alphas).items():
            tgt = combine(grad.target, emb.target)
            src = None if grad.source is None else combine(grad.source, emb.source)
            scores[t] = _scatter_to_codes(problem, t, tgt, t_mask, src, s_mask)
        return scores
    return scorer


gradient_norm_scores = _gradient_scorer(lambda g, e: g.norm(dim=-1))
signed_gradient_scores = _gradient_scorer(lambda g, e: (g * e).sum(-1))
# With gradients averaged along the path, (x - 0) . mean_grad is the integrated gradient.
integrated_gradient_scores = _gradient_scorer(lambda g, e: (g * e).sum(-1), integrated=True)


def _full_attentions(adapter: ModelAdapter, problem: RationalizationProblem) -> AttentionMaps:
    last = max(problem.targets)
    batch = build_batch(problem, [_full_context_subset(problem, last)]).to(adapter.device)
    with torch.inference_mode():
        maps = adapter.attentions(batch)
    return AttentionMaps(*(None if m is None else m.float().cpu() for m in
                           (maps.decoder_self, maps.cross, maps.encoder_self)))


def _attention_scores(problem: RationalizationProblem, targets: Sequence[int],
                      self_map: Tensor, cross_map: Tensor | None) -> Scores:
    """Rows ``t-1`` of a ``[T, T]`` decoder map (and ``[T, S]`` cross map) per target."""
    scores = {}
    for t in targets:
        parts = [] if cross_map is None else [cross_map[t - 1]]
        parts.append(self_map[t - 1, :t])
        scores[t] = torch.cat(parts)
    return scores


def last_attention_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                          targets: Sequence[int], **_: object) -> Scores:
    maps = _full_attentions(adapter, problem)
    cross = None if maps.cross is None else maps.cross[-1].mean(0)
    return _attention_scores(problem, targets, maps.decoder_self[-1].mean(0), cross)


def all_attention_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                         targets: Sequence[int], **_: object) -> Scores:
    maps = _full_attentions(adapter, problem)
    cross = None if maps.cross is None else maps.cross.mean((0, 1))
    return _attention_scores(problem, targets, maps.decoder_self.mean((0, 1)), cross)


def attention_rollout(self_attentions: Tensor, residual: float = 0.5) -> Tensor:
    """Abnar & Zuidema rollout of ``[layers, heads, T, T]`` maps: ``prod_l (r I + (1-r) A_l)``
    with ``A_l`` the head mean; returns ``[T, T]`` (row i: how much token i draws on each j)."""
    n = self_attentions.shape[-1]
    eye = torch.eye(n, dtype=self_attentions.dtype)
    rollout = eye
    for layer in self_attentions:
        rollout = (residual * eye + (1 - residual) * layer.mean(0)) @ rollout
    return rollout


def conditional_attention_rollout(maps: AttentionMaps, residual: float = 0.5) -> Tensor:
    """Rollout through an encoder-decoder over the joint token set ``[source; target]``.

    The source block starts from the encoder's own rollout. In each decoder layer a target
    query splits its mixing weight equally between self-attention and cross-attention (their
    rows each sum to one), then mixes with the identity like :func:`attention_rollout`.
    Returns ``[S + T, S + T]``.
    """
    assert maps.cross is not None
    s, t = maps.cross.shape[-1], maps.decoder_self.shape[-1]
    eye = torch.eye(s + t)
    rollout = eye.clone()
    if maps.encoder_self is not None:
        rollout[:s, :s] = attention_rollout(maps.encoder_self, residual)
    for self_l, cross_l in zip(maps.decoder_self, maps.cross):
        mix = torch.zeros(s + t, s + t)
        mix[:s, :s] = torch.eye(s)
        mix[s:, :s] = 0.5 * cross_l.mean(0)
        mix[s:, s:] = 0.5 * self_l.mean(0)
        layer = eye.clone()
        layer[s:] = residual * eye[s:] + (1 - residual) * mix[s:]
        rollout = layer @ rollout
    return rollout


def attention_rollout_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                             targets: Sequence[int], **_: object) -> Scores:
    maps = _full_attentions(adapter, problem)
    if maps.cross is None:
        return _attention_scores(problem, targets, attention_rollout(maps.decoder_self), None)
    s = problem.num_source
    joint = conditional_attention_rollout(maps)
    return _attention_scores(problem, targets, joint[s:, s:], joint[s:, :s])


BASELINE_SCORERS: dict[str, Callable[..., Scores]] = {
    "gradient_norm": gradient_norm_scores,
    "signed_gradient": signed_gradient_scores,
    "integrated_gradient": integrated_gradient_scores,
    "attention_rollout": attention_rollout_scores,
    "last_attention": last_attention_scores,
    "all_attention": all_attention_scores,
}


def importance_order(problem: RationalizationProblem, t: int, scores: Tensor) -> list[int]:
    """Context codes by decreasing score (ties: earlier code first), previous token first."""
    prev = problem.previous_code(t)
    ranked = sorted(range(len(scores)), key=lambda c: (-float(scores[c]), c))
    return [prev] + [c for c in ranked if c != prev]
