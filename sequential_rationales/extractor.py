"""A learned rationale extractor: amortized rationales for sequential predictions (UNIREX's
extractor, Chan et al., 2022, adapted to next-token predictions).

Greedy search scores about (rationale length x context length) subsets per target. The
extractor ([`RationaleExtractor`][sequential_rationales.extractor.RationaleExtractor]) ranks
the whole context of every target of a sequence at once, from the hidden states of one
forward pass of the frozen model over the full sequence. The method `amortized` adds tokens
in this order until the argmax condition holds, so its rationales satisfy the paper's
condition; with `top_k` it returns the first `k` with no search.

Training ([`train_extractor`][sequential_rationales.extractor.train_extractor],
[`Objectives`][sequential_rationales.extractor.Objectives]) distills a teacher's rationales
(the Plackett-Luce likelihood of the order in which the teacher, greedy search by default,
added its tokens, the previous token, always first, left out) and can add UNIREX's
faithfulness objectives and, fine-tuning the model jointly, its task loss.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn

from .adapter import MASKED_FORWARDS, ModelAdapter
from .results import SOURCE, TARGET, SequenceRationales
from .search import RationalizationProblem, build_batch, score_subsets
from .validation import InputError, check_positive_int

CONFIG_FILE = "extractor.json"
WEIGHTS_FILE = "extractor.pt"
EXACT_DISTANCES = 8
"""Distances below this have a bias bucket each; longer ones share four buckets per
doubling."""


def distance_bucket(distance: Tensor, buckets: int) -> Tensor:
    """The bias bucket of each distance.

    Args:
        distance: Distances (negative ones count as 0).
        buckets: Number of buckets; larger distances share the last one.

    Returns:
        `long` buckets of `distance`'s shape: the distance itself below
            [`EXACT_DISTANCES`][sequential_rationales.extractor.EXACT_DISTANCES] (8), then four
            buckets per doubling, the last one open-ended.
    """
    d = distance.clamp(min=0).float()
    far = EXACT_DISTANCES + (4 * torch.log2(d.clamp(min=EXACT_DISTANCES) / EXACT_DISTANCES)).long()
    return torch.where(d < EXACT_DISTANCES, d.long(), far).clamp(max=buckets - 1)


@dataclass(frozen=True)
class ExtractorConfig:
    """The shape of a [`RationaleExtractor`][sequential_rationales.extractor.RationaleExtractor].

    Saved as `extractor.json` beside the weights.

    Attributes:
        hidden_size: Width `D` of the model's hidden states (set by `train_extractor` from the
            model).
        rank: Width `r` of the query and key maps.
        layer: The block whose output the queries read; `-1`: the last.
        buckets: Number of distance buckets of the learned biases.
        conditional: Whether the extractor serves a translation model (source codes too).
        key_layer: The block whose output the keys read; `None`: `layer`. An early block's
            states still say which token sits where, where the last block's say what comes next:
            on Majority Class and on a copy task, keys from block 0 (the default) agreed with
            greedy more often than keys from the last block.
    """

    hidden_size: int
    rank: int = 32
    layer: int = -1  # the block whose output is read; -1: the last
    buckets: int = 32
    conditional: bool = False  # a translation model: source codes too
    # The keys' block (None: ``layer``). An early block's states still say which token sits
    # where, where the last block's say what comes next: on Majority Class and on a copy task,
    # keys from block 0 agreed with greedy more often than keys from the last block.
    key_layer: int | None = 0


class RationaleExtractor(nn.Module):
    """Scores of every context code for the prediction at every target position.

    For target `t` (predicted at position `t - 1`) and a context code `c <= t - 1`:

    ```text
    score(t, c) = q(h_{t-1}) . k(g_c) / sqrt(r) + b(t - 1 - c)
    ```

    `h` and `g` are the states at the output of a block, layer-normalized without affine
    parameters: `h` the last block's by default (what the model is about to predict), `g` the
    first block's (which token sits where); the state at position `i` is the same in every row
    that holds positions `0..i` (causal attention), so one pass serves every target. `q` and
    `k` map them to rank `r`; `b` is a learned bias per distance bucket (each distance up to
    8, then four buckets per doubling), the recency prior greedy rationales share.

    Translation models: the keys of the source codes are the encoder's states at the output of
    the same block, through a key map of their own (encoder and decoder states differ), and
    their bias is learned per bucket of the distance from the diagonal, `|s - (t - 1) * S / T|`
    (source position `s` of `S`, target `t` of `T`), the monotone-alignment prior.

    Args:
        config: The extractor's shape.

    Attributes:
        config: The extractor's shape.
    """

    def __init__(self, config: ExtractorConfig) -> None:
        super().__init__()
        self.config = config
        self.norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False)
        self.query = nn.Linear(config.hidden_size, config.rank)
        self.key = nn.Linear(config.hidden_size, config.rank)
        self.distance_bias = nn.Parameter(torch.zeros(config.buckets))
        if config.conditional:
            self.source_key = nn.Linear(config.hidden_size, config.rank)
            self.diagonal_bias = nn.Parameter(torch.zeros(config.buckets))

    def forward(self, hidden: Tensor, num_source: int = 0) -> Tensor:
        """Score every context code for every target position.

        Args:
            hidden: `[S + T, D]` the states of the context codes (source, then target), or
                `[2, S + T, D]`: those the queries read, then those the keys read (see
                [`hidden_states`][sequential_rationales.extractor.hidden_states]).
            num_source: Number `S` of source codes (0 for a language model).

        Returns:
            `[T, S + T]` scores: row `t - 1` scores the codes for target `t` (columns: the `S`
                source codes, then the target positions), `-inf` beyond the context.

        Raises:
            InputError: When `num_source > 0` but the extractor was trained for a language model.
        """
        if num_source and not self.config.conditional:
            raise InputError("this extractor was trained for a language model; train one for "
                             "the translation model")
        h = self.norm(hidden.float())
        h_query, h_key = (h[0], h[1]) if h.dim() == 3 else (h, h)
        target = h_query[num_source:]
        keys = self.key(h_key[num_source:])
        if self.config.conditional:
            keys = torch.cat([self.source_key(h_key[:num_source]), keys])
        scores = self.query(target) @ keys.T / math.sqrt(self.config.rank)
        rows = torch.arange(len(target), device=h.device)
        distance = rows[:, None] - rows[None, :]
        bias = self.distance_bias[distance_bucket(distance, self.config.buckets)]
        bias = bias.masked_fill(distance < 0, float("-inf"))
        if num_source:
            diagonal = rows[:, None] * (num_source / len(target))
            off = (torch.arange(num_source, device=h.device)[None] - diagonal).abs().round()
            bias = torch.cat([self.diagonal_bias[distance_bucket(off, self.config.buckets)],
                              bias], 1)
        return scores + bias

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the extractor's weights (`extractor.pt`) and configuration (`extractor.json`).

        Args:
            directory: The folder to write to (created if missing).

        Returns:
            The folder.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(self.state_dict(), directory / WEIGHTS_FILE)
        (directory / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike, device: torch.device | str = "cpu"
             ) -> RationaleExtractor:
        """Load an extractor that `save` wrote.

        Args:
            directory: The folder holding `extractor.json` and `extractor.pt`.
            device: Where to put the weights.

        Returns:
            The extractor, in eval mode.

        Raises:
            InputError: When the folder holds no extractor or its configuration is invalid.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file():
            raise InputError(f"{directory} holds no rationale extractor ({CONFIG_FILE} is "
                             "missing); train one with rationales-train-rationalizer")
        try:  # files without key_layer were written when keys read ``layer``
            config = ExtractorConfig(**{"key_layer": None,
                                        **json.loads(config_path.read_text())})
        except (TypeError, ValueError) as error:
            raise InputError(f"{config_path} is not an extractor configuration ({error})"
                             ) from None
        extractor = cls(config)
        state = torch.load(directory / WEIGHTS_FILE, map_location=device, weights_only=True)
        extractor.load_state_dict(state)
        return extractor.to(device).eval()


