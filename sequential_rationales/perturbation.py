"""Perturbation orderings and faithfulness probabilities, computed through any adapter.

* `occlusion` (leave-one-out): the importance of context code `c` for target `t` is
  `log p(y_t | context) - log p(y_t | context without c)`. The previous target token is the
  position the prediction is read from (the last column of every row), so it is never left
  out: its score is `+inf`, and
  [`importance_order`][sequential_rationales.baselines.importance_order] puts it first anyway.
* `random`: a seeded random order of the context codes per target (the previous token
  first), the floor every method should beat. The order of target `t` depends only on
  `(seed, t)` and the context size: not on the global RNG, nor on the other targets.
* [`faithfulness`][sequential_rationales.perturbation.faithfulness]: the probabilities behind
  the sufficiency and comprehensiveness metrics of
  [`metrics`][sequential_rationales.metrics] for a finished result.

Every subset is fed sparsely with its original positions, like every search. Rows of equal
length share padding-free batches of at most `max_tokens_per_batch` tokens (the search's
`SubsetScorer`), so a sequence costs one pass per row length (and per budget-full chunk),
never one pass per row.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from .adapter import ModelAdapter
from .metrics import faithfulness_scores
from .results import SOURCE, SequenceRationales
from .search import RationalizationProblem, SubsetScorer, _check_finite

Scores = dict[int, Tensor]


def _leave_one_out(width: int) -> Tensor:
    """`[width, width - 1]`: row `c` holds the codes `0 .. width - 1` without `c`."""
    keep = ~torch.eye(width, dtype=torch.bool)
    return torch.arange(width).expand(width, width)[keep].view(width, width - 1)


def _log_probs(scorer: SubsetScorer, codes: Tensor, goals: Tensor) -> Tensor:
    """`log p(goal_i | codes_i)` (float64, host) of equal-length rows of sorted codes."""
    table = scorer(codes, goals)
    _check_finite(table)
    return table[:, 0]


def occlusion_scores(adapter: ModelAdapter, problem: RationalizationProblem,
                     targets: Sequence[int], max_tokens_per_batch: int | None = None,
                     **_: object) -> Scores:
    """Leave-one-out importance of the context codes of each target.

    The full context of target `t` has as many tokens as each leave-one-out row of target
    `t + 1`, so each row length is scored once, with both kinds of rows in its batches. Other
    keyword options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter.
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward pass (`None`: the device's default).

    Returns:
        For each target `t`, `[S + t]` float64 scores of the codes `0 .. S + t - 1`:
            `log p(y_t | context) - log p(y_t | context without c)` (higher: more important),
            `+inf` for the previous token.

    Raises:
        ValueError: When the model returns NaN or infinite log-probabilities.
    """
    scorer = SubsetScorer(adapter, problem, max_tokens_per_batch, reuse_prefix=False)
    by_context = {problem.context_size(t): t for t in targets}
    full: dict[int, float] = {}
    dropped: dict[int, Tensor] = {}
    for length in sorted(set(by_context) | ({c - 1 for c in by_context} - {0})):
        parts: list[tuple[int, bool, Tensor]] = []  # (target, is_full_row, codes)
        if length in by_context:
            parts.append((by_context[length], True, torch.arange(length)[None]))
        if length + 1 in by_context:  # the last row would drop the previous token: skipped
            parts.append((by_context[length + 1], False, _leave_one_out(length + 1)[:-1]))
        codes = torch.cat([rows for _, _, rows in parts])
        goals = torch.cat([torch.full((len(rows),), problem.goal(t)) for t, _, rows in parts])
        log_probs = _log_probs(scorer, codes, goals).split([len(rows) for _, _, rows in parts])
        for (t, is_full, _), values in zip(parts, log_probs):
            if is_full:
                full[t] = float(values[0])
            else:
                dropped[t] = values
    scores = {}
    for t in targets:
        without = dropped.get(t, torch.zeros(0, dtype=torch.float64))
        scores[t] = torch.cat([full[t] - without, torch.tensor([float("inf")],
                                                               dtype=torch.float64)])
    return scores


def random_order(problem: RationalizationProblem, t: int, seed: int = 0) -> list[int]:
    """A random permutation of target `t`'s context codes, the previous token first.

    A private generator seeded with the text `"{seed}/{t}"` (string seeds are hashed with
    SHA-512, the same in every run and process) keeps the global RNG untouched.

    Args:
        problem: The sequence.
        t: The target position.
        seed: The seed of the order.

    Returns:
        The codes `0 .. S + t - 1`, the previous token's code first.
    """
    prev = problem.previous_code(t)
    rest = [c for c in range(problem.context_size(t)) if c != prev]
    random.Random(f"{seed}/{t}").shuffle(rest)
    return [prev, *rest]


def random_orders(problem: RationalizationProblem, targets: Iterable[int], seed: int = 0
                  ) -> dict[int, list[int]]:
    """[`random_order`][sequential_rationales.perturbation.random_order] of every target.

    Args:
        problem: The sequence.
        targets: The target positions.
        seed: The seed of the orders.

    Returns:
        Each target's order of its context codes.
    """
    return {t: random_order(problem, t, seed) for t in targets}


def _rationale_codes(problem: RationalizationProblem, result: SequenceRationales
                     ) -> dict[int, list[int]]:
    """Each target's rationale as context codes, in the order added."""
    if [int(i) for i in problem.target_ids] != list(result.target_ids):
        raise ValueError("the result was computed for other target ids than the problem's")
    s = problem.num_source
    codes = {}
    for r in result.rationales:
        if r.target_position not in problem.targets:
            raise ValueError(f"target {r.target_position} of the result is not a target of "
                             "the problem")
        codes[r.target_position] = [c.position if c.stream == SOURCE else s + c.position
                                    for c in r.rationale]
    return codes


def faithfulness(adapter: ModelAdapter, problem: RationalizationProblem,
                 result: SequenceRationales, max_tokens_per_batch: int | None = None
                 ) -> dict[int, dict[str, float]]:
    """Sufficiency, comprehensiveness and their AOPCs of every rationale of `result`.

    For a rationale `R` (in the order added) and each prefix `R[:k]`, `k = 1 .. |R|`, it
    scores `p(y_t | R[:k])` and `p(y_t | context without R[:k])`, plus `p(y_t | context)`. The
    previous target token is always shown in both (it is where the prediction is read); the
    rationales of every method start with it, so its comprehensiveness term for `k = 1` is 0,
    like ERASER's empty bin. All rows of the sequence are scored together, grouped by length.

    Args:
        adapter: The model's adapter.
        problem: The sequence the result was computed for.
        result: A method's result on `problem`.
        max_tokens_per_batch: Tokens per forward pass (`None`: the device's default).

    Returns:
        For each target position of `result`, the metrics of
            [`faithfulness_scores`][sequential_rationales.metrics.faithfulness_scores].

    Raises:
        ValueError: When `result` was computed for other target ids or targets than
            `problem`'s, or the model returns NaN or infinite log-probabilities.
    """
    rationales = _rationale_codes(problem, result)
    rows: list[tuple[int, ...]] = []
    goals: list[int] = []
    where: dict[int, tuple[int, list[int], list[int]]] = {}  # target -> row indices
    for t, codes in rationales.items():
        context = range(problem.context_size(t))
        prev = problem.previous_code(t)
        start = len(rows)
        rows.append(tuple(context))
        sufficient, comprehensive = [], []
        for k in range(1, len(codes) + 1):
            shown = set(codes[:k]) | {prev}
            sufficient.append(len(rows))
            rows.append(tuple(sorted(shown)))
            comprehensive.append(len(rows))
            rows.append(tuple(c for c in context if c not in shown or c == prev))
        goals += [problem.goal(t)] * (len(rows) - start)
        where[t] = (start, sufficient, comprehensive)
    scorer = SubsetScorer(adapter, problem, max_tokens_per_batch, reuse_prefix=False)
    log_probs = torch.empty(len(rows), dtype=torch.float64)
    lengths = torch.tensor([len(r) for r in rows])
    goals_t = torch.tensor(goals, dtype=torch.long)
    for length in lengths.unique().tolist():
        index = (lengths == length).nonzero()[:, 0]
        codes = torch.tensor([rows[i] for i in index.tolist()], dtype=torch.long)
        log_probs[index] = _log_probs(scorer, codes.view(len(index), length), goals_t[index])
    probs = log_probs.exp().tolist()
    return {t: faithfulness_scores(probs[full], [probs[i] for i in sufficient],
                                   [probs[i] for i in comprehensive])
            for t, (full, sufficient, comprehensive) in where.items()}
