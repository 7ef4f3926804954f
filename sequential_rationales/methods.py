"""Rationalization methods registered by name, and the one entry point that runs them.

[`rationalize`][sequential_rationales.methods.rationalize] runs a method, named as
[`list_methods`][sequential_rationales.methods.list_methods] lists them, on a
[`RationalizationProblem`][sequential_rationales.search.RationalizationProblem]: greedy and
exhaustive search, and orderings of the context (gradient, attention, perturbation, learned and
random scores) turned into rationales by ordered search. New methods are added with
[`register_method`][sequential_rationales.methods.register_method].
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from .adapter import ModelAdapter
from .baselines import BASELINE_SCORERS, importance_order
from .extractor import RationaleExtractor, extractor_scores
from .iba import iba_scores
from .lrp import lrp_scores
from .perturbation import occlusion_scores, random_orders
from .results import SequenceRationales, TargetRationale
from .search import (
    DEFAULT_MAX_SUBSETS,
    Progress,
    RationalizationProblem,
    exhaustive_search,
    greedy_search,
    ordered_search,
    precision_adapter,
    resolve_precision,
    top_k_rationales,
)
from .validation import InputError, check_choice, check_positive_int, check_token_ids

SearchFn = Callable[..., list[TargetRationale]]
#: ``scores_of(adapter, problem, *, max_tokens_per_batch, **options) -> {target: scores}``:
#: an ordering's importance of every context code (higher: added earlier).
ScoreFn = Callable[..., dict]


@dataclass(frozen=True)
class Method:
    """A registered rationalization method, as
    [`get_method`][sequential_rationales.methods.get_method] returns it.

    Attributes:
        name: the name it is registered under.
        run: the search, `run(adapter, problem, *, max_steps, max_tokens_per_batch, ...,
            **_) -> list[TargetRationale]` (see
            [`register_method`][sequential_rationales.methods.register_method]).
        description: one line describing the method.
        scores: for orderings that rank the whole context by scores,
            `scores_of(adapter, problem, *, max_tokens_per_batch, **options)`, which returns
            per target position the importance of every context code (higher: added
            earlier). The rationale stops early; ROAR needs the full ranking. `None` for the
            other methods.
        ranks: whether the method orders the context (those take `top_k`).
    """

    name: str
    run: SearchFn
    description: str
    scores: ScoreFn | None = None
    ranks: bool = False


_REGISTRY: dict[str, Method] = {}


def register_method(name: str, description: str, scores: ScoreFn | None = None,
                    ranks: bool = False) -> Callable[[SearchFn], SearchFn]:
    """Return a decorator that registers a search function as a method under `name`.

    The decorated function is called as `fn(adapter, problem, *, max_steps,
    max_tokens_per_batch, top_1, top_1_skip_source, integrated_gradient_steps, reuse_prefix,
    max_subsets, progress, seed, precision, screening, extractor, **_)` and returns one
    [`TargetRationale`][sequential_rationales.results.TargetRationale] per target of
    `problem` (the `**_` takes the options of other methods). A method that ranks the context
    also takes `top_k`.

    Args:
        name: the method's name, as `rationalize(method=...)` takes it.
        description: one line describing the method.
        scores: for an ordering of the context by scores, the function that computes them
            (see [`Method`][sequential_rationales.methods.Method]).
        ranks: whether the method orders the context; implied by `scores`.

    Returns:
        A decorator that registers the function and returns it unchanged. It raises
            `ValueError` when `name` is already registered.
    """
    def wrap(fn: SearchFn) -> SearchFn:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = Method(name, fn, description, scores, ranks or scores is not None)
        return fn
    return wrap


def list_methods() -> list[str]:
    """The names of all registered rationalization methods, in registration order (e.g. for a
    command line's `choices`)."""
    return list(_REGISTRY)


def get_method(name: str) -> Method:
    """Look a registered method up by name.

    Args:
        name: a name from [`list_methods`][sequential_rationales.methods.list_methods].

    Returns:
        The registered method.

    Raises:
        ValueError: no method is registered under `name`; the message lists the names.
    """
    return _REGISTRY[check_choice(name, "method", list_methods())]


@register_method("greedy", "greedy rationalization (the paper's method)")
def _greedy(adapter, problem, *, max_steps, max_tokens_per_batch, top_1=False,
            top_1_skip_source=(), reuse_prefix=True, progress=None, precision="fp32",
            screening=None, **_):
    return greedy_search(adapter, problem, max_steps, max_tokens_per_batch, top_1,
                         top_1_skip_source, reuse_prefix=reuse_prefix, progress=progress,
                         precision=precision, screening=screening)


@register_method("exhaustive", "exact minimum rationales by enumerating subsets (small max_steps)")
def _exhaustive(adapter, problem, *, max_steps, max_tokens_per_batch, top_1=False,
                max_subsets=DEFAULT_MAX_SUBSETS, progress=None, precision="fp32",
                screening=None, **_):
    if top_1:
        raise ValueError("top_1 is not defined for exhaustive search")
    return exhaustive_search(adapter, problem, max_steps, max_tokens_per_batch,
                             max_subsets=max_subsets, progress=progress, precision=precision,
                             screening=screening)


def _ordering(name: str, scores_of: ScoreFn, finite: bool = True) -> SearchFn:
    """A method that ranks the context by ``scores_of(adapter, problem, options)`` and turns the
    order into a rationale by ordered search. ``finite=False`` allows ``+inf`` (occlusion gives
    it to the previous token), never NaN."""
    def run(adapter, problem, *, max_steps, max_tokens_per_batch, top_1=False,
            top_1_skip_source=(), reuse_prefix=True, top_k=None, **options):
        scores = scores_of(adapter, problem, max_tokens_per_batch=max_tokens_per_batch,
                           **options)
        # NaN scores would still sort into an order and pass for a ranking.
        bad = [t for t, v in scores.items()
               if bool((~torch.isfinite(v) if finite else v.isnan()).any())]
        if bad:
            raise ValueError(f"the {name} scores contain NaN or infinite values; check the "
                             "model's weights and inputs")
        orders = {t: importance_order(problem, t, scores[t]) for t in problem.targets}
        if top_k is not None:
            return top_k_rationales(adapter, problem, orders, top_k, max_tokens_per_batch)
        return ordered_search(adapter, problem, orders, max_steps, max_tokens_per_batch, top_1,
                              top_1_skip_source, reuse_prefix=reuse_prefix)
    return run


def _register_ordering(name: str, description: str, scores_of: ScoreFn,
                       finite: bool = True) -> None:
    register_method(name, description, scores_of)(_ordering(name, scores_of, finite))


def _baseline_scores(name: str) -> ScoreFn:
    scorer = BASELINE_SCORERS[name]

    def scores_of(adapter, problem, *, max_tokens_per_batch=None,
                  integrated_gradient_steps=None, **_):
        return scorer(adapter, problem, problem.targets,
                      max_tokens_per_batch=max_tokens_per_batch, steps=integrated_gradient_steps)
    return scores_of


for _name, _desc in [
    ("gradient_norm", "order by the L2 norm of the embedding gradient"),
    ("signed_gradient", "order by gradient x the first layer's input (the paper's code)"),
    ("integrated_gradient", "order by integrated gradients from zero embeddings (the paper's "
                            "code: end points included)"),
    ("attention_rollout", "order by attention rollout"),
    ("last_attention", "order by last-layer attention"),
    ("all_attention", "order by attention averaged over layers and heads"),
    ("signed_gradient_token", "order by gradient x token embedding"),
    ("integrated_gradient_midpoint", "order by integrated gradients, midpoint rule x token "
                                     "embedding"),
]:
    _register_ordering(_name, _desc, _baseline_scores(_name))

_register_ordering(
    "occlusion", "order by the drop in log p(y_t) when each token is left out",
    lambda adapter, problem, *, max_tokens_per_batch=None, **_:
    occlusion_scores(adapter, problem, problem.targets, max_tokens_per_batch), finite=False)
_register_ordering(
    "lrp", "order by layer-wise relevance (AttnLRP rules) for the logit of y_t",
    lambda adapter, problem, *, max_tokens_per_batch=None, **_:
    lrp_scores(adapter, problem, problem.targets, max_tokens_per_batch))
_register_ordering(
    "iba", "order by the information that passes a noise bottleneck at the input of the "
           "middle block (IBA, Schulz et al., 2020), seeded",
    lambda adapter, problem, *, max_tokens_per_batch=None, seed=0, **_:
    iba_scores(adapter, problem, problem.targets, max_tokens_per_batch, seed=seed))


@register_method("random", "a seeded random order (the floor every method should beat)",
                 ranks=True)
def _random(adapter, problem, *, max_steps, max_tokens_per_batch, top_1=False,
            top_1_skip_source=(), reuse_prefix=True, seed=0, top_k=None, **_):
    orders = random_orders(problem, problem.targets, seed)
    if top_k is not None:
        return top_k_rationales(adapter, problem, orders, top_k, max_tokens_per_batch)
    return ordered_search(adapter, problem, orders, max_steps, max_tokens_per_batch, top_1,
                          top_1_skip_source, reuse_prefix=reuse_prefix)


def _amortized_scores(adapter, problem, *, extractor=None, **_):
    if extractor is None:
        raise InputError("method 'amortized' needs a trained rationale extractor (extractor=, "
                         "rationalize --extractor DIR); train one with "
                         "rationales-train-rationalizer")
    return extractor_scores(extractor, adapter, problem)


_register_ordering("amortized", "order by a learned rationale extractor's scores (one forward "
                   "pass for all targets; needs extractor=)", _amortized_scores)

# The searches that compare many subsets per step, which a bfloat16 screen can thin out.
SCREENED_METHODS = ("greedy", "exhaustive")
# Methods that need a trained artifact besides the model (run them with it).
TRAINED_METHODS = ("amortized",)
# Every registered ordering that needs nothing but the model, turned into a rationale by
# ordered search (the names the seed's baseline functions accept).
BASELINE_METHODS = tuple(n for n in _REGISTRY if n not in SCREENED_METHODS + TRAINED_METHODS)


# Methods that differentiate the model.
GRADIENT_METHODS = ("gradient_norm", "signed_gradient", "integrated_gradient",
                    "signed_gradient_token", "integrated_gradient_midpoint", "lrp", "iba")


def _check_problem_fits(adapter: ModelAdapter, problem: RationalizationProblem) -> None:
    """Token ids within the adapter's vocabularies and positions, where it knows them."""
    vocab = getattr(adapter, "vocab_size", None)
    if vocab is not None:
        check_token_ids(problem.target_ids, "target_ids", vocab,
                        getattr(adapter, "max_positions", None), 2)
    source_vocab = getattr(adapter, "source_vocab_size", None)
    if problem.source_ids is not None and source_vocab is not None:
        check_token_ids(problem.source_ids, "source_ids", source_vocab,
                        getattr(adapter, "max_source_positions", None), 0)


DEFAULT_MAX_STEPS = {"exhaustive": 6}
"""Each method's default `max_steps` where it is not 1024 (the original project's defaults:
exhaustive search stops at subsets of 6 tokens, every other method at 1024)."""


def default_max_steps(method: str) -> int:
    """The `max_steps` a method runs with when none is given.

    Args:
        method: a registered method's name.

    Returns:
        6 for exhaustive search, 1024 for every other method.
    """
    return DEFAULT_MAX_STEPS.get(method, 1024)


def rationalize(adapter: ModelAdapter, problem: RationalizationProblem, method: str = "greedy",
                max_steps: int | None = None, max_tokens_per_batch: int | None = None,
                top_1: bool = False,
                top_1_skip_source: Iterable[int] = (),
                integrated_gradient_steps: int | None = None, reuse_prefix: bool = True,
                max_subsets: int = DEFAULT_MAX_SUBSETS, progress: bool | Progress | None = None,
                seed: int = 0, precision: str = "auto",
                extractor: RationaleExtractor | None = None,
                top_k: int | None = None) -> SequenceRationales:
    """Run a rationalization method on every target of a problem.

    All targets are searched together; candidate subsets are scored in shared batches. The
    options a method does not use are ignored.

    Args:
        adapter: the model.
        problem: the token ids and the target positions to rationalize.
        method: the method's registered name (see
            [`list_methods`][sequential_rationales.methods.list_methods]).
        max_steps: the largest rationale size; a target that has not reached its argmax by
            then stops with `reached_argmax=False`. For exhaustive search, the largest subset
            size tried. `None` (the default): the method's
            [`default_max_steps`][sequential_rationales.methods.default_max_steps] (6 for
            exhaustive search, 1024 for the others).
        max_tokens_per_batch: tokens per forward pass; `None`: 2,048 on CPU, 32,768 on CUDA
            (4,096 on CUDA for passes with gradients). Does not change the results.
        top_1: conditional models only: stop each search as soon as a source token is added
            (to score the first aligned source token), whether or not the argmax is reached.
            Not defined for exhaustive search.
        top_1_skip_source: source positions that do not count for `top_1` (e.g. `</s>`).
        integrated_gradient_steps: the integrated-gradients methods' number of steps; `None`
            takes the adapter's default
            ([`baseline_defaults`][sequential_rationales.baselines.baseline_defaults]).
        reuse_prefix: let greedy and ordered search reuse the keys and values of rationale
            prefixes where the adapter supports it. Does not change the results.
        max_subsets: exhaustive search only: refuse to start a search of more subsets (see
            [`exhaustive_search`][sequential_rationales.search.exhaustive_search]).
        progress: greedy search reports `(targets finished, targets)` after every step,
            exhaustive search `(subsets scored, upper bound)`. A `(done, total)` callback
            receives them; `True` prints a line on stderr, `False` nothing, `None` (the
            default) a line only when stderr is a terminal.
        seed: the `random` method's orders (see
            [`random_order`][sequential_rationales.perturbation.random_order]) and IBA's
            noise; the same seed gives the same rationales in every run.
        precision: `"fp32"` (the model's own precision); `"bf16-exact"` (greedy and
            exhaustive search: rows screened by the adapter's bfloat16 twin, decided in full
            precision, the same rationales, see [`Screen`][sequential_rationales.search.Screen];
            the other methods add one token per step and record its full-precision
            probabilities, so there they run in full precision); `"bf16"` (the whole method
            on the twin: faster, not exact); or `"auto"` (`"bf16-exact"` where bfloat16 is
            fast, else `"fp32"`, see
            [`resolve_precision`][sequential_rationales.search.resolve_precision]).
        extractor: the `amortized` method's trained
            [`RationaleExtractor`][sequential_rationales.extractor.RationaleExtractor].
        top_k: methods that rank the context (every method but greedy and exhaustive search)
            return the first `top_k` tokens of their order (the previous token first) instead
            of growing the order until the argmax condition holds: one pass, no search, so a
            rationale need not reach the argmax (`reached_argmax` says whether it does).

    Returns:
        The rationales of every target, with the method's time. `extra["precision"]` keeps
            the precision used, `extra["screening"]` what the screen did under `bf16-exact`,
            and `extra["top_k"]` the `top_k` given.

    Raises:
        ValueError: an unknown method or precision; token ids outside the adapter's
            vocabulary or positions; an option that is not a positive integer (or a `seed`
            that is not an integer); `top_k` with a method that does not rank the context;
            `top_1` with a language model or with exhaustive search; a gradient method under
            `torch.inference_mode()`; an exhaustive search of more than `max_subsets`
            subsets; a bfloat16 precision with an adapter that has no bfloat16 twin; or
            NaN or infinite scores from the model.
        InputError: the `amortized` method without an `extractor`.
    """
    chosen = get_method(method)
    if method in GRADIENT_METHODS and torch.is_inference_mode_enabled():
        raise ValueError(f"{method} needs gradients, which torch.inference_mode() turns off; "
                         "call rationalize outside it (torch.no_grad() is fine)")
    _check_problem_fits(adapter, problem)
    if max_steps is None:
        max_steps = default_max_steps(method)
    check_positive_int(max_steps, "max_steps")
    if max_tokens_per_batch is not None:  # None: the device's default budget
        check_positive_int(max_tokens_per_batch, "max_tokens_per_batch")
    if integrated_gradient_steps is not None:  # None: the adapter's default (baselines.py)
        check_positive_int(integrated_gradient_steps, "integrated_gradient_steps")
    check_positive_int(max_subsets, "max_subsets")
    if top_k is not None:
        check_positive_int(top_k, "top_k")
        if not chosen.ranks:
            raise ValueError(f"top_k needs a method that ranks the context; {method} searches "
                             "(use an ordering such as amortized or gradient_norm)")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if top_1 and not adapter.is_conditional:
        raise ValueError("top_1 only applies to conditional (source-target) models")
    precision = resolve_precision(adapter, precision)
    if precision == "bf16-exact" and method not in SCREENED_METHODS:
        precision = "fp32"  # one row per step, each recorded: nothing to screen
    run_on, run_precision = precision_adapter(adapter, precision)
    screening: dict = {}
    start = time.perf_counter()
    rationales = chosen.run(run_on, problem, max_steps=max_steps,
                            max_tokens_per_batch=max_tokens_per_batch, top_1=top_1,
                            top_1_skip_source=tuple(top_1_skip_source),
                            integrated_gradient_steps=integrated_gradient_steps,
                            reuse_prefix=reuse_prefix, max_subsets=max_subsets,
                            progress=progress, seed=seed, precision=run_precision,
                            screening=screening, extractor=extractor, top_k=top_k)
    extra = {"precision": precision}
    if top_k is not None:
        extra["top_k"] = top_k
    if screening:
        extra["screening"] = screening
    return SequenceRationales(
        method=method,
        target_ids=[int(i) for i in problem.target_ids],
        source_ids=None if problem.source_ids is None else [int(i) for i in problem.source_ids],
        rationales=rationales,
        duration=time.perf_counter() - start,
        extra=extra,
    )