@torch.no_grad()
def hidden_states(adapter: ModelAdapter, problem: RationalizationProblem, layer: int = -1,
                  key_layer: int | None = None) -> Tensor:
    """Hidden states of every context code, from one pass over the full sequence (one row).

    Args:
        adapter: The model's adapter, with `layers()`.
        problem: The sequence.
        layer: The block whose output is read, in the encoder (for the `S` source codes) and in
            the decoder (for the `T` target positions); negative counts from the end.
        key_layer: A second block to read; `None`: none.

    Returns:
        `[S + T, D]` states (source codes first); with a `key_layer`, `[2, S + T, D]`: those
            of `layer`, then those of `key_layer`.

    Raises:
        InputError: When the adapter has no `layers()`.
    """
    layers = getattr(adapter, "layers", None)
    if layers is None:
        raise InputError(f"the rationale extractor reads the model's hidden states (a layers() "
                         f"method), which {type(adapter).__name__} does not have")
    sides = ("source", "target") if problem.num_source else ("target",)
    requested = [layer] if key_layer is None else [layer, key_layer]
    blocks = {side: layers()[side] for side in sides}

    def block_index(index: int, side: str) -> int:  # -1 and 0 may name one block
        return index % len(blocks[side])

    captured: dict[tuple[int, str], Tensor] = {}
    with contextlib.ExitStack() as stack:
        for index, side in {(block_index(i, side), side) for i in requested for side in sides}:
            stack.enter_context(_output_of(
                blocks[side][index], lambda out, key=(index, side): captured.update({key: out})))
        codes = tuple(range(problem.num_source + len(problem.target_ids)))
        adapter.log_probs(build_batch(problem, [codes]).to(adapter.device))
    time_major = getattr(adapter, "hidden_time_major", False)
    lengths = {"source": problem.num_source, "target": len(problem.target_ids)}

    def row(index: int, side: str) -> Tensor:  # one row of every code: no padding
        states = captured[block_index(index, side), side]
        return (states[:, 0] if time_major else states[0])[:lengths[side]]

    states = [torch.cat([row(index, side) for side in sides]) for index in requested]
    return (states[0] if len(states) == 1 else torch.stack(states)).detach()


