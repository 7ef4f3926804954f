"""Rationale search, written once for every model family.

The objective (Vafa et al., 2021, eq. 2): for target token `y_t` find the smallest set `S` of
context positions such that the model, shown only `y_S` (and `x_S` for conditional models) at
their original positions, predicts `y_t` as its argmax.

* [`greedy_search`][sequential_rationales.search.greedy_search] grows `S` from `{t-1}`, each
  step adding the context token that maximizes `log p(y_t | S + {c})`, until the argmax
  condition holds.
* [`ordered_search`][sequential_rationales.search.ordered_search] adds tokens in a fixed order
  (a baseline's importance ranking).
* [`exhaustive_search`][sequential_rationales.search.exhaustive_search] tries all subsets of
  size 1, 2, ... that contain `t-1`.

Context tokens are coded as integers: `0 .. S-1` are source positions, `S + j` is target
position `j`. A subset is a sorted tuple of codes, so its source part and its target part are
each in position order, as the sparse forward pass requires.

How the work is batched (what makes the search fast):

* All targets of a sequence advance together: every candidate subset of every unfinished target
  at a step is scored in shared batches of at most `max_tokens_per_batch` tokens.
* Candidates are built as tensors: a step's rows are `(owner, candidate code)` pairs, and a
  row's subset is its owner's sorted rationale with the candidate inserted.
* Rows of equal length need no padding and no attention mask. In a step every row of a language
  model has the same length; rows of a conditional model are grouped by their number of source
  tokens, so each group is padding-free too (`group_by_length`).
* The model reduces its next-token distribution where it runs: per row, only `log p(goal)`,
  the argmax and its log-probability come back to the host, once per step.
* A CUDA out-of-memory error halves the rows of the failing batch and retries; the smaller
  budget is kept for the rest of the search. Results never depend on the batching.
"""

from __future__ import annotations

import itertools
import math
import operator
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .adapter import ModelAdapter, SubsetBatch, to_device
from .results import SOURCE, TARGET, ContextToken, SearchStep, TargetRationale
from .validation import check_choice, check_id_tensor, check_positive_int

Subset = tuple[int, ...]

# Tokens per forward pass when none is given (scripts/benchmark_rationalization.py, 2-core CPU):
# 2,048 is clearly faster than 1,024 and within a few percent of 8,192, whose first greedy steps
# would hold 8,192 rows of vocabulary-sized logits. A GPU wants large batches to stay busy.
DEFAULT_TOKEN_BUDGET = {"cpu": 2048, "cuda": 32768}
# Rows whose codes are materialized at once on the host (memory bound for long sequences).
_ROWS_ELEMENTS = 1 << 22
# Logits of one CPU forward pass, at most (rows x vocabulary): 32 MiB of float32, so a step of
# a 50,257-token vocabulary never holds gigabytes of logits in host memory.
_HOST_LOGITS = 1 << 23

Progress = Callable[[int, int], None]  # (done, total)


# Exhaustive search refuses to start above this many subsets (`max_subsets` raises it) and
# warns above the lower threshold. A tiny GPT-2 on the 2-core CPU scored about 700 subsets of
# ~24 tokens a second (44,552 in 61 s): 1e5 is minutes, 1e6 tens of minutes. The paper's
# analogy sentences (~20 tokens, max_steps 6) need about 17,000 each and pass silently.
DEFAULT_MAX_SUBSETS = 1_000_000
WARN_SUBSETS = 100_000

# Passes that keep activations for a backward pass (the gradient baselines) need far more
# memory per token than inference.
DEFAULT_GRADIENT_TOKEN_BUDGET = {"cpu": 2048, "cuda": 4096}


def default_token_budget(device: torch.device | str, gradients: bool = False) -> int:
    """The default `max_tokens_per_batch` for a device.

    Args:
        device: the device the model runs on.
        gradients: whether the passes keep activations for a backward pass.

    Returns:
        2,048 on CPU; on CUDA 32,768, or 4,096 for passes with gradients; 4,096 on other
            devices.
    """
    table = DEFAULT_GRADIENT_TOKEN_BUDGET if gradients else DEFAULT_TOKEN_BUDGET
    return table.get(torch.device(device).type, 4096)


@dataclass
class RationalizationProblem:
    """One sequence to rationalize: its token ids and the target positions to explain.

    The searches name context tokens by integer codes: `0 .. S-1` are the source positions
    and `S + j` is target position `j`, `S` being
    [`num_source`][sequential_rationales.search.RationalizationProblem.num_source].

    Attributes:
        target_ids: the language model's sequence, or the decoder input of a conditional model
            (which starts with its begin token), a 1-D integer tensor `[T]` with `T >= 2`.
        source_ids: a conditional model's source, a 1-D integer tensor `[S]` (the tokens
            that can join a rationale: without an always-visible end token); `None` for a
            language model.
        targets: the target positions whose tokens are explained, each in `[1, T - 1]` (it
            needs at least one earlier target token) and given once; empty (the default)
            means every position from 1. Stored as a list of `int`.

    Raises:
        TypeError: the ids are not integer tensors, or a target is not an integer.
        ValueError: the ids are not 1-D or `target_ids` has fewer than 2 tokens, or a
            target is out of range or repeated.
    """

    target_ids: Tensor
    source_ids: Tensor | None = None
    targets: Sequence[int] = ()

    def __post_init__(self) -> None:
        check_id_tensor(self.target_ids, "target_ids", 2)
        if self.source_ids is not None:
            check_id_tensor(self.source_ids, "source_ids", 0)
        if not self.targets:
            self.targets = list(range(1, len(self.target_ids)))
        try:
            if any(isinstance(t, bool) for t in self.targets):
                raise TypeError
            targets = [operator.index(t) for t in self.targets]
        except TypeError:
            raise TypeError(f"targets must be integer positions, got {self.targets!r}") from None
        self.targets = targets
        bad = [t for t in targets if not 1 <= t < len(self.target_ids)]
        if bad:
            raise ValueError(
                f"target positions {bad} are outside [1, {len(self.target_ids) - 1}]")
        repeated = sorted({t for t in targets if targets.count(t) > 1})
        if repeated:
            raise ValueError(f"target positions {repeated} are given more than once")

    @property
    def num_source(self) -> int:
        """The number of source tokens (0 for a language model)."""
        return 0 if self.source_ids is None else len(self.source_ids)

    def context_size(self, t: int) -> int:
        """The number of context tokens available when predicting target position `t`: every
        source token and the `t` target tokens before it.

        Args:
            t: a target position.
        """
        return self.num_source + t

    def previous_code(self, t: int) -> int:
        """The code of target position `t`'s previous token, which every rationale of `t`
        starts with.

        Args:
            t: a target position.
        """
        return self.num_source + t - 1

    def goal(self, t: int) -> int:
        """The token id at target position `t`, the prediction to explain.

        Args:
            t: a target position.
        """
        return int(self.target_ids[t])

    def decode_code(self, code: int) -> ContextToken:
        """The context token a code stands for.

        Args:
            code: a context code.
        """
        s = self.num_source
        return ContextToken(SOURCE, code) if code < s else ContextToken(TARGET, code - s)

    def is_source(self, code: int) -> bool:
        """Whether a code stands for a source token.

        Args:
            code: a context code.
        """
        return code < self.num_source


