"""Importance scores of the paper's baseline orderings: gradients and attention.

Each scorer returns, for every target `t` of a problem, a 1-D tensor of scores over the
context codes `0 .. S + t - 1` (source positions, then target positions; see
[`RationalizationProblem`][sequential_rationales.search.RationalizationProblem]). Higher means
"add earlier". The ordering then forces the previous target token first
([`importance_order`][sequential_rationales.baselines.importance_order]). The methods of the
same names (without `_scores`) run these scorers through
[`rationalize`][sequential_rationales.methods.rationalize].

Gradients are taken with respect to the token embeddings `e` (what the adapter's
[`embed`][sequential_rationales.adapter.ModelAdapter.embed] returns; positions are added by the
model). `x` below is the *first layer's input* as the paper's code defined it per framework
(the adapter's optional `input_embedding`): Hugging Face GPT-2 `e + wpe(position)` (rotary
models: `e`); fairseq `embed_scale * e + positions`.

* `gradient_norm`: L2 norm of `d log p(y_t) / d e_i` (Li et al., 2016).
* `signed_gradient`: gradient x input (Denil et al.), `(d log p / d x_i) . x_i` where the
  adapter's `baseline_defaults` say `"first_layer"` (the paper's code, both frameworks),
  else `(d log p / d e_i) . e_i`. `signed_gradient_token` always uses `e`.
* `integrated_gradient`: Sundararajan et al. (2017), straight path from all-zero token
  embeddings (positions kept) to `e`; the mean gradient along the path times `e` (Hugging
  Face, as the paper's code) or times `x` (fairseq, as the paper's code). Two quadrature
  rules: `"endpoints"` averages `steps + 1` evenly spaced points `0, 1/steps, .., 1` (the
  paper's code: 100 steps for Hugging Face, 50 for fairseq) and `"midpoint"` averages
  `steps` midpoints (more accurate: completeness holds to `O(1/steps^2)`).
  `integrated_gradient_midpoint` is the midpoint rule times `e` with 100 steps.
* `attention_rollout`: Abnar & Zuidema (2020): per-layer head-mean attention mixed 0.5/0.5
  with the identity, multiplied through the layers.
* `last_attention`: head-mean attention of the last layer at the predicting position.
* `all_attention`: attention averaged over all layers and heads.

For conditional models the attention scores of source positions come from cross-attention and
those of target positions from decoder self-attention.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from .adapter import AttentionMaps, Embeddings, ModelAdapter, SubsetBatch
from .search import (
    RationalizationProblem,
    build_batch,
    default_token_budget,
    token_budget_chunks,
)

Scores = dict[int, Tensor]

BASELINE_DEFAULTS = {
    "integrated_gradient_steps": 100,
    "integrated_gradient_rule": "midpoint",
    "integrated_gradient_input": "token",
    "signed_gradient_input": "token",
}
"""The gradient baselines' settings for adapters without `baseline_defaults` (plain torch
models in the tests): the token embedding and the midpoint rule with 100 steps. An adapter's
`baseline_defaults` override single entries."""
INTEGRATION_RULES = ("endpoints", "midpoint")
GRADIENT_INPUTS = ("token", "first_layer")


def baseline_defaults(adapter: ModelAdapter) -> dict:
    """The gradient baselines' settings for `adapter`.

    Args:
        adapter: Any adapter; its optional `baseline_defaults` dict overrides entries of
            [`BASELINE_DEFAULTS`][sequential_rationales.baselines.BASELINE_DEFAULTS].

    Returns:
        A dict with the keys `integrated_gradient_steps`, `integrated_gradient_rule`,
            `integrated_gradient_input` and `signed_gradient_input`.
    """
    return {**BASELINE_DEFAULTS, **getattr(adapter, "baseline_defaults", {})}


def path_alphas(steps: int, rule: str) -> Tensor:
    """Points on `[0, 1]` whose mean gradient approximates the path integral.

    Args:
        steps: Number of intervals, a positive integer.
        rule: `"endpoints"` (`steps + 1` points `0, 1/steps, .., 1`, the paper's code) or
            `"midpoint"` (`steps` midpoints `(k + 0.5) / steps`).

    Returns:
        `[steps + 1]` or `[steps]` float32 points.

    Raises:
        ValueError: When `steps` is not a positive integer or `rule` is unknown.
    """
    if not (isinstance(steps, int) and steps > 0):
        raise ValueError(f"integrated gradient steps must be a positive integer, got {steps!r}")
    if rule == "endpoints":  # the paper's code: both ends included, plain average
        return torch.arange(steps + 1, dtype=torch.float32) / steps
    if rule == "midpoint":
        return (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    raise ValueError(f"unknown integration rule {rule!r}; expected one of {INTEGRATION_RULES}")


def _check_input(which: str) -> str:
    if which not in GRADIENT_INPUTS:
        raise ValueError(f"unknown gradient input {which!r}; expected one of {GRADIENT_INPUTS}")
    return which


def _full_context_subset(problem: RationalizationProblem, t: int) -> tuple[int, ...]:
    return tuple(range(problem.context_size(t)))


def _unpad(target: Tensor, target_mask: Tensor, source: Tensor | None,
           source_mask: Tensor | None) -> Tensor:
    """One padded row's per-token values laid out over context codes (source, then target)."""
    parts = [] if source is None else [source[source_mask]]
    parts.append(target[target_mask])
    return torch.cat(parts)


def _row_codes(batch: SubsetBatch, i: int, target: Tensor, source: Tensor | None) -> Tensor:
    """Row `i` of per-token `[N, L, D]` values over context codes, as float on the host."""
    return _unpad(target[i], batch.target_mask[i], None if source is None else source[i],
                  None if batch.source_mask is None else batch.source_mask[i]
                  ).detach().float().cpu()


class _PathGradient(NamedTuple):
    """Per context code `[C, D]`: token embedding, mean path gradient, first-layer input."""

    embedding: Tensor
    gradient: Tensor
    first_layer: Tensor | None


def _path_gradients(adapter: ModelAdapter, problem: RationalizationProblem,
                    targets: Sequence[int], max_tokens_per_batch: int | None, alphas: Tensor,
                    with_input: bool = False) -> dict[int, _PathGradient]:
    """For each target `t`, over the codes of its full context: the token embeddings `e`,
    the mean over `alphas` of d log p(y_t) / d(alpha e) evaluated at `alpha e` (positions
    kept), and with `with_input` the adapter's first-layer input. `alphas = [1]` gives the
    plain gradient."""
    rows = [(t, a) for t in targets for a in alphas.tolist()]
    grad_sum: dict[int, Tensor] = {}
    embeds: dict[int, Tensor] = {}
    inputs_seen: dict[int, Tensor] = {}
    lengths = [problem.context_size(t) for t, _ in rows]
    budget = max_tokens_per_batch or default_token_budget(adapter.device, gradients=True)
    for chunk in token_budget_chunks(lengths, budget):
        chunk_rows = rows[chunk]
        batch = build_batch(problem, [_full_context_subset(problem, t) for t, _ in chunk_rows])
        batch = batch.to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(batch)
            full = adapter.input_embedding(batch) if with_input else None
        scale = torch.tensor([a for _, a in chunk_rows], device=emb.target.device,
                             dtype=emb.target.dtype)[:, None, None]
        inputs = [(emb.target * scale).detach().requires_grad_(True)]
        if emb.source is not None:
            inputs.append((emb.source * scale).detach().requires_grad_(True))
        with torch.enable_grad():
            lp = adapter.log_probs(batch, Embeddings(*inputs))
            goals = torch.tensor([problem.goal(t) for t, _ in chunk_rows], device=lp.device)
            grads = torch.autograd.grad(lp.gather(1, goals[:, None]).sum(), inputs)
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            raise ValueError("the gradients with respect to the input embeddings are NaN or "
                             "infinite (NaN weights, or gradients that overflow): this model "
                             "cannot be explained by gradients")
        src_grad = grads[1] if len(grads) > 1 else None
        for i, (t, _) in enumerate(chunk_rows):
            grad_sum[t] = grad_sum.get(t, 0) + _row_codes(batch, i, grads[0], src_grad)
            if t not in embeds:
                embeds[t] = _row_codes(batch, i, emb.target, emb.source)
                if full is not None:
                    inputs_seen[t] = _row_codes(batch, i, full.target, full.source)
    return {t: _PathGradient(embeds[t], grad_sum[t] / len(alphas), inputs_seen.get(t))
            for t in targets}


def _input_scale(adapter: ModelAdapter, problem: RationalizationProblem, t: int) -> Tensor:
    """`[C, 1]`: the factor `c` of each code's stream in `x = c e + positions`, so that
    d/dx = (d/de) / c (the adapter's `input_embedding_scale`: target, then source)."""
    target, source = getattr(adapter, "input_embedding_scale", (1.0, 1.0))
    scale = torch.full((problem.context_size(t), 1), float(target))
    scale[:problem.num_source] = float(source)
    return scale


def gradient_norm_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                         targets: Sequence[int], max_tokens_per_batch: int | None = None,
                         **_: object) -> Scores:
    """L2 norm of the gradient of `log p(y_t)` with respect to each token embedding.

    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `embed`, and `log_probs` on substituted embeddings).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).

    Raises:
        ValueError: When the gradients are NaN or infinite.
    """
    grads = _path_gradients(adapter, problem, targets, max_tokens_per_batch, torch.ones(1))
    return {t: g.gradient.norm(dim=-1) for t, g in grads.items()}