@contextlib.contextmanager
def _output_of(block: nn.Module, keep: Callable[[Tensor], None]) -> Iterator[None]:
    """While active, `keep` hears the hidden state each call of `block` returns, also
    through the masked paths that module hooks do not see (`MASKED_FORWARDS`)."""
    def first(output: object) -> Tensor:
        return output[0] if isinstance(output, tuple) else output

    handle = block.register_forward_hook(lambda _module, _args, output: keep(first(output)))
    wrapped = [name for name in MASKED_FORWARDS if hasattr(block, name)]
    for name in wrapped:
        setattr(block, name, _watched(getattr(block, name), lambda out: keep(first(out))))
    try:
        yield
    finally:
        handle.remove()
        for name in wrapped:
            delattr(block, name)


def _watched(method: Callable, hear: Callable[[object], None]) -> Callable:
    def run(*args: object, **kwargs: object) -> object:
        output = method(*args, **kwargs)
        hear(output)
        return output
    return run


def extractor_scores(extractor: RationaleExtractor, adapter: ModelAdapter,
                     problem: RationalizationProblem) -> dict[int, Tensor]:
    """The extractor's scores of each target's context codes.

    Args:
        extractor: A trained extractor.
        adapter: The adapter of the model it was trained for.
        problem: The sequence and its targets.

    Returns:
        For each target `t`, `[S + t]` scores of the codes `0 .. S + t - 1`, on the host.

    Raises:
        InputError: When the extractor was trained for another kind or size of model, or the
            adapter has no `layers()`.
    """
    check_extractor_fits(extractor, adapter)
    hidden = hidden_states(adapter, problem, extractor.config.layer,
                           extractor.config.key_layer)
    if hidden.shape[-1] != extractor.config.hidden_size:
        raise InputError(f"the extractor reads hidden states of size "
                         f"{extractor.config.hidden_size}, this model's are {hidden.shape[-1]}: "
                         "it was trained for another model")
    device = next(extractor.parameters()).device
    with torch.no_grad():
        scores = extractor(hidden.to(device), problem.num_source).cpu()
    return {t: scores[t - 1, :problem.context_size(t)] for t in problem.targets}


