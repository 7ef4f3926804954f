"""Information bottleneck attribution (IBA: Schulz et al., 2020; for transformers, Jiang et al.,
2020) as an importance ordering of the context tokens.

For each target, noise replaces part of the hidden state entering one transformer block, with
one learned mask value per context token; the mask is optimised to keep the prediction while
letting as little information through as possible, and a token's score is the information
(in nats) that passes its mask. See [`iba_scores`][sequential_rationales.iba.iba_scores] for
the exact procedure; it needs an adapter with `layers()`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adapter import MASKED_FORWARDS, ModelAdapter, SubsetBatch
from .search import (
    RationalizationProblem,
    build_batch,
    default_token_budget,
    token_budget_chunks,
)
from .validation import check_positive_int

Scores = dict[int, Tensor]

DEFAULT_BETA = 1.0
DEFAULT_STEPS = 10
DEFAULT_LR = 1.0
DEFAULT_SAMPLES = 8
INITIAL_LAMBDA = 0.9
MIN_SIGMA = 1e-6


def bottleneck(hidden: Tensor, lam: Tensor, mu: Tensor, sigma: Tensor, noise: Tensor) -> Tensor:
    """The bottleneck `lam * hidden + (1 - lam) * (mu + sigma * noise)`.

    Where `lam == 1` the result is `hidden` exactly.

    Args:
        hidden: `[N, L, D]` hidden states.
        lam: `[N, L]` mask values in `[0, 1]`, one per token.
        mu: `[D]` mean of the noise, per feature.
        sigma: `[D]` standard deviation of the noise, per feature.
        noise: `[N, L, D]` standard normal draws.

    Returns:
        `[N, L, D]` in `hidden`'s dtype.
    """
    lam = lam[..., None].to(hidden.dtype)
    eps = (mu + sigma * noise).to(hidden.dtype)
    return lam * hidden + (1 - lam) * eps


def capacity(alpha: Tensor, r2: Tensor, dim: Tensor | int) -> Tensor:
    """Per-token capacity in nats: the information that passes the bottleneck.

    `C_i = D (softplus(alpha_i) + ((1 - lam_i)^2 - 1) / 2) + lam_i^2 / 2 * r2_i` with
    `lam = sigmoid(alpha)` (see [`iba_scores`][sequential_rationales.iba.iba_scores]); finite
    however closely `lam` approaches 1.

    Args:
        alpha: Mask logits, any shape.
        r2: The sum over the features of the squared normalised clean state, broadcast against
            `alpha`.
        dim: The number of features `D` (a number, or per token).

    Returns:
        The capacities, of `alpha`'s shape.
    """
    lam = torch.sigmoid(alpha)
    # -log(1 - sigmoid(alpha)) = softplus(alpha): finite however closely lam approaches 1.
    return dim * (F.softplus(alpha) + (torch.sigmoid(-alpha) ** 2 - 1) / 2) + lam ** 2 * r2 / 2


def _hidden_layout(adapter: ModelAdapter) -> tuple[bool, bool]:
    """`(time_major, target_by_position)` of the hidden states between the adapter's blocks,
    as the adapter declares them (see `sequential_rationales.adapter`): fairseq layers are
    time-major `[L, N, D]`; the Hugging Face encoder-decoder, and a causal LM without position
    ids, run target rows scattered to their positions (column = position, right-padded); by
    default an adapter runs the batch's left-padded target columns."""
    return (bool(getattr(adapter, "hidden_time_major", False)),
            bool(getattr(adapter, "hidden_target_by_position", False)))


def _columns(length: int, counts: Tensor, left_padded: bool) -> Tensor:
    """`[N, length]`: the stream-local index (0 .. counts[i] - 1) of each column's token, or
    -1 for a column that holds none (padding, an appended `</s>`)."""
    j = torch.arange(length)[None]
    local = j - (length - counts[:, None]) if left_padded else j.expand(len(counts), -1)
    return torch.where((local >= 0) & (local < counts[:, None]), local, -1)