def signed_gradient_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                           targets: Sequence[int], max_tokens_per_batch: int | None = None,
                           embedding: str | None = None, **_: object) -> Scores:
    """Gradient x input: the gradient of `log p(y_t)` dotted with each token's input.

    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `embed`, and `log_probs` on substituted embeddings).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).
        embedding: `"first_layer"` (`d/dx . x`, the paper's code; needs the adapter's
            `input_embedding`) or `"token"` (`d/de . e`); `None`: the adapter's default
            (`signed_gradient_input` of
            [`baseline_defaults`][sequential_rationales.baselines.baseline_defaults]).

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).

    Raises:
        ValueError: When `embedding` is unknown, the adapter cannot give the first layer's
            input, or the gradients are NaN or infinite.
    """
    which = _check_input(embedding or baseline_defaults(adapter)["signed_gradient_input"])
    first = which == "first_layer"
    grads = _path_gradients(adapter, problem, targets, max_tokens_per_batch, torch.ones(1),
                            with_input=first)
    if not first:
        return {t: (g.gradient * g.embedding).sum(-1) for t, g in grads.items()}
    return {t: (g.gradient / _input_scale(adapter, problem, t) * g.first_layer).sum(-1)
            for t, g in grads.items()}


def integrated_gradient_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                               targets: Sequence[int], max_tokens_per_batch: int | None = None,
                               steps: int | None = None, rule: str | None = None,
                               embedding: str | None = None, **_: object) -> Scores:
    """Integrated gradients from all-zero token embeddings (positions kept).

    The mean gradient with respect to `e` along the straight path from zero to `e`, times `e`
    (`embedding="token"`: the integrated gradient proper) or times `x` (`"first_layer"`: the
    paper's fairseq code).
    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `embed`, and `log_probs` on substituted embeddings).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).
        steps: Number of path intervals (see
            [`path_alphas`][sequential_rationales.baselines.path_alphas]); `None`: the
            adapter's default.
        rule: `"endpoints"` or `"midpoint"`; `None`: the adapter's default.
        embedding: `"token"` or `"first_layer"`; `None`: the adapter's default.

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).

    Raises:
        ValueError: When `steps`, `rule` or `embedding` is invalid, or the gradients are NaN or
            infinite.
    """
    defaults = baseline_defaults(adapter)
    alphas = path_alphas(defaults["integrated_gradient_steps"] if steps is None else steps,
                         rule or defaults["integrated_gradient_rule"])
    which = _check_input(embedding or defaults["integrated_gradient_input"])
    first = which == "first_layer"
    grads = _path_gradients(adapter, problem, targets, max_tokens_per_batch, alphas,
                            with_input=first)
    # With gradients averaged along the path, (e - 0) . mean_grad is the integrated gradient.
    return {t: (g.gradient * (g.first_layer if first else g.embedding)).sum(-1)
            for t, g in grads.items()}