def check_extractor_fits(extractor: RationaleExtractor, adapter: ModelAdapter) -> None:
    """Check that an extractor serves the kind of model it was trained for.

    Args:
        extractor: The extractor.
        adapter: The model's adapter.

    Raises:
        InputError: When one is for a language model and the other for a translation model.
    """
    if extractor.config.conditional != bool(adapter.is_conditional):
        trained = "a translation" if extractor.config.conditional else "a language"
        raise InputError(f"this extractor was trained for {trained} model; train one for this "
                         "model with rationales-train-rationalizer")


def order_loss(scores: Tensor, targets: Sequence[int], orders: Sequence[Sequence[int]]) -> Tensor:
    """Mean negative Plackett-Luce log-likelihood of each teacher order under `scores`.

    The first code of each order, the previous token, is left out: every rationale starts with it.

    Args:
        scores: `[T, S + T]` extractor scores.
        targets: The target of each order.
        orders: Each target's context codes in the order the teacher added them.

    Returns:
        The mean over the ranked picks (a scalar); 0 (still in the graph) when no order holds
            more than one token.
    """
    longest = max((len(o) for o in orders), default=0)
    if longest < 2:  # nothing to rank: a zero that keeps the graph (and its -inf out)
        return scores.masked_fill(~torch.isfinite(scores), 0.0).sum() * 0.0
    rows = scores[torch.tensor([t - 1 for t in targets], device=scores.device)]  # [n, T]
    order = torch.full((len(orders), longest), -1, dtype=torch.long)
    for i, o in enumerate(orders):
        order[i, :len(o)] = torch.tensor(list(o))
    order = order.to(scores.device)
    available = torch.isfinite(rows)
    available = available.scatter(1, order[:, :1].clamp(min=0), False)
    total, count = rows.new_zeros(()), 0
    for j in range(1, longest):
        picked = order[:, j]
        valid = picked >= 0
        if not bool(valid.any()):
            break
        logits = rows.masked_fill(~available, float("-inf"))
        chosen = logits.gather(1, picked.clamp(min=0)[:, None])[:, 0]
        nll = torch.logsumexp(logits, 1) - chosen
        total = total + nll[valid].sum()
        count += int(valid.sum())
        taken = torch.zeros_like(available).scatter(1, picked.clamp(min=0)[:, None], True)
        available = available & ~(taken & valid[:, None])
    return total / max(count, 1)


def gold_loss(scores: Tensor, targets: Sequence[int], gold: Sequence[Sequence[int]],
              previous: Sequence[int]) -> Tensor:
    """How unlikely the extractor's first pick after the previous token is to be a gold code.

    Args:
        scores: `[T, S + T]` extractor scores.
        targets: The targets with gold rationales.
        gold: Each target's gold codes (any of them is right).
        previous: Each target's previous-token code.

    Returns:
        The mean over targets of `-log` the Plackett-Luce probability that the first pick is
            a gold code; targets whose gold holds nothing but the previous token contribute
            nothing (0 when none is left).
    """
    terms = []
    for t, codes, prev in zip(targets, gold, previous, strict=True):
        wanted = sorted(set(codes) - {prev})
        if not wanted:
            continue
        row = scores[t - 1].clone()
        row[prev] = float("-inf")
        terms.append(torch.logsumexp(row, 0) - torch.logsumexp(row[wanted], 0))
    if not terms:
        return scores.masked_fill(~torch.isfinite(scores), 0.0).sum() * 0.0
    return torch.stack(terms).mean()


