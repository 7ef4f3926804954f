"""Rationale search, written once for every model family.

The objective (Vafa et al., 2021, eq. 2): for target token ``y_t`` find the smallest set ``S`` of
context positions such that the model, shown only ``y_S`` (and ``x_S`` for conditional models)
at their original positions, predicts ``y_t`` as its argmax.

* :func:`greedy_search` grows ``S`` from ``{t-1}``, each step adding the context token that
  maximizes ``log p(y_t | S + {c})``, until the argmax condition holds.
* :func:`ordered_search` adds tokens in a fixed order (a baseline's importance ranking).
* :func:`exhaustive_search` tries all subsets of size 1, 2, ... that contain ``t-1``.

Context tokens are coded as integers: ``0 .. S-1`` are source positions, ``S + j`` is target
position ``j``. A subset is a sorted tuple of codes, so its source part and its target part are
each in position order, as the sparse forward pass requires.

All targets of a sequence advance together: every candidate subset of every unfinished target
at a step is scored in shared batches of at most ``max_tokens_per_batch`` tokens.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .adapter import ModelAdapter, SubsetBatch
from .results import SOURCE, TARGET, ContextToken, SearchStep, TargetRationale

Subset = tuple[int, ...]


@dataclass
class RationalizationProblem:
    """One sequence to rationalize.

    ``target_ids`` is the LM sequence, or the decoder input of a conditional model (which starts
    with its begin token). ``targets`` are the target positions whose tokens are explained;
    each needs at least one earlier target token (position >= 1).
    """

    target_ids: Tensor
    source_ids: Tensor | None = None
    targets: Sequence[int] = ()

    def __post_init__(self) -> None:
        if not self.targets:
            self.targets = list(range(1, len(self.target_ids)))
        bad = [t for t in self.targets if not 1 <= t < len(self.target_ids)]
        if bad:
            raise ValueError(
                f"target positions {bad} are outside [1, {len(self.target_ids) - 1}]")

    @property
    def num_source(self) -> int:
        return 0 if self.source_ids is None else len(self.source_ids)

    def context_size(self, t: int) -> int:
        """Number of context tokens available when predicting target position ``t``."""
        return self.num_source + t

    def previous_code(self, t: int) -> int:
        return self.num_source + t - 1

    def goal(self, t: int) -> int:
        return int(self.target_ids[t])

    def decode_code(self, code: int) -> ContextToken:
        s = self.num_source
        return ContextToken(SOURCE, code) if code < s else ContextToken(TARGET, code - s)

    def is_source(self, code: int) -> bool:
        return code < self.num_source


def build_batch(problem: RationalizationProblem, subsets: Sequence[Subset]) -> SubsetBatch:
    """Gather the tokens and original positions of each subset (see the padding conventions
    in :mod:`sequential_rationales.adapter`)."""
    s = problem.num_source
    n = len(subsets)
    tgt = [[c - s for c in sub if c >= s] for sub in subsets]
    lt = max(len(p) for p in tgt)
    t_pos = torch.zeros(n, lt, dtype=torch.long)
    t_mask = torch.zeros(n, lt, dtype=torch.bool)
    for i, p in enumerate(tgt):
        if p:
            t_pos[i, lt - len(p):] = torch.tensor(p)
            t_mask[i, lt - len(p):] = True
    t_ids = torch.where(t_mask, problem.target_ids[t_pos], 0)
    if problem.source_ids is None:
        return SubsetBatch(t_ids, t_pos, t_mask)
    src = [[c for c in sub if c < s] for sub in subsets]
    ls = max(1, max(len(p) for p in src))
    s_pos = torch.zeros(n, ls, dtype=torch.long)
    s_mask = torch.zeros(n, ls, dtype=torch.bool)
    for i, p in enumerate(src):
        if p:
            s_pos[i, :len(p)] = torch.tensor(p)
            s_mask[i, :len(p)] = True
    s_ids = torch.where(s_mask, problem.source_ids[s_pos], 0)
    return SubsetBatch(t_ids, t_pos, t_mask, s_ids, s_pos, s_mask)


def token_budget_chunks(lengths: Sequence[int], max_tokens: int) -> Iterator[slice]:
    """Split rows into consecutive chunks whose padded size (rows x longest row) stays within
    ``max_tokens``; a single row longer than the budget forms its own chunk."""
    start, longest = 0, 0
    for i, length in enumerate(lengths):
        longest_with = max(longest, length)
        if i > start and (i - start + 1) * longest_with > max_tokens:
            yield slice(start, i)
            start, longest_with = i, length
        longest = longest_with
    if start < len(lengths):
        yield slice(start, len(lengths))


@dataclass
class SubsetScores:
    """Per-subset results: log p(goal), the argmax token, and the two probabilities."""

    goal_log_prob: Tensor
    prediction: Tensor
    prediction_prob: Tensor
    goal_prob: Tensor


@torch.inference_mode()
def score_subsets(adapter: ModelAdapter, problem: RationalizationProblem,
                  subsets: Sequence[Subset], goals: Sequence[int],
                  max_tokens_per_batch: int) -> SubsetScores:
    """Evaluate ``p(goal_i | subset_i)`` for every subset, in token-bounded batches."""
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    goals_t = torch.as_tensor(list(goals), dtype=torch.long)
    for chunk in token_budget_chunks([len(s) for s in subsets], max_tokens_per_batch):
        batch = build_batch(problem, subsets[chunk]).to(adapter.device)
        lp = adapter.log_probs(batch).float().cpu()
        g = goals_t[chunk]
        goal_lp = lp.gather(1, g[:, None])[:, 0]
        pred_lp, pred = lp.max(dim=1)
        parts.append((goal_lp, pred, pred_lp.exp(), goal_lp.exp()))
    return SubsetScores(*(torch.cat(cols) for cols in zip(*parts)))


# A proposal strategy: given a target and the codes chosen so far, the candidate codes to try.
Proposer = Callable[[int, list[int]], Sequence[int]]


def _grow(adapter: ModelAdapter, problem: RationalizationProblem, propose: Proposer,
          max_steps: int, max_tokens_per_batch: int, top_1: bool,
          top_1_skip_source: frozenset[int]) -> list[TargetRationale]:
    """Shared loop of greedy and ordered search: at each step every unfinished target tries
    its proposed candidates and keeps the one with the highest ``log p(y_t)``."""
    chosen: dict[int, list[int]] = {t: [] for t in problem.targets}
    steps: dict[int, list[SearchStep]] = {t: [] for t in problem.targets}
    reached: dict[int, bool] = {t: False for t in problem.targets}
    active = list(problem.targets)
    while active:
        subsets: list[Subset] = []
        owners: list[int] = []
        added: list[int] = []
        for t in active:
            base = set(chosen[t])
            for c in propose(t, chosen[t]):
                subsets.append(tuple(sorted(base | {c})))
                owners.append(t)
                added.append(c)
        scores = score_subsets(adapter, problem, subsets, [problem.goal(o) for o in owners],
                               max_tokens_per_batch)
        best: dict[int, int] = {}
        for i, t in enumerate(owners):
            # Strict ">" keeps the earliest candidate (lowest code) on ties.
            if t not in best or scores.goal_log_prob[i] > scores.goal_log_prob[best[t]]:
                best[t] = i
        still_active = []
        for t in active:
            i = best[t]
            c = added[i]
            chosen[t].append(c)
            prediction = int(scores.prediction[i])
            reached[t] = prediction == problem.goal(t)
            steps[t].append(SearchStep(
                rationale_size=len(chosen[t]), added=problem.decode_code(c),
                prediction=prediction, prediction_prob=float(scores.prediction_prob[i]),
                true_token_prob=float(scores.goal_prob[i])))
            if top_1:
                finished = problem.is_source(c) and c not in top_1_skip_source
            else:
                finished = reached[t]
            exhausted = len(chosen[t]) >= min(max_steps, problem.context_size(t))
            if not (finished or exhausted):
                still_active.append(t)
        active = still_active
    return [
        TargetRationale(target_position=t, goal_id=problem.goal(t),
                        rationale=[problem.decode_code(c) for c in chosen[t]],
                        steps=steps[t], reached_argmax=reached[t])
        for t in problem.targets
    ]


def greedy_search(adapter: ModelAdapter, problem: RationalizationProblem, max_steps: int = 1024,
                  max_tokens_per_batch: int = 4096, top_1: bool = False,
                  top_1_skip_source: Iterable[int] = ()) -> list[TargetRationale]:
    """Greedy rationalization (Vafa et al., 2021, Alg. 1) of every target of ``problem``.

    Args:
        max_steps: largest rationale size; a target that has not reached its argmax by then
            stops with ``reached_argmax=False``.
        top_1: conditional models only: stop as soon as a source token is added (used to score
            the first aligned source token), whether or not the argmax is reached.
        top_1_skip_source: source positions that do not count for ``top_1`` (e.g. ``</s>``).
    """

    def propose(t: int, chosen: list[int]) -> Sequence[int]:
        if not chosen:
            return [problem.previous_code(t)]
        taken = set(chosen)
        return [c for c in range(problem.context_size(t)) if c not in taken]

    return _grow(adapter, problem, propose, max_steps, max_tokens_per_batch, top_1,
                 frozenset(top_1_skip_source))


def ordered_search(adapter: ModelAdapter, problem: RationalizationProblem,
                   orders: dict[int, Sequence[int]], max_steps: int = 1024,
                   max_tokens_per_batch: int = 4096, top_1: bool = False,
                   top_1_skip_source: Iterable[int] = ()) -> list[TargetRationale]:
    """Add context tokens in the given order (per target, a permutation of its context codes
    that starts with the previous target token) until the argmax condition holds."""
    for t, order in orders.items():
        if not order or order[0] != problem.previous_code(t):
            raise ValueError(f"the order of target {t} must start with the previous token")

    def propose(t: int, chosen: list[int]) -> Sequence[int]:
        return [orders[t][len(chosen)]]

    return _grow(adapter, problem, propose, max_steps, max_tokens_per_batch, top_1,
                 frozenset(top_1_skip_source))


def exhaustive_search(adapter: ModelAdapter, problem: RationalizationProblem, max_steps: int = 6,
                      max_tokens_per_batch: int = 4096) -> list[TargetRationale]:
    """Exact minimum-size rationales: all subsets containing ``t-1`` of size 1, 2, ...,
    ``max_steps``. Among the sufficient subsets of the smallest size, the one with the highest
    ``p(y_t)`` is returned. A target with no sufficient subset within ``max_steps`` gets the
    most probable subset of size ``max_steps`` and ``reached_argmax=False``.

    The number of subsets grows as ``C(context, size - 1)``: keep ``max_steps`` small.
    """
    rationale: dict[int, Subset] = {}
    steps: dict[int, list[SearchStep]] = {t: [] for t in problem.targets}
    reached: dict[int, bool] = {t: False for t in problem.targets}
    rows_per_chunk = max(1, max_tokens_per_batch)
    active = list(problem.targets)
    for size in range(1, max_steps + 1):
        best_any: dict[int, tuple[float, Subset, int, float, float]] = {}
        best_ok: dict[int, tuple[float, Subset, int, float, float]] = {}

        def candidates() -> Iterator[tuple[int, Subset]]:
            for t in active:
                prev = problem.previous_code(t)
                others = [c for c in range(problem.context_size(t)) if c != prev]
                for combo in itertools.combinations(others, size - 1):
                    yield t, tuple(sorted((*combo, prev)))

        stream = candidates()
        while chunk := list(itertools.islice(stream, rows_per_chunk // size or 1)):
            owners = [t for t, _ in chunk]
            subsets = [s for _, s in chunk]
            scores = score_subsets(adapter, problem, subsets,
                                   [problem.goal(t) for t in owners], max_tokens_per_batch)
            for i, (t, sub) in enumerate(chunk):
                entry = (float(scores.goal_log_prob[i]), sub, int(scores.prediction[i]),
                         float(scores.prediction_prob[i]), float(scores.goal_prob[i]))
                if t not in best_any or entry[0] > best_any[t][0]:
                    best_any[t] = entry
                if entry[2] == problem.goal(t) and (t not in best_ok or entry[0] > best_ok[t][0]):
                    best_ok[t] = entry
        still_active = []
        for t in active:
            if t not in best_any:  # no subset of this size exists: the context is exhausted
                continue
            ok = t in best_ok
            _, sub, pred, pred_p, goal_p = best_ok[t] if ok else best_any[t]
            rationale[t] = sub
            reached[t] = ok
            steps[t].append(SearchStep(
                rationale_size=size, added=None, prediction=pred, prediction_prob=pred_p,
                true_token_prob=goal_p, subset=[problem.decode_code(c) for c in sub]))
            if not ok:
                still_active.append(t)
        active = still_active
        if not active:
            break
    results = []
    for t in problem.targets:
        prev = problem.previous_code(t)
        codes = [prev] + [c for c in rationale[t] if c != prev]
        results.append(TargetRationale(
            target_position=t, goal_id=problem.goal(t),
            rationale=[problem.decode_code(c) for c in codes], steps=steps[t],
            reached_argmax=reached[t]))
    return results