def signed_gradient_token_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                                 targets: Sequence[int], max_tokens_per_batch: int | None = None,
                                 **_: object) -> Scores:
    """Gradient x token embedding, on every adapter (this package's former default).

    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `embed`, and `log_probs` on substituted embeddings).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).

    Raises:
        ValueError: When the gradients are NaN or infinite.
    """
    return signed_gradient_scores(adapter, problem, targets, max_tokens_per_batch,
                                  embedding="token")


def integrated_gradient_midpoint_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                                        targets: Sequence[int],
                                        max_tokens_per_batch: int | None = None,
                                        steps: int | None = None, **_: object) -> Scores:
    """Integrated gradients proper: the midpoint rule times the token embedding.

    The same on every adapter (this package's former default).
    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `embed`, and `log_probs` on substituted embeddings).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).
        steps: Number of path intervals; `None`: 100.

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).

    Raises:
        ValueError: When the gradients are NaN or infinite.
    """
    return integrated_gradient_scores(adapter, problem, targets, max_tokens_per_batch,
                                      steps=100 if steps is None else steps,
                                      rule="midpoint", embedding="token")


def _full_attentions(adapter: ModelAdapter, problem: RationalizationProblem) -> AttentionMaps:
    last = max(problem.targets)
    batch = build_batch(problem, [_full_context_subset(problem, last)]).to(adapter.device)
    with torch.inference_mode():
        maps = adapter.attentions(batch)
    return AttentionMaps(*(None if m is None else m.float().cpu() for m in
                           (maps.decoder_self, maps.cross, maps.encoder_self)))