@dataclass
class TeacherSequence:
    """A sequence and its teacher's rationales, to train an extractor on.

    Attributes:
        problem: The sequence.
        orders: Per target, its rationale's context codes in the order added.
        gold: Where a task has them, per target its gold rationale codes (a set: any of them is
            right, in any order); `None`: none.
    """

    problem: RationalizationProblem
    orders: dict[int, list[int]]
    gold: dict[int, list[int]] | None = None

    @classmethod
    def from_result(cls, problem: RationalizationProblem, result: SequenceRationales
                    ) -> TeacherSequence:
        """The teacher orders of a method's result on `problem`, as context codes.

        Targets whose rationale never reached the argmax are left out: their order is a search that
        ran out of context, not a rationale.

        Args:
            problem: The sequence the result was computed for.
            result: The teacher's result.

        Returns:
            A teacher sequence without gold rationales.
        """
        offset = {SOURCE: 0, TARGET: problem.num_source}
        return cls(problem, {r.target_position: [offset[c.stream] + c.position
                                                 for c in r.rationale]
                             for r in result.rationales if r.reached_argmax})


AdapterSource = ModelAdapter | Callable[[RationalizationProblem], ModelAdapter]


def adapter_of(adapter: AdapterSource, problem: RationalizationProblem) -> ModelAdapter:
    """The adapter for `problem`.

    Args:
        adapter: An adapter, or a function that gives the adapter of a problem (a translation
            model's adapter may depend on the source, as fairseq's does on its length).
        problem: The sequence.

    Returns:
        `adapter` itself, or the function's adapter for `problem`.
    """
    return adapter if isinstance(adapter, ModelAdapter) else adapter(problem)


@dataclass(frozen=True)
class Objectives:
    """Weights of the training objectives: UNIREX's, adapted to next-token predictions.

    * `order` (plausibility): the Plackett-Luce likelihood of the teacher's order;
      `gold` (plausibility, where a task has gold rationales): the likelihood that the first
      pick after the previous token is a gold token
      ([`gold_loss`][sequential_rationales.extractor.gold_loss]).
    * `sufficiency` and `comprehensiveness` (faithfulness): rationales are drawn from the
      extractor's own ranking (Plackett-Luce samples of the teacher's rationale size; the
      previous token first) and scored by the model: `log p(y_t)` given only them, and minus
      `log p(y_t)` given the context without them. The model sees each drawn subset exactly
      as the paper's objective has it (its tokens at their original positions, nothing else
      visible), never a soft mask it was not trained on, so the gradient reaches the extractor
      through the score-function estimator: each sample's log-likelihood weighted by its reward
      minus the mean reward of the target's other samples.
    * `task`: the model's own loss, `-log p(y_t)` given the full context, when the model is
      fine-tuned jointly (`finetune=True`); the model then also learns from the sufficiency
      term (`-log p(y_t)` given the drawn rationales).

    Attributes:
        order: Weight of the teacher-order likelihood.
        gold: Weight of the gold-pick likelihood.
        sufficiency: Weight of the sufficiency reward.
        comprehensiveness: Weight of the comprehensiveness reward.
        task: Weight of the model's own loss (needs `finetune=True`).
        samples: Rationales drawn per target, at least 2 (each sample's reward is measured
            against the others').
        targets: Targets of each sequence per step that draw rationales (and take the task
            loss), at least 1.

    Raises:
        InputError: When a weight is negative or not a finite number, `targets < 1` or
            `samples < 2`.
    """

    order: float = 1.0
    gold: float = 0.0
    sufficiency: float = 0.0
    comprehensiveness: float = 0.0
    task: float = 0.0
    samples: int = 4
    targets: int = 4

    def __post_init__(self) -> None:
        for name in ("order", "gold", "sufficiency", "comprehensiveness", "task"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"the {name} weight must be a number >= 0, got {value!r}")
        check_positive_int(self.targets, "targets")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or \
                self.samples < 2:
            raise InputError(f"samples must be an integer >= 2 (each sample's reward is "
                             f"measured against the others'), got {self.samples!r}")

    @property
    def faithful(self) -> bool:
        """Whether a faithfulness objective (sufficiency or comprehensiveness) has a weight."""
        return self.sufficiency > 0 or self.comprehensiveness > 0