def batch_from_codes(problem: RationalizationProblem, codes: Tensor,
                     lengths: Tensor | None = None) -> SubsetBatch:
    """Lay out rows of sorted context codes as a
    [`SubsetBatch`][sequential_rationales.adapter.SubsetBatch] (padding conventions in
    `sequential_rationales.adapter`).

    Source codes sort first, so a row's source part is its first `n_source` codes and its
    target part the rest. The target part is left-padded and the source part right-padded.

    Args:
        problem: the problem the codes belong to.
        codes: `[N, m]` context codes, each row ascending.
        lengths: `[N]`: only the first `lengths[i]` codes of row `i` are real; `None`: all
            are.

    Returns:
        The batch, on the CPU.
    """
    n, m = codes.shape
    s = problem.num_source
    if s == 0 and lengths is None:  # the hot path of language models: codes are positions
        return SubsetBatch(problem.target_ids[codes], codes,
                           torch.ones(n, m, dtype=torch.bool), equal_lengths=True)
    columns = torch.arange(m)
    real = columns < lengths[:, None] if lengths is not None else torch.ones(n, m, dtype=bool)
    n_source = ((codes < s) & real).sum(1)
    n_target = real.sum(1) - n_source
    equal = bool((n_source == n_source[0]).all() and (n_target == n_target[0]).all())
    # Target part, left-padded: column j of row i holds code n_source + n_target - lt + j.
    lt = int(n_target.max())
    t_mask = torch.arange(lt) >= (lt - n_target)[:, None]
    t_col = ((n_source + n_target - lt)[:, None] + torch.arange(lt)).clamp(min=0)
    t_pos = torch.where(t_mask, codes.gather(1, t_col) - s, 0)
    t_ids = torch.where(t_mask, problem.target_ids[t_pos], 0)
    if problem.source_ids is None:
        return SubsetBatch(t_ids, t_pos, t_mask, equal_lengths=equal)
    # Source part, right-padded (at least one column, so an empty source is representable).
    ls = max(1, int(n_source.max()))
    s_mask = torch.arange(ls) < n_source[:, None]
    s_pos = torch.where(s_mask, codes[:, :ls], 0)
    s_ids = torch.where(s_mask, problem.source_ids[s_pos], 0)
    return SubsetBatch(t_ids, t_pos, t_mask, s_ids, s_pos, s_mask, equal_lengths=equal)


def build_batch(problem: RationalizationProblem, subsets: Sequence[Subset]) -> SubsetBatch:
    """Lay out arbitrary subsets as a [`SubsetBatch`][sequential_rationales.adapter.SubsetBatch].

    Args:
        problem: the problem the codes belong to.
        subsets: collections of context codes, in any order, of any lengths.

    Returns:
        The batch, one row per subset, on the CPU.
    """
    rows = [sorted(sub) for sub in subsets]
    lengths = torch.tensor([len(r) for r in rows])
    codes = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    codes[torch.arange(codes.shape[1]) < lengths[:, None]] = torch.tensor(
        list(itertools.chain.from_iterable(rows)), dtype=torch.long)
    return batch_from_codes(problem, codes, lengths)


def token_budget_chunks(lengths: Sequence[int], max_tokens: int) -> Iterable[slice]:
    """Split rows into consecutive chunks whose padded size stays within a token budget.

    Args:
        lengths: the rows' lengths, in order.
        max_tokens: the budget for a chunk's padded size (rows x longest row).

    Yields:
        A slice of row indices per chunk; a single row longer than the budget forms its own
            chunk.
    """
    start, longest = 0, 0
    for i, length in enumerate(lengths):
        longest_with = max(longest, length)
        if i > start and (i - start + 1) * longest_with > max_tokens:
            yield slice(start, i)
            start, longest_with = i, length
        longest = longest_with
    if start < len(lengths):
        yield slice(start, len(lengths))