def _attention_scores(problem: RationalizationProblem, targets: Sequence[int],
                      self_map: Tensor, cross_map: Tensor | None) -> Scores:
    """Rows `t-1` of a `[T, T]` decoder map (and `[T, S]` cross map) per target."""
    scores = {}
    for t in targets:
        parts = [] if cross_map is None else [cross_map[t - 1]]
        parts.append(self_map[t - 1, :t])
        scores[t] = torch.cat(parts)
    return scores


def last_attention_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                          targets: Sequence[int], **_: object) -> Scores:
    """Head-mean attention of the last layer at the predicting position.

    The attention maps come from one pass over the full context of the last target; target
    `t` reads the row of its predicting position `t - 1` (cross-attention for source codes).
    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `attentions`).
        problem: The sequence and its targets.
        targets: The target positions to score.

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).
    """
    maps = _full_attentions(adapter, problem)
    cross = None if maps.cross is None else maps.cross[-1].mean(0)
    return _attention_scores(problem, targets, maps.decoder_self[-1].mean(0), cross)


def all_attention_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                         targets: Sequence[int], **_: object) -> Scores:
    """Attention at the predicting position, averaged over all layers and heads.

    Read like `last_attention_scores`, from maps averaged over layers and heads.
    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `attentions`).
        problem: The sequence and its targets.
        targets: The target positions to score.

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).
    """
    maps = _full_attentions(adapter, problem)
    cross = None if maps.cross is None else maps.cross.mean((0, 1))
    return _attention_scores(problem, targets, maps.decoder_self.mean((0, 1)), cross)


def attention_rollout(self_attentions: Tensor, residual: float = 0.5) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020) of a stack of self-attention maps.

    Computes `prod_l (r I + (1 - r) A_l)` with `A_l` the head mean of layer `l`.

    Args:
        self_attentions: `[layers, heads, T, T]` attention probabilities.
        residual: The weight `r` of the identity (the residual connection).

    Returns:
        `[T, T]`: row `i` says how much token `i` draws on each token `j`.
    """
    n = self_attentions.shape[-1]
    eye = torch.eye(n, dtype=self_attentions.dtype)
    rollout = eye
    for layer in self_attentions:
        rollout = (residual * eye + (1 - residual) * layer.mean(0)) @ rollout
    return rollout


def conditional_attention_rollout(maps: AttentionMaps, residual: float = 0.5) -> Tensor:
    """Rollout through an encoder-decoder over the joint token set `[source; target]`.

    The source block starts from the encoder's own rollout. In each decoder layer a target
    query splits its mixing weight equally between self-attention and cross-attention (their
    rows each sum to one), then mixes with the identity like
    [`attention_rollout`][sequential_rationales.baselines.attention_rollout].

    Args:
        maps: Decoder self-, cross- and (optionally) encoder attention; `cross` is required.
        residual: The weight of the identity.

    Returns:
        `[S + T, S + T]` rollout, source tokens first.
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
    """Attention rollout at the predicting position.

    Language models roll out the decoder's self-attention; translation models the joint
    source-and-target rollout (see
    [conditional rollout][sequential_rationales.baselines.conditional_attention_rollout]).
    Other keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter (its `attentions`).
        problem: The sequence and its targets.
        targets: The target positions to score.

    Returns:
        For each target `t`, `[S + t]` scores of the context codes (higher: added earlier).
    """
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
    # This package's former definitions, kept as named options.
    "signed_gradient_token": signed_gradient_token_scores,
    "integrated_gradient_midpoint": integrated_gradient_midpoint_scores,
}
"""Each baseline method's scorer, by method name."""


def importance_order(problem: RationalizationProblem, t: int, scores: Tensor) -> list[int]:
    """Turn scores into the order in which a rationale adds context tokens.

    Args:
        problem: The sequence.
        t: The target position.
        scores: `[S + t]` scores of the context codes of `t`.

    Returns:
        The context codes by decreasing score (ties: earlier code first), with the previous
            token first whatever its score.
    """
    prev = problem.previous_code(t)
    ranked = sorted(range(len(scores)), key=lambda c: (-float(scores[c]), c))
    return [prev] + [c for c in ranked if c != prev]