def train_extractor(adapter: AdapterSource, sequences: Sequence[TeacherSequence],
                    config: ExtractorConfig | None = None, steps: int = 500, lr: float = 3e-3,
                    seed: int = 0, batch_sequences: int = 8,
                    extractor: RationaleExtractor | None = None,
                    optimizer_state: dict | None = None, start_step: int = 0,
                    on_step: Callable[..., None] | None = None,
                    objectives: Objectives | None = None, finetune: bool = False,
                    model_lr: float = 1e-5) -> RationaleExtractor:
    """Train an extractor on the teachers' rationales.

    By default the objective is the teacher's order only (see
    [`Objectives`][sequential_rationales.extractor.Objectives]). The model stays frozen (its
    hidden states are computed once) unless `finetune`: then its weights train too (learning
    rate `model_lr`, the same optimizer) and the hidden states are recomputed at every step.
    Each step averages the losses of `batch_sequences` sequences drawn with `seed`.

    Args:
        adapter: The model's adapter, or a function giving each problem's (see
            `adapter_of`).
        sequences: The teachers' rationales.
        config: The extractor's shape (its `hidden_size` and `conditional` are taken from the
            model); `None`: the defaults. Ignored when `extractor` is given.
        steps: The step to stop after (counting resumed steps).
        lr: Adam's learning rate for the extractor.
        seed: Seed of the extractor's initialization and of the sequences and rationales drawn.
        batch_sequences: Sequences per step.
        extractor: An extractor to continue training; `None`: a new one.
        optimizer_state: The optimizer's state dict, to resume a run.
        start_step: The step a resumed run starts from: the draws continue where it stopped
            (a fine-tuned model's weights are the caller's to restore).
        on_step: Called after every step as `on_step(step, loss, extractor, optimizer, parts)`,
            `parts` holding each weighted objective's value (for progress, logs, checkpoints).
        objectives: The training objectives; `None`: the teacher's order only.
        finetune: Whether the model's weights train too.
        model_lr: The model's learning rate when fine-tuning.

    Returns:
        The trained extractor, in eval mode.

    Raises:
        InputError: When `sequences` is empty, `finetune` is asked of an adapter without a
            `model` module, the task objective is weighted without `finetune`, or `extractor`
            was trained for another kind of model.
        ValueError: When `steps < 1`.
    """
    check_positive_int(steps, "steps")
    objectives = objectives or Objectives()
    if not sequences:
        raise InputError("no teacher rationales to train the extractor on")
    first = adapter_of(adapter, sequences[0].problem)
    model = getattr(first, "model", None)
    if finetune and not isinstance(model, nn.Module):
        raise InputError(f"fine-tuning needs the model's weights (an adapter with a model "
                         f"module), which {type(first).__name__} does not expose")
    if objectives.task and not finetune:
        raise InputError("the task objective trains the model: it needs finetune=True")
    if extractor is not None:
        config = extractor.config
        check_extractor_fits(extractor, first)
    layers = (config.layer, config.key_layer) if config is not None else (-1, None)

    def states_of(i: int) -> Tensor:
        problem = sequences[i].problem
        return hidden_states(adapter_of(adapter, problem), problem, *layers)

    states = None if finetune else [states_of(i) for i in range(len(sequences))]
    if extractor is None:  # the hidden size and the kind of model are the model's
        size = (states[0] if states else states_of(0)).shape[-1]
        config = replace(config or ExtractorConfig(0), hidden_size=size,
                         conditional=bool(first.is_conditional))
        torch.manual_seed(seed)
        extractor = RationaleExtractor(config).to(first.device)
    groups = [{"params": list(extractor.parameters()), "lr": lr}]
    if finetune:
        groups.append({"params": [p for p in model.parameters() if p.requires_grad],
                       "lr": model_lr})
    optimizer = torch.optim.Adam(groups)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    draws = random.Random(seed)
    for _ in range(start_step):  # the draws of the steps already taken
        draws.sample(range(len(sequences)), min(batch_sequences, len(sequences)))
    extractor.train()
    for step in range(start_step, steps):
        chosen = draws.sample(range(len(sequences)), min(batch_sequences, len(sequences)))
        noise = torch.Generator().manual_seed(seed * 1_000_003 + step)  # resumable draws
        parts: dict[str, Tensor] = {}
        for i in chosen:
            sequence = sequences[i]
            hidden = states[i] if states is not None else states_of(i)
            scores = extractor(hidden.to(first.device), sequence.problem.num_source)
            terms = sequence_objectives(scores, adapter_of(adapter, sequence.problem),
                                        sequence, objectives, noise, finetune)
            for name, value in terms.items():
                parts[name] = parts.get(name, 0.0) + value / len(chosen)
        loss = torch.stack(list(parts.values())).sum() if parts else torch.zeros(())
        if loss.requires_grad:  # else: no target of these sequences had anything to draw
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()), extractor, optimizer,
                    {name: float(value.detach()) for name, value in parts.items()})
    return extractor.eval()