def scores_from_logits(logits: Tensor, goals: Tensor) -> Tensor:
    """Reduce next-token logits to the three numbers a search needs per row.

    The log-softmax is taken in float32 whatever the model's dtype; float64 holds token ids
    exactly, so one small tensor carries all three numbers back to the host.

    Args:
        logits: `[N, V]` next-token logits (or log-probabilities).
        goals: `[N]` goal token ids.

    Returns:
        `[N, 3]` float64 on the logits' device: `log p(goal)`, the argmax id and
            `log p(argmax)`.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    goal = log_probs.gather(1, to_device(goals, log_probs.device)[:, None])[:, 0]
    best, prediction = log_probs.max(dim=1)
    return torch.stack([goal.double(), prediction.double(), best.double()], dim=1)


def adapter_scores(adapter: ModelAdapter, batch: SubsetBatch, goals: Tensor) -> Tensor:
    """Score a batch with an adapter.

    Uses the adapter's own `score` when it has one, else reduces its `log_probs` with
    `scores_from_logits`.

    Args:
        adapter: the model.
        batch: the subsets, on the adapter's device.
        goals: `[N]` goal token ids.

    Returns:
        `[N, 3]` float64 on the adapter's device: `log p(goal)`, the argmax id and
            `log p(argmax)`.
    """
    score = getattr(adapter, "score", None)
    if score is not None:
        return score(batch, goals)
    return scores_from_logits(adapter.log_probs(batch), goals)


@dataclass
class SubsetScores:
    """Per-subset scores, as [`score_subsets`][sequential_rationales.search.score_subsets]
    returns them; every field is a tensor `[N]`, one entry per subset.

    Attributes:
        goal_log_prob: `log p(goal | subset)`, float64.
        prediction: the most probable token id given the subset, `int64`.
        prediction_prob: the probability of `prediction`.
        goal_prob: `p(goal | subset)`.
    """

    goal_log_prob: Tensor
    prediction: Tensor
    prediction_prob: Tensor
    goal_prob: Tensor

    @classmethod
    def from_table(cls, table: Tensor) -> SubsetScores:
        """Build the scores from a table of scores.

        Args:
            table: `[N, 3]`: `log p(goal)`, the argmax id and `log p(argmax)` per subset.
        """
        return cls(table[:, 0], table[:, 1].long(), table[:, 2].exp(), table[:, 0].exp())


class SubsetScorer:
    """Scores rows of sorted context codes in token-bounded, padding-free batches.

    Holds the token budget, which shrinks for the rest of the search after an out-of-memory
    error.

    Args:
        adapter: the model.
        problem: the problem the codes belong to.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default
            (`default_token_budget`).
        group_by_length: batch only rows with the same number of source tokens together;
            `False` batches rows of different lengths with padding and masks (the slower
            form, kept to test that grouping never changes results).
        reuse_prefix: let `extensions` compute shared rationale prefixes once, where the
            adapter supports it (language models with a `prefix_cache`).

    Attributes:
        budget (int): the current token budget per forward pass.
        on_rows (Callable[[int], None] | None): told the number of rows of each forward pass.
    """

    def __init__(self, adapter: ModelAdapter, problem: RationalizationProblem,
                 max_tokens_per_batch: int | None = None, group_by_length: bool = True,
                 reuse_prefix: bool = True) -> None:
        self.adapter = adapter
        self.problem = problem
        self.budget = max_tokens_per_batch or default_token_budget(adapter.device)
        self.group_by_length = group_by_length
        self.reuse_prefix = (reuse_prefix and problem.num_source == 0
                             and hasattr(adapter, "prefix_cache"))
        self._singleton_cache: object | None = None
        self.on_rows: Callable[[int], None] | None = None  # told the rows of each pass
        # The fixed cost of a forward pass, in tokens, when deciding whether another pass pays
        # off. On CPU, budget / 8 opened too few groups to gain; /32 and /128 did about equally
        # well, /128 once changed a near-tied rationale: /64 sits between them.
        self.pass_cost = self.budget // 64
        vocab = getattr(adapter, "vocab_size", None)
        self.max_rows = (max(1, _HOST_LOGITS // vocab)
                         if isinstance(vocab, int) and torch.device(adapter.device).type == "cpu"
                         else None)

    def __call__(self, codes: Tensor, goals: Tensor) -> Tensor:
        """Score rows of context codes.

        Args:
            codes: `[R, m]` context codes, each row ascending.
            goals: `[R]` goal token ids.

        Returns:
            `[R, 3]` float64 on the CPU: `log p(goal)`, the argmax id and `log p(argmax)` of
                each row, in row order.
        """
        pending: list[tuple[Tensor, Tensor]] = []
        self._enqueue_rows(codes, goals, torch.arange(len(codes)), pending)
        return _collect(pending, len(codes))

    def extensions(self, base: Tensor, owners: Tensor, candidates: Tensor,
                   goals: Tensor) -> Tensor:
        """Score the subsets `base[owner] + {candidate}` of a greedy or ordered step.

        With prefix reuse, a language model computes each rationale once per step and keeps its
        keys and values; a candidate `c` then only runs `c` and the rationale tokens after
        it, attending to the cached tokens before it (causal attention makes them identical).
        Used where it runs fewer tokens than the plain rows. Rows are built in slices, so long
        sequences never hold all rows of a step at once.

        Args:
            base: `[A, k]` sorted rationales, one per owner.
            owners: `[R]` each row's rationale (an index into `base`), ascending.
            candidates: `[R]` the code each row adds to its rationale.
            goals: `[R]` goal token ids.

        Returns:
            `[R, 3]` float64 on the CPU, as calling the scorer returns them.
        """
        pending: list[tuple[Tensor, Tensor]] = []
        per_slice = max(1, _ROWS_ELEMENTS // (base.shape[1] + 1))
        for rows in torch.arange(len(owners)).split(per_slice):
            if not (self.reuse_prefix and base.shape[1]
                    and self._enqueue_with_prefix(base, owners, candidates, goals, rows, pending)):
                codes = torch.cat([base[owners[rows]], candidates[rows, None]], 1)
                self._enqueue_rows(torch.sort(codes, dim=1).values, goals[rows], rows, pending)
        return _collect(pending, len(owners))

    def _enqueue_with_prefix(self, base: Tensor, owners: Tensor, candidates: Tensor,
                             goals: Tensor, rows: Tensor, pending: list) -> bool:
        """Queue `rows` through cached prefixes; `False` (nothing queued) where that would
        not save work or the adapter cannot cache."""
        if self._singletons() is None:
            # The adapter cannot cache this problem (e.g. it spans a sliding window): asking
            # first means no step ever stops caching halfway.
            self.reuse_prefix = False
            return False
        k = base.shape[1]
        before = torch.searchsorted(base[owners[rows]], candidates[rows, None])[:, 0]
        first, last = int(owners[rows[0]]), int(owners[rows[-1]]) + 1
        per_chunk = max(1, self.budget // k)
        chunks = []
        for a0 in range(first, last, per_chunk):
            a1 = min(last, a0 + per_chunk)
            inside = (owners[rows] >= a0) & (owners[rows] < a1)
            groups = self._prefix_groups(before[inside], k, a1 - a0)
            if groups is None:
                return False
            chunks.append((a0, a1, rows[inside], before[inside], groups))
        device = self.adapter.device
        for a0, a1, chunk_rows, chunk_before, groups in chunks:
            cache = self.adapter.prefix_cache(
                batch_from_codes(self.problem, base[a0:a1]).to(device))
            if cache is None:  # this model's cache cannot be sliced: plain rows from now on
                if a0 != first:
                    raise RuntimeError("the adapter stopped returning prefix caches mid-step")
                self.reuse_prefix = False
                return False
            order = torch.argsort(chunk_before, stable=True)
            chunk_rows = chunk_rows[order]
            for q, group in zip(groups[0], chunk_rows.split(groups[1])):
                # The cached first q rationale tokens, then the rest with the candidate.
                suffix = torch.sort(torch.cat([base[owners[group], q:], candidates[group, None]],
                                              1), dim=1).values
                if q == 0:
                    # The candidate comes first: its keys and values are those of the candidate
                    # alone, shared by every target (the cache of single tokens).
                    group_cache, slots, q, suffix = (self._singletons(), candidates[group], 1,
                                                     suffix[:, 1:])
                else:
                    group_cache, slots = cache, owners[group] - a0
                slots = to_device(slots, device)

                def run(part: slice, group=group, suffix=suffix, slots=slots, q=q,
                        group_cache=group_cache) -> Tensor:
                    batch = batch_from_codes(self.problem, suffix[part]).to(device)
                    return self.adapter.score_after_prefix(group_cache, slots[part], q, batch,
                                                           goals[group[part]])

                self._chunked(group, k + 1, run, pending)
        return True

    def _singletons(self) -> object:
        """Keys and values of every context token alone at its position (computed once)."""
        if self._singleton_cache is None:
            codes = torch.arange(len(self.problem.target_ids))[:, None]
            self._singleton_cache = self.adapter.prefix_cache(
                batch_from_codes(self.problem, codes).to(self.adapter.device))
        return self._singleton_cache

    def _prefix_groups(self, before: Tensor, k: int, owners: int
                       ) -> tuple[list[int], list[int]] | None:
        """Split rows (by how many rationale tokens precede their candidate) into groups that
        share a cached prefix length: `(prefix lengths, row counts)` in ascending order, or
        `None` when plain rows are cheaper.

        Every group is another forward pass, so a group is only opened where the tokens it
        saves outweigh a pass's fixed cost (:attr:`pass_cost` tokens).
        """
        overhead = self.pass_cost
        counts = torch.bincount(before, minlength=k + 1).tolist()
        lengths: list[int] = []
        sizes: list[int] = []
        for p, n in enumerate(counts):
            if not n:
                continue
            # Rows whose candidate comes first use another cache: they never join a group.
            if lengths and lengths[-1] and n * (p - lengths[-1]) <= overhead:
                sizes[-1] += n
            else:
                lengths.append(p)
                sizes.append(n)
        rows = len(before)
        plain = rows * (k + 1) + overhead * -(-rows * (k + 1) // self.budget)
        reuse = owners * k + overhead
        for q, n in zip(lengths, sizes):
            reuse += n * (k + 1 - max(q, 1)) + overhead * -(-n * (k + 1) // self.budget)
        return (lengths, sizes) if reuse < plain else None

    def _enqueue_rows(self, codes: Tensor, goals: Tensor, rows: Tensor, pending: list) -> None:
        """Queue plain rows, grouped by their number of source tokens (no padding)."""
        if self.problem.num_source and self.group_by_length:
            key = (codes < self.problem.num_source).sum(1)
            order = torch.argsort(key, stable=True)
            codes, goals, rows = codes[order], goals[order], rows[order]
            sizes = torch.unique_consecutive(key[order], return_counts=True)[1].tolist()
        else:
            sizes = [len(codes)]
        device = self.adapter.device
        width = codes.shape[1] + (1 if self.problem.num_source else 0)
        for group_codes, group_goals, group in zip(codes.split(sizes), goals.split(sizes),
                                                   rows.split(sizes)):
            def run(part: slice, codes=group_codes, goals=group_goals) -> Tensor:
                batch = batch_from_codes(self.problem, codes[part]).to(device)
                return adapter_scores(self.adapter, batch, goals[part])

            self._chunked(group, width, run, pending)

    @torch.inference_mode()
    def _chunked(self, rows: Tensor, width: int, run: Callable[[slice], Tensor],
                 pending: list) -> None:
        """Run `rows` (each `width` tokens) in chunks within the budget; on out-of-memory
        halve the chunk and retry."""
        start = 0
        while start < len(rows):
            stop = min(len(rows), start + max(1, self.budget // width),
                       start + (self.max_rows or len(rows)))
            try:
                pending.append((rows[start:stop], run(slice(start, stop))))
            except torch.OutOfMemoryError:
                if stop - start == 1:
                    raise
                self._halve(stop - start, width)
                continue
            if self.on_rows is not None:
                self.on_rows(stop - start)
            start = stop

    def _halve(self, rows: int, width: int) -> None:
        self.budget = max(1, rows // 2) * width
        warnings.warn(f"out of memory with {rows} rows of {width} tokens; continuing with at "
                      f"most {self.budget} tokens per batch", RuntimeWarning, stacklevel=4)
        if torch.device(self.adapter.device).type == "cuda":
            torch.cuda.empty_cache()


def _collect(pending: list[tuple[Tensor, Tensor]], num_rows: int) -> Tensor:
    """Bring queued device scores to the host in one copy and put them in row order."""
    table = torch.cat([scores for _, scores in pending]).cpu()
    rows = torch.cat([rows for rows, _ in pending])
    return torch.empty(num_rows, 3, dtype=torch.float64).index_copy_(0, rows, table)


@torch.inference_mode()
def score_subsets(adapter: ModelAdapter, problem: RationalizationProblem,
                  subsets: Sequence[Subset], goals: Sequence[int],
                  max_tokens_per_batch: int | None = None) -> SubsetScores:
    """Evaluate `p(goal_i | subset_i)` for arbitrary subsets, in token-bounded batches.

    Args:
        adapter: the model.
        problem: the problem whose context codes the subsets hold.
        subsets: one collection of context codes per row, in any order (see
            [`RationalizationProblem`][sequential_rationales.search.RationalizationProblem]
            for the codes).
        goals: one goal token id per subset.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.

    Returns:
        The scores of every subset, in order.
    """
    goals_t = torch.as_tensor(list(goals), dtype=torch.long)
    scorer = SubsetScorer(adapter, problem, max_tokens_per_batch)
    tables = []
    for length, rows in itertools.groupby(range(len(subsets)), key=lambda i: len(subsets[i])):
        rows = list(rows)
        codes = torch.tensor([sorted(subsets[i]) for i in rows], dtype=torch.long)
        codes = codes.view(len(rows), length)
        tables.append(scorer(codes, goals_t[rows]))
    return SubsetScores.from_table(torch.cat(tables))


def _check_finite(table: Tensor) -> None:
    """Refuse NaN scores (`log p(goal)` may be `-inf`; the argmax's may not): a NaN would
    pass silently through the comparisons into the rationales and make the JSON log invalid."""
    if not bool(torch.isfinite(table[:, 2]).all()) or bool(table.isnan().any()):
        raise ValueError("the model returned NaN or infinite log-probabilities; check its "
                         "weights and inputs (a model with NaN weights cannot be rationalized)")


def _first_best(values: Tensor, owners: Tensor, num_owners: int) -> tuple[Tensor, Tensor]:
    """Per owner, the largest value and the first row that has it (ties: the earliest row).
    Owners without rows get `-inf` and row `len(values)`."""
    rows = len(values)
    best = torch.full((num_owners,), float("-inf"), dtype=values.dtype).scatter_reduce(
        0, owners, values, "amax")
    index = torch.where(values == best[owners], torch.arange(rows), rows)
    first = torch.full((num_owners,), rows, dtype=torch.long).scatter_reduce(
        0, owners, index, "amin")
    return best, first


PRECISIONS = ("auto", "fp32", "bf16-exact", "bf16")
# "auto" screens on CPU from this model size on (see resolve_precision). Measured on 2 cores
# with avx512_bf16: bf16-exact took 0.8x the time of fp32 on a 6-layer, 384-wide GPT-2 (49M
# parameters) and 0.8-0.9x at 12 x 768 (163M), but twice as long at 2 x 128 (0.5M), whose
# passes are too small for bfloat16 to pay for the second, re-scoring pass.
CPU_SCREEN_PARAMETERS = 20_000_000


class Screen:
    """The screen of `precision="bf16-exact"`: exact decisions with bfloat16 doing most work.

    Every row is scored first by the adapter's bfloat16 twin; only the rows that could decide
    (within the margin `delta` of a best score, or of the argmax condition) are re-scored in
    the adapter's own precision, and the decision is taken among those exactly as the
    full-precision search would (the same scores, ties to the earliest row, the stop
    condition).

    A row outside the margin cannot decide while every bfloat16 score is within `delta / 2`
    of its full-precision value. The errors are measured on every re-scored row; when one
    exceeds `delta / 4` (a safety factor of two), `delta` widens to five times it and the
    decision is taken again with the wider margin (rows already re-scored are kept). Five
    times, rather than eight, keeps the margin nearer the errors: fewer rows to re-score.

    Args:
        rough: the scorer on the bfloat16 twin.
        exact: the scorer in the adapter's own precision.
        delta: the initial margin, in log-probability.
    """

    def __init__(self, rough: SubsetScorer, exact: SubsetScorer, delta: float = 0.05) -> None:
        self.rough, self.exact, self.delta = rough, exact, delta
        self.scored = self.rescored = 0  # rows: all, and re-scored in full precision
        self.largest_error = 0.0

    def statistics(self) -> dict[str, float]:
        """What the screen did.

        Returns:
            `rows` (rows scored), `rescored` (rows re-scored in full precision), `margin`
                (the final `delta`) and `largest_error` (the largest bfloat16 error seen).
        """
        return {"rows": self.scored, "rescored": self.rescored, "margin": self.delta,
                "largest_error": self.largest_error}

    def _rescore(self, codes: Tensor, goals: Tensor) -> Tensor:
        table = self.exact(codes, goals)
        _check_finite(table)
        self.rescored += len(table)
        return table

    def _holds(self, rough: Tensor, exact: Tensor) -> bool:
        """Record the screening errors of re-scored rows; `False` (and a wider margin) when
        one came close to the margin."""
        if not len(exact):
            return True
        error = float((exact - rough).abs().max())
        self.largest_error = max(self.largest_error, error)
        if error <= self.delta / 4:
            return True
        self.delta = 5 * error
        return False

    def choose(self, base: Tensor, owners: Tensor, candidates: Tensor, goals: Tensor,
               num_owners: int) -> tuple[Tensor, Tensor]:
        """Choose a greedy step's candidates, as the full-precision search would.

        The step's rows are given as `SubsetScorer.extensions` takes them.

        Args:
            base: `[A, k]` sorted rationales, one per owner.
            owners: `[R]` each row's rationale (an index into `base`), ascending.
            candidates: `[R]` the code each row adds to its rationale.
            goals: `[R]` goal token ids.
            num_owners: `A`, the number of owners.

        Returns:
            Per owner, the chosen candidate `[num_owners]` and its full-precision scores
                `[num_owners, 3]`.
        """
        rough = self.rough.extensions(base, owners, candidates, goals)
        _check_finite(rough)
        self.scored += len(rough)
        exact: dict[int, Tensor] = {}  # row -> full-precision scores, kept across widenings
        while True:
            top, _ = _first_best(rough[:, 0], owners, num_owners)
            rows = (rough[:, 0] >= top[owners] - self.delta).nonzero()[:, 0]
            new = [int(r) for r in rows if int(r) not in exact]
            if new:
                index = torch.tensor(new, dtype=torch.long)
                codes = torch.sort(torch.cat([base[owners[index]], candidates[index, None]], 1),
                                   dim=1).values
                exact.update(zip(new, self._rescore(codes, goals[index]), strict=True))
            scores = torch.stack([exact[int(r)] for r in rows])
            if self._holds(rough[rows, 0], scores[:, 0]):
                break
        _, best = _first_best(scores[:, 0], owners[rows], num_owners)
        return candidates[rows[best]], scores[best]

    def deciding_rows(self, codes: Tensor, goals: Tensor, owners: Tensor, top: Tensor
                      ) -> tuple[Tensor, Tensor] | None:
        """Exhaustive search, one chunk of a size's subsets: the rows that could decide and
        their full-precision scores, or `None` when the margin had to widen (the size must
        then be searched again). `top` holds each target's best bfloat16 `log p(goal)` of
        the size so far and is updated.

        A row can decide when it could reach the argmax condition (its argmax is within the
        margin of its goal: each of the two scores within half of it) or when its goal score is
        within the margin of its target's best so far (the best only rises, so a row left out
        stays out).

        Args:
            codes: `[R, size]` context codes, each row ascending.
            goals: `[R]` goal token ids.
            owners: `[R]` each row's target (an index into `top`).
            top: `[num_targets]` float64, updated in place.

        Returns:
            The indices of the deciding rows `[D]` and their full-precision scores `[D, 3]`,
                or `None` when the margin widened.
        """
        rough = self.rough(codes, goals)
        _check_finite(rough)
        self.scored += len(rough)
        top.scatter_reduce_(0, owners, rough[:, 0], "amax")
        near_argmax = rough[:, 2] - rough[:, 0] <= self.delta
        near_best = rough[:, 0] >= top[owners] - self.delta
        rows = (near_argmax | near_best).nonzero()[:, 0]
        exact = self._rescore(codes[rows], goals[rows])
        if not self._holds(rough[rows][:, [0, 2]], exact[:, [0, 2]]):
            return None
        return rows, exact


def bfloat16_twin(adapter: ModelAdapter, precision: str) -> ModelAdapter:
    """The adapter's bfloat16 twin, from its `with_dtype`.

    Args:
        adapter: the model.
        precision: the precision asked for, named in the error message.

    Returns:
        The twin adapter.

    Raises:
        ValueError: the adapter has no `with_dtype` (one sentence saying so).
    """
    with_dtype = getattr(adapter, "with_dtype", None)
    if with_dtype is None:
        raise ValueError(f"precision={precision!r} needs an adapter with a bfloat16 twin "
                         f"(with_dtype: the Hugging Face and fairseq adapters have one), not "
                         f"{type(adapter).__name__}; use precision='fp32'")
    return with_dtype(torch.bfloat16)


def resolve_precision(adapter: ModelAdapter, precision: str = "auto") -> str:
    """Resolve `precision="auto"` for an adapter.

    `"auto"` becomes `"bf16-exact"` where bfloat16 arithmetic is fast for the adapter's
    float32 model (a CUDA GPU with bfloat16 support; a CPU with bfloat16 instructions and a
    model of at least `CPU_SCREEN_PARAMETERS` (20 million) parameters, below which a bfloat16
    pass saves too little to pay for the re-scoring), else `"fp32"`. Either gives the same
    rationales. A model that is not float32, has no bfloat16 twin or is spread over devices
    gets `"fp32"`.

    Args:
        adapter: the model.
        precision: `"auto"`, `"fp32"`, `"bf16-exact"` or `"bf16"`.

    Returns:
        `precision`, or for `"auto"` the precision chosen.

    Raises:
        ValueError: `precision` is not one of the four.
    """
    check_choice(precision, "precision", PRECISIONS)
    if precision != "auto":
        return precision
    model = getattr(adapter, "model", None)
    if (getattr(adapter, "dtype", None) != torch.float32 or not hasattr(adapter, "with_dtype")
            or not isinstance(model, torch.nn.Module)
            or getattr(model, "hf_device_map", None) is not None):  # no twin of a spread model
        return "fp32"
    device = torch.device(adapter.device)
    if device.type == "cuda":
        fast = torch.cuda.is_bf16_supported(including_emulation=False)
    elif device.type == "cpu":
        fast = ((torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
                and sum(p.numel() for p in model.parameters()) >= CPU_SCREEN_PARAMETERS)
    else:
        fast = False
    return "bf16-exact" if fast else "fp32"


def precision_adapter(adapter: ModelAdapter, precision: str) -> tuple[ModelAdapter, str]:
    """The adapter a search runs on and the precision left to apply there.

    `"auto"` is resolved (see `resolve_precision`); `"bf16"` runs everything on the bfloat16
    twin, which then runs as `"fp32"`; `"bf16-exact"` on an adapter that is already bfloat16
    has nothing to screen and becomes `"fp32"`.

    Args:
        adapter: the model.
        precision: `"auto"`, `"fp32"`, `"bf16-exact"` or `"bf16"`.

    Returns:
        The adapter and the precision (`"fp32"` or `"bf16-exact"`).

    Raises:
        ValueError: an unknown precision, or a bfloat16 precision for an adapter without a
            twin.
    """
    precision = resolve_precision(adapter, precision)
    if precision == "bf16":
        return bfloat16_twin(adapter, precision), "fp32"
    if precision == "bf16-exact" and getattr(adapter, "dtype", None) == torch.bfloat16:
        return adapter, "fp32"  # already the twin's precision: nothing to screen
    return adapter, precision


def _screen(adapter: ModelAdapter, scorer: SubsetScorer, precision: str) -> Screen | None:
    """The screen of `precision="bf16-exact"` around the full-precision `scorer`."""
    if precision != "bf16-exact":
        return None
    rough = SubsetScorer(bfloat16_twin(adapter, precision), scorer.problem, scorer.budget,
                         scorer.group_by_length, scorer.reuse_prefix)
    return Screen(rough, scorer)


# A proposal strategy: (active target indices [A], their sorted rationales [A, k]) ->
# (owner rows [R] indexing the active targets, candidate codes [R]), owners ascending and,
# within an owner, codes in the order ties are broken (earliest first).
Proposer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _grow(adapter: ModelAdapter, problem: RationalizationProblem, propose: Proposer,
          max_steps: int, max_tokens_per_batch: int | None, top_1: bool,
          top_1_skip_source: frozenset[int], group_by_length: bool, reuse_prefix: bool,
          report: Progress | None = None, precision: str = "fp32",
          screening: dict | None = None) -> list[TargetRationale]:
    """Shared loop of greedy and ordered search: at each step every unfinished target tries
    its proposed candidates and keeps the one with the highest `log p(y_t)`; `report`
    hears `(targets finished, targets)` after every step."""
    check_positive_int(max_steps, "max_steps")
    scorer = SubsetScorer(adapter, problem, max_tokens_per_batch, group_by_length, reuse_prefix)
    screen = _screen(adapter, scorer, precision)
    targets = list(problem.targets)
    positions = torch.tensor(targets, dtype=torch.long)
    goals = problem.target_ids[positions].long()
    limits = (positions + problem.num_source).clamp(max=min(max_steps, problem.num_source + len(
        problem.target_ids))).tolist()  # a Python int of any size, clamped before torch sees it
    chosen: list[list[int]] = [[] for _ in targets]
    steps: list[list[SearchStep]] = [[] for _ in targets]
    reached = [False] * len(targets)
    active = torch.arange(len(targets))
    base = torch.zeros(len(targets), 0, dtype=torch.long)  # sorted rationale of each active
    # Targets propose their candidates a slice at a time, so a step over many targets of a
    # long context never holds every (target, candidate) pair at once.
    per_slice = max(1, _ROWS_ELEMENTS // (problem.num_source + len(problem.target_ids)))
    while len(active):
        added_parts, best_parts = [], []
        for part in torch.arange(len(active)).split(per_slice):
            owners, candidates = propose(active[part], base[part])
            owner_goals = goals[active[part]][owners]
            if screen is not None:
                chosen_codes, chosen_scores = screen.choose(base[part], owners, candidates,
                                                            owner_goals, len(part))
                added_parts.append(chosen_codes)
                best_parts.append(chosen_scores)
                continue
            table = scorer.extensions(base[part], owners, candidates, owner_goals)
            _check_finite(table)
            _, best = _first_best(table[:, 0], owners, len(part))
            added_parts.append(candidates[best])
            best_parts.append(table[best])
        added, best_rows = torch.cat(added_parts), torch.cat(best_parts)
        still_active = []
        for j, (i, code) in enumerate(zip(active.tolist(), added.tolist())):
            goal_lp, prediction, prediction_lp = best_rows[j].tolist()
            chosen[i].append(code)
            reached[i] = int(prediction) == int(goals[i])
            steps[i].append(SearchStep(
                rationale_size=len(chosen[i]), added=problem.decode_code(code),
                prediction=int(prediction), prediction_prob=math.exp(prediction_lp),
                true_token_prob=math.exp(goal_lp)))
            if top_1:
                finished = problem.is_source(code) and code not in top_1_skip_source
            else:
                finished = reached[i]
            if not (finished or len(chosen[i]) >= limits[i]):
                still_active.append(j)
        keep = torch.tensor(still_active, dtype=torch.long)
        base = torch.sort(torch.cat([base, added[:, None]], 1), dim=1).values[keep]
        active = active[keep]
        if report is not None:
            report(len(targets) - len(active), len(targets))
    if screen is not None and screening is not None:
        screening.update(screen.statistics())
    return [
        TargetRationale(target_position=t, goal_id=int(goals[i]),
                        rationale=[problem.decode_code(c) for c in chosen[i]],
                        steps=steps[i], reached_argmax=reached[i])
        for i, t in enumerate(targets)
    ]


def greedy_search(adapter: ModelAdapter, problem: RationalizationProblem, max_steps: int = 1024,
                  max_tokens_per_batch: int | None = None, top_1: bool = False,
                  top_1_skip_source: Iterable[int] = (), group_by_length: bool = True,
                  reuse_prefix: bool = True, progress: bool | Progress | None = False,
                  precision: str = "auto", screening: dict | None = None
                  ) -> list[TargetRationale]:
    """Greedy rationalization (Vafa et al., 2021, Alg. 1) of every target of `problem`.

    Each rationale starts with the previous target token; every step adds the context token
    that maximizes `log p(y_t)` (ties: the earliest code) until the model's argmax is `y_t`.
    All targets advance together.

    Args:
        adapter: the model.
        problem: the token ids and the targets.
        max_steps: largest rationale size; a target that has not reached its argmax by then
            stops with `reached_argmax=False`.
        max_tokens_per_batch: tokens per forward pass (`None`: the device's default, see
            [`default_token_budget`][sequential_rationales.search.default_token_budget]).
            Results do not depend on it.
        top_1: conditional models only: stop as soon as a source token is added (used to score
            the first aligned source token), whether or not the argmax is reached.
        top_1_skip_source: source positions that do not count for `top_1` (e.g. `</s>`).
        group_by_length: batch only rows of equal length together (no padding or masks).
        reuse_prefix: reuse the keys and values of rationale prefixes where the adapter can
            (`SubsetScorer.extensions`).
        progress: a `(targets finished, targets)` callback called after every step, `True`
            for a line on stderr, `False` (the default) for nothing, `None` for a line only
            when stderr is a terminal.
        precision: `"fp32"` (the adapter's own precision), `"bf16-exact"` (candidates
            screened by a bfloat16 twin, decided in full precision: the same rationales, see
            [`Screen`][sequential_rationales.search.Screen]), `"bf16"` (everything on the
            twin: faster, not exact) or `"auto"` (`"bf16-exact"` where it is faster, see
            [`resolve_precision`][sequential_rationales.search.resolve_precision]).
        screening: a dict that receives the screen's statistics under `"bf16-exact"`
            ([`Screen.statistics`][sequential_rationales.search.Screen.statistics]).

    Returns:
        One rationale per target, in the order of `problem.targets`.

    Raises:
        ValueError: `max_steps` is not a positive integer, an unknown precision or one the
            adapter cannot run, or the model returns NaN or infinite log-probabilities.
    """
    adapter, precision = precision_adapter(adapter, precision)
    context = problem.num_source + torch.tensor(list(problem.targets), dtype=torch.long)

    def propose(active: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
        if not base.shape[1]:  # the previous target token comes first
            return torch.arange(len(active)), context[active] - 1
        width = int(context.max())
        taken = torch.zeros(len(active), width, dtype=torch.bool).scatter_(1, base, True)
        available = ~taken & (torch.arange(width) < context[active, None])
        owners, candidates = available.nonzero(as_tuple=True)
        return owners, candidates

    return _grow(adapter, problem, propose, max_steps, max_tokens_per_batch, top_1,
                 frozenset(top_1_skip_source), group_by_length, reuse_prefix,
                 _progress_callback(progress, "greedy", "targets"), precision, screening)


def ordered_search(adapter: ModelAdapter, problem: RationalizationProblem,
                   orders: dict[int, Sequence[int]], max_steps: int = 1024,
                   max_tokens_per_batch: int | None = None, top_1: bool = False,
                   top_1_skip_source: Iterable[int] = (), group_by_length: bool = True,
                   reuse_prefix: bool = True) -> list[TargetRationale]:
    """Add context tokens in a given order until the argmax condition holds.

    Args:
        adapter: the model.
        problem: the token ids and the targets.
        orders: per target position, a permutation of its context codes that starts with
            the previous target token (e.g. from
            [`importance_order`][sequential_rationales.baselines.importance_order]).
        max_steps: largest rationale size; a target that has not reached its argmax by then
            stops with `reached_argmax=False`.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.
        top_1: conditional models only: stop as soon as a source token is added, whether or
            not the argmax is reached.
        top_1_skip_source: source positions that do not count for `top_1`.
        group_by_length: batch only rows of equal length together (no padding or masks).
        reuse_prefix: reuse the keys and values of rationale prefixes where the adapter can.

    Returns:
        One rationale per target, in the order of `problem.targets`, its tokens in the
            given order.

    Raises:
        ValueError: an order does not start with the previous token or is not a permutation
            of the target's context codes, or the model returns NaN or infinite
            log-probabilities.
    """
    width = max(problem.context_size(t) for t in problem.targets)
    table = torch.zeros(len(problem.targets), width, dtype=torch.long)
    for i, t in enumerate(problem.targets):
        order = list(orders[t])
        if not order or order[0] != problem.previous_code(t):
            raise ValueError(f"the order of target {t} must start with the previous token")
        if sorted(order) != list(range(problem.context_size(t))):
            raise ValueError(f"the order of target {t} must be a permutation of its "
                             f"{problem.context_size(t)} context codes")
        table[i, :len(order)] = torch.tensor(order)

    def propose(active: Tensor, base: Tensor) -> tuple[Tensor, Tensor]:
        return torch.arange(len(active)), table[active, base.shape[1]]

    return _grow(adapter, problem, propose, max_steps, max_tokens_per_batch, top_1,
                 frozenset(top_1_skip_source), group_by_length, reuse_prefix)


def top_k_rationales(adapter: ModelAdapter, problem: RationalizationProblem,
                     orders: dict[int, Sequence[int]], k: int,
                     max_tokens_per_batch: int | None = None) -> list[TargetRationale]:
    """The first `k` codes of each target's order (all of a shorter context), with no search.

    For when speed is all that matters. One batched forward pass of these subsets records the
    prediction each gives and whether it is the goal (`reached_argmax`); it chooses nothing.

    Args:
        adapter: the model.
        problem: the token ids and the targets.
        orders: per target position, its context codes in order of importance (the previous
            target token first).
        k: the number of codes to take, at least 1.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.

    Returns:
        One rationale per target, in the order of `problem.targets`, each with one step that
            records its whole subset.

    Raises:
        ValueError: `k` is not a positive integer.
    """
    check_positive_int(k, "top_k")
    targets = list(problem.targets)
    chosen = [list(orders[t])[:k] for t in targets]
    goals = [problem.goal(t) for t in targets]
    scores = score_subsets(adapter, problem, chosen, goals, max_tokens_per_batch)
    results = []
    for i, t in enumerate(targets):
        rationale = [problem.decode_code(c) for c in chosen[i]]
        prediction = int(scores.prediction[i])
        step = SearchStep(rationale_size=len(rationale), added=None, prediction=prediction,
                          prediction_prob=float(scores.prediction_prob[i]),
                          true_token_prob=float(scores.goal_prob[i]), subset=rationale)
        results.append(TargetRationale(target_position=t, goal_id=goals[i],
                                       rationale=rationale, steps=[step],
                                       reached_argmax=prediction == goals[i]))
    return results


def count_exhaustive_subsets(problem: RationalizationProblem, max_steps: int) -> int:
    """An upper bound of the number of subsets
    [`exhaustive_search`][sequential_rationales.search.exhaustive_search] scores.

    Per target with `C` context tokens, the sum over sizes `k <= max_steps` of
    `binomial(C - 1, k - 1)`; the bound is reached only if no target stops early (a target
    stops once a size reaches its argmax).

    Args:
        problem: the token ids and the targets.
        max_steps: the largest subset size.

    Returns:
        The number of subsets.
    """
    return sum(math.comb(problem.context_size(t) - 1, k - 1)
               for t in problem.targets for k in range(1, max_steps + 1))


def check_exhaustive_size(problem: RationalizationProblem, max_steps: int,
                          max_subsets: int = DEFAULT_MAX_SUBSETS) -> int:
    """Count the subsets of an exhaustive search before it starts, refusing a search that is
    too large.

    A search that would run for hours says so before it starts instead of running silently.

    Args:
        problem: the token ids and the targets.
        max_steps: the largest subset size.
        max_subsets: the most subsets allowed.

    Returns:
        The count of
            [`count_exhaustive_subsets`][sequential_rationales.search.count_exhaustive_subsets].

    Raises:
        ValueError: the count exceeds `max_subsets`; the message says how to proceed.

    Warns:
        RuntimeWarning: the count exceeds `WARN_SUBSETS` (100,000).
    """
    total = count_exhaustive_subsets(problem, max_steps)
    context = max(problem.context_size(t) for t in problem.targets)
    what = (f"exhaustive search with max_steps={max_steps} would score up to {total:,} subsets "
            f"({len(problem.targets)} target(s), contexts of up to {context} tokens)")
    if total > max_subsets:
        raise ValueError(f"{what}, more than max_subsets={max_subsets:,}; lower max_steps, "
                         f"use greedy search, or raise max_subsets to {total} (--max-subsets "
                         f"{total} on the command line) to run it anyway")
    if total > WARN_SUBSETS:
        warnings.warn(f"{what}; this may take long", RuntimeWarning, stacklevel=3)
    return total


class _StderrLine:
    """A progress line on stderr, rewritten in place (the core does not depend on tqdm); for
    greedy search each call is one step."""

    def __init__(self, search: str, unit: str) -> None:
        self.search, self.unit, self.calls = search, unit, 0

    def __call__(self, done: int, total: int) -> None:
        self.calls += 1
        step = f"step {self.calls}, " if self.search == "greedy" else ""
        end = "\n" if done >= total else ""
        print(f"\r{self.search} search: {step}{done:,}/{total:,} {self.unit} "
              f"({100 * done / max(total, 1):.0f}%)", end=end, file=sys.stderr, flush=True)


def _progress_callback(progress: bool | Progress | None, search: str, unit: str
                       ) -> Progress | None:
    """`progress`: a `(done, total)` callback, `True` for a line on stderr, `False` for
    nothing, `None` for a line on stderr only when stderr is a terminal."""
    if callable(progress):
        return progress
    if progress is None:
        progress = sys.stderr.isatty()
    return _StderrLine(search, unit) if progress else None


def exhaustive_search(adapter: ModelAdapter, problem: RationalizationProblem, max_steps: int = 6,
                      max_tokens_per_batch: int | None = None, group_by_length: bool = True,
                      max_subsets: int = DEFAULT_MAX_SUBSETS,
                      progress: bool | Progress | None = None, precision: str = "auto",
                      screening: dict | None = None) -> list[TargetRationale]:
    """Exact minimum-size rationales, by trying every subset that contains `t-1`.

    Subsets of size 1, 2, ..., `max_steps` are tried in turn. Among the sufficient subsets of
    the smallest size, the one with the highest `p(y_t)` is returned (ties: the first in
    enumeration order). A target with no sufficient subset within `max_steps` gets the most
    probable subset of the largest size tried and `reached_argmax=False`.

    The number of subsets grows as `binomial(context, size - 1)`: above `max_subsets`
    (counted up front by
    [`count_exhaustive_subsets`][sequential_rationales.search.count_exhaustive_subsets]) the
    search refuses to start, and above 100,000 it warns.

    Args:
        adapter: the model.
        problem: the token ids and the targets.
        max_steps: the largest subset size.
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.
        group_by_length: batch only rows of equal length together (no padding or masks).
        max_subsets: the most subsets the search may score.
        progress: reports `(subsets scored, upper bound)` after each forward pass: a
            `(done, total)` callback, `True` for a line on stderr, `False` for nothing,
            `None` (the default) for a line only when stderr is a terminal. The bound is
            reached only if no target stops early.
        precision: as for [`greedy_search`][sequential_rationales.search.greedy_search];
            under `"bf16-exact"` the subsets that could decide a size are re-scored
            (`Screen.deciding_rows`).
        screening: as for `greedy_search`.

    Returns:
        One rationale per target, in the order of `problem.targets`: the previous token
            first, then the other codes in order (source before target). Its steps hold the
            best subset of each size tried.

    Raises:
        ValueError: `max_steps` or `max_subsets` is not a positive integer, the search would
            score more than `max_subsets` subsets, an unknown precision or one the adapter
            cannot run, or the model returns NaN or infinite log-probabilities.
    """
    check_positive_int(max_steps, "max_steps")
    check_positive_int(max_subsets, "max_subsets")
    adapter, precision = precision_adapter(adapter, precision)
    total = check_exhaustive_size(problem, max_steps, max_subsets)
    report = _progress_callback(progress, "exhaustive", "subsets")
    scorer = SubsetScorer(adapter, problem, max_tokens_per_batch, group_by_length)
    screen = _screen(adapter, scorer, precision)
    scored = [0]
    if report is not None:  # after every forward pass, so the batches stay as they are
        def count(rows: int) -> None:
            scored[0] += rows
            report(min(scored[0], total), total)
        (scorer if screen is None else screen.rough).on_rows = count
    targets = list(problem.targets)
    goals = problem.target_ids[torch.tensor(targets, dtype=torch.long)].long()
    rationale: dict[int, Tensor] = {}
    steps: list[list[SearchStep]] = [[] for _ in targets]
    reached = [False] * len(targets)
    active = list(range(len(targets)))
    for size in range(1, max_steps + 1):
        best_any, best_ok = _search_size(problem, scorer, screen, targets, goals, active, size)
        still_active = []
        for i in active:
            if not best_any.found[i]:  # no subset of this size exists: the context is exhausted
                continue
            ok = bool(best_ok.found[i])
            chosen = best_ok if ok else best_any
            goal_lp, prediction, prediction_lp = chosen.table[i].tolist()
            rationale[i] = chosen.codes[i]
            reached[i] = ok
            steps[i].append(SearchStep(
                rationale_size=size, added=None, prediction=int(prediction),
                prediction_prob=math.exp(prediction_lp), true_token_prob=math.exp(goal_lp),
                subset=[problem.decode_code(c) for c in chosen.codes[i].tolist()]))
            if not ok:
                still_active.append(i)
        active = still_active
        if not active:
            break
    if report is not None and scored[0] < total:
        report(total, total)  # the targets stopped early: the search is complete
    if screen is not None and screening is not None:
        screening.update(screen.statistics())
    results = []
    for i, t in enumerate(targets):
        prev = problem.previous_code(t)
        codes = [prev] + [c for c in rationale[i].tolist() if c != prev]
        results.append(TargetRationale(
            target_position=t, goal_id=int(goals[i]),
            rationale=[problem.decode_code(c) for c in codes], steps=steps[i],
            reached_argmax=reached[i]))
    return results


def _search_size(problem: RationalizationProblem, scorer: SubsetScorer, screen: Screen | None,
                 targets: list[int], goals: Tensor, active: list[int], size: int
                 ) -> tuple[_RunningBest, _RunningBest]:
    """Score every subset of `size` of the active targets: per target, the best row overall
    and the best row that reaches the argmax, in enumeration order (ties: the first).
    Under a screen, only the rows that could decide are kept; when its margin widens the size
    is searched again, since rows left out under the narrower margin might decide."""
    while True:
        best_any = _RunningBest(len(targets), size)
        best_ok = _RunningBest(len(targets), size)
        top = torch.full((len(targets),), float("-inf"), dtype=torch.float64)

        def rows() -> Iterable[tuple[int, tuple[int, ...]]]:
            for i in active:
                prev = problem.previous_code(targets[i])
                others = [c for c in range(problem.context_size(targets[i])) if c != prev]
                for combo in itertools.combinations(others, size - 1):
                    yield i, (*combo, prev)

        stream = rows()
        while chunk := list(itertools.islice(stream, max(1, _ROWS_ELEMENTS // size))):
            owners = torch.tensor([i for i, _ in chunk], dtype=torch.long)
            codes = torch.sort(torch.tensor([c for _, c in chunk], dtype=torch.long)
                               .view(len(chunk), size), dim=1).values
            if screen is None:
                table = scorer(codes, goals[owners])
                _check_finite(table)
            else:
                deciding = screen.deciding_rows(codes, goals[owners], owners, top)
                if deciding is None:
                    break
                rows_kept, table = deciding
                owners, codes = owners[rows_kept], codes[rows_kept]
            best_any.update(owners, codes, table, table[:, 0])
            ok = table[:, 1].long() == goals[owners]
            best_ok.update(owners, codes, table, table[:, 0], valid=ok)
        else:
            return best_any, best_ok


class _RunningBest:
    """Per target, the row with the largest value seen so far (ties: the first one seen)."""

    def __init__(self, num_targets: int, size: int) -> None:
        self.value = torch.full((num_targets,), float("-inf"), dtype=torch.float64)
        self.found = torch.zeros(num_targets, dtype=torch.bool)
        self.codes = torch.zeros(num_targets, size, dtype=torch.long)
        self.table = torch.zeros(num_targets, 3, dtype=torch.float64)

    def update(self, owners: Tensor, codes: Tensor, table: Tensor, values: Tensor,
               valid: Tensor | None = None) -> None:
        if valid is not None:
            owners, codes, table, values = owners[valid], codes[valid], table[valid], \
                values[valid]
        if not len(owners):
            return
        best, first = _first_best(values, owners, len(self.value))
        seen = first < len(values)
        better = seen & (~self.found | (best > self.value))
        rows = first[better]
        self.value[better] = best[better]
        self.codes[better] = codes[rows]
        self.table[better] = table[rows]
        self.found |= seen
