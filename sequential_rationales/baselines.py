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
from .search import (
    RationalizationProblem,
    build_batch,
    default_token_budget,
    token_budget_chunks,
)

Scores = dict[int, Tensor]


def _full_context_subset(problem: RationalizationProblem, t: int) -> tuple[int, ...]:
    return tuple(range(problem.context_size(t)))


def _unpad(target: Tensor, target_mask: Tensor, source: Tensor | None,
           source_mask: Tensor | None) -> Tensor:
    """One padded row's per-token values laid out over context codes (source, then target)."""
    parts = [] if source is None else [source[source_mask]]
    parts.append(target[target_mask])
    return torch.cat(parts)


def _path_gradients(adapter: ModelAdapter, problem: RationalizationProblem,
                    targets: Sequence[int], max_tokens_per_batch: int | None, alphas: Tensor
                    ) -> dict[int, tuple[Tensor, Tensor]]:
    """For each target ``t``: the input token embeddings ``e`` of its full context and the mean
    over ``alphas`` of d log p(y_t) / d(alpha e) evaluated at ``alpha e``; both ``[C, D]`` over
    context codes. ``alphas = [1]`` gives the plain gradient."""
    rows = [(t, a) for t in targets for a in alphas.tolist()]
    grad_sum: dict[int, Tensor] = {}
    embeds: dict[int, Tensor] = {}
    lengths = [problem.context_size(t) for t, _ in rows]
    budget = max_tokens_per_batch or default_token_budget(adapter.device, gradients=True)
    for chunk in token_budget_chunks(lengths, budget):
        chunk_rows = rows[chunk]
        batch = build_batch(problem, [_full_context_subset(problem, t) for t, _ in chunk_rows])
        batch = batch.to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(batch)
        scale = torch.tensor([a for _, a in chunk_rows], device=emb.target.device,
                             dtype=emb.target.dtype)[:, None, None]
        inputs = [(emb.target * scale).detach().requires_grad_(True)]
        if emb.source is not None:
            inputs.append((emb.source * scale).detach().requires_grad_(True))
        with torch.enable_grad():
            lp = adapter.log_probs(batch, Embeddings(*inputs))
            goals = torch.tensor([problem.goal(t) for t, _ in chunk_rows], device=lp.device)
            grads = torch.autograd.grad(lp.gather(1, goals[:, None]).sum(), inputs)
        src_grad = grads[1] if len(grads) > 1 else None
        for i, (t, _) in enumerate(chunk_rows):
            s_mask = None if batch.source_mask is None else batch.source_mask[i]
            g = _unpad(grads[0][i], batch.target_mask[i],
                       None if src_grad is None else src_grad[i], s_mask)
            grad_sum[t] = grad_sum.get(t, 0) + g.detach().float().cpu()
            if t not in embeds:
                embeds[t] = _unpad(emb.target[i], batch.target_mask[i],
                                   None if emb.source is None else emb.source[i],
                                   s_mask).detach().float().cpu()
    return {t: (embeds[t], grad_sum[t] / len(alphas)) for t in targets}


def _gradient_scorer(combine: Callable[[Tensor, Tensor], Tensor], integrated: bool = False
                     ) -> Callable[..., Scores]:
    def scorer(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int | None = None, steps: int = 100) -> Scores:
        # Integrated gradients: midpoint rule on the straight path from zero embeddings.
        alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps if integrated \
            else torch.ones(1)
        grads = _path_gradients(adapter, problem, targets, max_tokens_per_batch, alphas)
        return {t: combine(grad, emb) for t, (emb, grad) in grads.items()}
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