def sequence_objectives(scores: Tensor, adapter: ModelAdapter, sequence: TeacherSequence,
                        objectives: Objectives, noise: torch.Generator, finetune: bool
                        ) -> dict[str, Tensor]:
    """The weighted objectives of one sequence, from its extractor scores.

    Args:
        scores: `[T, S + T]` extractor scores of the sequence.
        adapter: The model's adapter.
        sequence: The sequence and its teacher's rationales.
        objectives: The weights (see [`Objectives`][sequential_rationales.extractor.Objectives]).
        noise: Generator of the targets and rationales drawn.
        finetune: Whether the model trains too (adds `model_sufficiency`).

    Returns:
        Each weighted objective's value by name (`order`, `gold`, `task`, `faithfulness`,
            `model_sufficiency`), only those that apply.
    """
    problem = sequence.problem
    targets = sorted(sequence.orders)
    terms: dict[str, Tensor] = {}
    if objectives.order:
        terms["order"] = objectives.order * order_loss(
            scores, targets, [sequence.orders[t] for t in targets])
    if objectives.gold and sequence.gold:
        golden = sorted(sequence.gold)
        terms["gold"] = objectives.gold * gold_loss(
            scores, golden, [sequence.gold[t] for t in golden],
            [problem.previous_code(t) for t in golden])
    if not (objectives.faithful or objectives.task):
        return terms
    picked = [targets[j] for j in torch.randperm(len(targets), generator=noise)
              [:objectives.targets].tolist()]
    if objectives.task:
        full = [tuple(range(problem.context_size(t))) for t in picked]
        terms["task"] = objectives.task * -model_log_probs(adapter, problem, full, picked).mean()
    if not objectives.faithful:
        return terms
    drawn, log_likelihoods, owners = [], [], []
    for t in picked:
        size = len(sequence.orders[t])
        if not 1 < size < problem.context_size(t):  # a draw would choose nothing
            continue
        for _ in range(objectives.samples):
            codes, log_likelihood = draw_rationale(scores[t - 1, :problem.context_size(t)],
                                                   problem.previous_code(t), size, noise)
            drawn.append(codes)
            log_likelihoods.append(log_likelihood)
            owners.append(t)
    if not drawn:
        return terms
    goals = [problem.goal(t) for t in owners]
    with torch.no_grad():
        reward = torch.zeros(len(drawn), dtype=torch.float64)
        if objectives.sufficiency:
            kept = score_subsets(adapter, problem, drawn, goals).goal_log_prob
            reward += objectives.sufficiency * kept.cpu()
        if objectives.comprehensiveness:
            rest = [sorted(set(range(problem.context_size(t))) - set(codes))
                    for codes, t in zip(drawn, owners, strict=True)]
            left = score_subsets(adapter, problem, rest, goals).goal_log_prob
            reward -= objectives.comprehensiveness * left.cpu()
    reward = reward.clamp(-1e4, 1e4).view(-1, objectives.samples).float()  # -inf: no support
    others = (reward.sum(1, keepdim=True) - reward) / (objectives.samples - 1)
    advantage = (reward - others).view(-1).to(scores.device)
    terms["faithfulness"] = -(advantage * torch.stack(log_likelihoods)).mean()
    if finetune and objectives.sufficiency:
        terms["model_sufficiency"] = objectives.sufficiency * -model_log_probs(
            adapter, problem, drawn, owners).mean()
    return terms