@contextlib.contextmanager
def _on_input(block: nn.Module, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """While active, the hidden state `h` entering the block (its first argument) becomes
    `fn(h)`."""
    def hook(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    # Module hooks do not see the masked paths: wrap them on this instance for the duration.
    wrapped = [name for name in MASKED_FORWARDS if hasattr(block, name)]
    for name in wrapped:
        method = getattr(block, name)
        setattr(block, name,
                lambda x, *args, _method=method, **kwargs: _method(fn(x), *args, **kwargs))
    try:
        yield
    finally:
        handle.remove()
        for name in wrapped:
            delattr(block, name)


@dataclass
class _Stream:
    """The bottleneck of one side (source or target) of the model."""

    block: nn.Module
    offset: int  # the context code of local index 0
    left_padded: bool
    time_major: bool
    mu: Tensor | None = None  # [D]
    sigma: Tensor | None = None  # [D]
    r2: Tensor | None = None  # [tokens] squared normalised clean state, summed over features

    @property
    def dim(self) -> int:
        assert self.mu is not None
        return self.mu.shape[0]

    @contextlib.contextmanager
    def replaced(self, counts: Tensor, rows: int, fn: Callable[[Tensor, Tensor], Tensor]
                 ) -> Iterator[None]:
        """Apply `fn(hidden [N, L, D] batch-major, columns [N', L])` at the block, where the
        batch holds `rows` copies of each of the `N'` rows with `counts` tokens."""
        def run(hidden: Tensor) -> Tensor:
            h = hidden.transpose(0, 1) if self.time_major else hidden
            length = h.shape[1]
            if h.shape[0] != len(counts) * rows or length < int(counts.max()) or (
                    self.left_padded and length != int(counts.max())):
                raise ValueError(f"the block's hidden state has shape {tuple(hidden.shape)}, "
                                 "which does not match the rows of the batch; iba supports "
                                 "the project's adapters")
            cols = _columns(length, counts, self.left_padded).to(h.device)
            out = fn(h, cols)
            return out.transpose(0, 1) if self.time_major else out

        with _on_input(self.block, run):
            yield


def _streams(adapter: ModelAdapter, problem: RationalizationProblem, layer: int | None
             ) -> dict[str, _Stream]:
    layers = getattr(adapter, "layers", None)
    if layers is None:
        raise ValueError(f"iba needs the adapter's transformer blocks (a layers() method), "
                         f"which {type(adapter).__name__} does not have")
    blocks = layers()
    time_major, by_position = _hidden_layout(adapter)
    sides = {"target": (problem.num_source, not by_position)}
    if problem.num_source:
        sides["source"] = (0, False)
    streams = {}
    for side, (offset, left_padded) in sides.items():
        stack = blocks[side]
        if not stack:
            raise ValueError(f"the adapter lists no {side} blocks to place a bottleneck in")
        index = (len(stack) - 1) // 2 if layer is None else layer
        if not -len(stack) <= index < len(stack):
            raise ValueError(f"layer {layer} is out of range: the model has {len(stack)} "
                             f"{side} blocks")
        streams[side] = _Stream(stack[index], offset, left_padded, time_major)
    return streams


def _counts(problem: RationalizationProblem, side: str, targets: Sequence[int]) -> Tensor:
    """Tokens of each full-context row in the stream `side`."""
    if side == "source":
        return torch.full((len(targets),), problem.num_source)
    return torch.tensor(list(targets))


def _repeat(batch: SubsetBatch, times: int) -> SubsetBatch:
    """Each row `times` times in a row (one copy per noise sample)."""
    def rep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.repeat_interleave(times, 0)

    return SubsetBatch(rep(batch.target_ids), rep(batch.target_positions),
                       rep(batch.target_mask), rep(batch.source_ids),
                       rep(batch.source_positions), rep(batch.source_mask),
                       batch.equal_lengths)


def _statistics(adapter: ModelAdapter, problem: RationalizationProblem, last: int,
                streams: dict[str, _Stream]) -> None:
    """`mu`, `sigma` and the clean `r2` of every stream, from the row of target `last`
    (every token of the sequence), run without noise."""
    batch = build_batch(problem, [tuple(range(problem.context_size(last)))]).to(adapter.device)
    seen: dict[str, Tensor] = {}

    def keep(side: str) -> Callable[[Tensor, Tensor], Tensor]:
        def fn(hidden: Tensor, cols: Tensor) -> Tensor:
            seen[side] = hidden[0][cols[0] >= 0].float()  # the tokens, in order
            return hidden
        return fn

    with contextlib.ExitStack() as stack, torch.no_grad():
        for side, stream in streams.items():
            stack.enter_context(stream.replaced(_counts(problem, side, [last]), 1, keep(side)))
        adapter.log_probs(batch)
    for side, stream in streams.items():
        if side not in seen:
            raise ValueError(f"the model's forward pass never reached the chosen {side} block; "
                             "iba needs adapters whose layers() are the blocks they run")
        states = seen[side]
        stream.mu = states.mean(0)
        stream.sigma = states.std(0, unbiased=False).clamp_min(MIN_SIGMA)
        stream.r2 = ((states - stream.mu) / stream.sigma).square().sum(-1)


@contextlib.contextmanager
def _frozen(adapter: ModelAdapter) -> Iterator[None]:
    """No parameter of the model takes gradients for the duration (flags restored after)."""
    model = getattr(adapter, "model", None)
    params = [] if model is None else [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _optimise(adapter: ModelAdapter, problem: RationalizationProblem, rows: Sequence[int],
              streams: dict[str, _Stream], beta: float, steps: int, lr: float, samples: int,
              seed: int) -> Tensor:
    """Final capacities `[len(rows), width]` (codes of each row's context; zero beyond)."""
    device = adapter.device
    sizes = torch.tensor([problem.context_size(t) for t in rows])
    width = int(sizes.max())
    batch = _repeat(build_batch(problem, [tuple(range(int(c))) for c in sizes]),
                    samples).to(device)
    goals = torch.tensor([problem.goal(t) for t in rows], device=device)
    real = (torch.arange(width) < sizes[:, None]).to(device)
    # Per code: its stream's r2 and width (source codes first, then target codes).
    order = [s for s in ("source", "target") if s in streams]
    r2 = torch.cat([streams[s].r2 for s in order])[:width].to(device)
    dims = torch.cat([torch.full_like(streams[s].r2, streams[s].dim) for s in order]
                     )[:width].to(device)
    alpha = torch.full((len(rows), width), math.log(INITIAL_LAMBDA / (1 - INITIAL_LAMBDA)),
                       device=device, requires_grad=True)
    optimiser = torch.optim.Adam([alpha], lr=lr)
    # The same draws for every chunk: the noise of a code depends on the seed and step only.
    generator = torch.Generator(device=device).manual_seed(seed)

    def noisy(stream: _Stream, noise: Tensor, lam: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        def fn(hidden: Tensor, cols: Tensor) -> Tensor:
            at = cols.clamp(min=0)
            # [samples, N, L, D] -> the samples of each row together, as the batch holds them.
            eps = noise[:, at].transpose(0, 1).reshape(-1, *hidden.shape[1:])
            lam_cols = torch.where(cols >= 0, lam.gather(1, at + stream.offset), 1.0)
            return bottleneck(hidden, lam_cols.repeat_interleave(samples, 0), stream.mu,
                              stream.sigma, eps)
        return fn

    for _ in range(steps):
        lam = torch.sigmoid(alpha)
        with contextlib.ExitStack() as stack:
            for side in order:
                stream = streams[side]
                noise = torch.randn(samples, len(stream.r2), stream.dim, device=device,
                                    generator=generator)
                stack.enter_context(stream.replaced(_counts(problem, side, rows), samples,
                                                    noisy(stream, noise, lam)))
            log_probs = adapter.log_probs(batch)
        nll = -log_probs.gather(1, goals.repeat_interleave(samples)[:, None]).view(
            len(rows), samples).mean(1)
        per_feature = torch.where(real, capacity(alpha, r2, dims) / dims, 0.0)
        loss = (nll + beta * per_feature.sum(1) / sizes.to(device)).sum()
        (alpha.grad,) = torch.autograd.grad(loss, [alpha])
        optimiser.step()
    with torch.no_grad():
        return torch.where(real, capacity(alpha, r2, dims), 0.0).double().cpu()


def iba_scores(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int | None = None, layer: int | None = None,
               beta: float = DEFAULT_BETA, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
               samples: int = DEFAULT_SAMPLES, seed: int = 0, **_: object) -> Scores:
    """Per target, the capacity of each context code: the nats that pass the bottleneck.

    For target `t`, the full context is one row. The hidden state `R` (`[L, D]` per row)
    entering one transformer block of `adapter.layers()` (the output of the block before it, or
    for block 0 the embeddings as the first block receives them) is replaced by

    ```text
    Z = lam * R + (1 - lam) * eps,    eps ~ N(mu, sigma^2),    lam_i = sigmoid(alpha_i)
    ```

    with one mask value per token `i` (broadcast over the features). The default block is
    `(blocks - 1) // 2` (the middle; block 0, the embeddings, for models of one or two blocks:
    there a causal model may already have moved a token's information into the predicting column
    by the output of block 0), with the same index in the encoder of a translation model. `mu`
    and `sigma` are per feature, estimated at that point over the tokens of the sequence (the row
    of the last explained target, which holds every position; causal attention makes the states
    of shorter rows the same) in a first pass without noise: population standard deviation, at
    least `1e-6`. The information that passes token `i` is the capacity

    ```text
    C_i = sum_d KL(N(lam R_id + (1 - lam) mu_d, (1 - lam)^2 sigma_d^2) || N(mu_d, sigma_d^2))
        = D (softplus(alpha_i) + ((1 - lam_i)^2 - 1) / 2) + lam_i^2 / 2 * sum_d r_id^2
    ```

    in nats, with `r = (R - mu) / sigma` the clean state of the first pass. Each row minimises

    ```text
    loss = -log p(y_t | Z) + beta * mean_i (C_i / D)
    ```

    (the first term averaged over `samples` noise draws; the capacity per token and feature
    averaged over the row's tokens, so that with `beta = 1` both terms are a few nats whatever
    the model's width and the context's length) over `alpha` with Adam (`steps` steps,
    learning rate `lr`, `lam` starting at 0.9). The score of token `i` is its final `C_i`.
    All rows of a chunk are optimised together, each with its own mask (the loss is a sum over
    rows). The noise of a step is drawn per context token from a generator seeded with `seed`
    on the model's device and shared by the rows, so the scores do not depend on how rows are
    chunked, and the same seed on the same device gives the same scores.

    Tokens that are not context codes keep `lam = 1` (no noise): the `</s>` that translation
    adapters append to the source, and padding columns. Only `alpha` receives gradients: the
    model's parameters are frozen for the duration and their `requires_grad` restored. Other
    keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter, with `layers()` (and the optional `hidden_time_major`,
            `hidden_target_by_position`, `model`).
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per pass, counting each noise sample (`None`: the
            device's default for passes with gradients).
        layer: Index of the block in `adapter.layers()` whose input is bottlenecked (both
            sides of a translation model; negative counts from the end); `None`:
            `(blocks - 1) // 2` per side.
        beta: Weight of the capacity term, `>= 0`.
        steps: Adam steps, `>= 1`.
        lr: Adam's learning rate, `> 0`.
        samples: Noise draws per row and step, `>= 1`.
        seed: Seed of the noise.

    Returns:
        For each target `t`, `[S + t]` float64 capacities of the context codes
            `0 .. S + t - 1` (higher: more important).

    Raises:
        ValueError: When an option is out of range, the adapter has no `layers()` (or lists no
            blocks for a side), `layer` is out of range, or the model's forward pass does not
            run the listed blocks as expected.
    """
    check_positive_int(steps, "steps")
    check_positive_int(samples, "samples")
    if not (math.isfinite(beta) and beta >= 0 and math.isfinite(lr) and lr > 0):
        raise ValueError(f"beta must be >= 0 and lr > 0, got beta={beta!r}, lr={lr!r}")
    targets = list(targets)
    streams = _streams(adapter, problem, layer)
    if not targets:
        return {}
    _statistics(adapter, problem, max(targets), streams)
    budget = max_tokens_per_batch or default_token_budget(adapter.device, gradients=True)
    extra = 1 if problem.num_source else 0  # the appended source </s>
    lengths = [problem.context_size(t) + extra for t in targets]
    scores: Scores = {}
    with _frozen(adapter), torch.enable_grad():
        for chunk in token_budget_chunks(lengths, max(1, budget // samples)):
            rows = targets[chunk]
            values = _optimise(adapter, problem, rows, streams, beta, steps, lr, samples, seed)
            for t, row in zip(rows, values):
                scores[t] = row[:problem.context_size(t)]
    return scores