def draw_rationale(row: Tensor, previous: int, size: int, noise: torch.Generator
                   ) -> tuple[list[int], Tensor]:
    """Draw a rationale from the Plackett-Luce distribution of `row`.

    Args:
        row: `[C]` scores of the target's context codes.
        previous: The previous token's code, always first.
        size: The rationale's size, previous token included.
        noise: Generator of the Gumbel noise.

    Returns:
        The codes (the previous token, then `size - 1` codes by Gumbel-perturbed scores) and
            the log-likelihood of their draw order, differentiable in `row`.
    """
    gumbel = -torch.log(-torch.log(torch.rand(len(row), generator=noise).clamp(1e-12, 1 - 1e-7)))
    keys = row.detach().cpu() + gumbel
    keys[previous] = float("-inf")
    picks = keys.topk(size - 1).indices.tolist()
    available = torch.ones(len(row), dtype=torch.bool, device=row.device)
    available[previous] = False
    log_likelihood = row.new_zeros(())
    for pick in picks:
        log_likelihood = log_likelihood + row[pick] - torch.logsumexp(row[available], 0)
        available = available.clone()  # the mask indexed above stays as autograd saw it
        available[pick] = False
    return [previous, *picks], log_likelihood


def model_log_probs(adapter: ModelAdapter, problem: RationalizationProblem,
                    subsets: Sequence[Sequence[int]], targets: Sequence[int]) -> Tensor:
    """`log p(y_t | subset)` of each (subset, target) pair, with gradients into the model.

    Args:
        adapter: The model's adapter.
        problem: The sequence.
        subsets: Context codes of each subset.
        targets: The target of each subset.

    Returns:
        `[len(subsets)]` log-probabilities.
    """
    out = []
    for codes, t in zip(subsets, targets, strict=True):
        row = RationalizationProblem(problem.target_ids, problem.source_ids, targets=[t])
        log_probs = adapter.log_probs(build_batch(row, [codes]).to(adapter.device))
        out.append(log_probs[0, problem.goal(t)])
    return torch.stack(out)


def sequence_loss(extractor: RationaleExtractor, hidden: Tensor,
                  sequence: TeacherSequence) -> Tensor:
    """[`order_loss`][sequential_rationales.extractor.order_loss] of one sequence's teacher
    orders, from its hidden states.

    Args:
        extractor: The extractor.
        hidden: The sequence's hidden states (see `hidden_states`).
        sequence: The sequence and its teacher's orders.

    Returns:
        The loss (a scalar).
    """
    targets = sorted(sequence.orders)
    scores = extractor(hidden.to(next(extractor.parameters()).device),
                       sequence.problem.num_source)
    return order_loss(scores, targets, [sequence.orders[t] for t in targets])


def mean_order_loss(extractor: RationaleExtractor, adapter: AdapterSource,
                    sequences: Sequence[TeacherSequence]) -> float:
    """[`order_loss`][sequential_rationales.extractor.order_loss] averaged over `sequences`
    (held-out evaluation).

    Args:
        extractor: The extractor.
        adapter: The model's adapter, or a function giving each problem's.
        sequences: Held-out teacher sequences.

    Returns:
        The mean loss (0 for no sequences).
    """
    with torch.no_grad():
        losses = [float(sequence_loss(extractor, hidden_states(
            adapter_of(adapter, s.problem), s.problem, extractor.config.layer,
            extractor.config.key_layer), s))
            for s in sequences]
    return sum(losses) / max(len(losses), 1)


__all__ = ["ExtractorConfig", "Objectives", "RationaleExtractor", "TeacherSequence",
           "distance_bucket", "gold_loss",
           "extractor_scores", "hidden_states", "mean_order_loss", "order_loss",
           "train_extractor"]
