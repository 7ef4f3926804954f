"""Metrics of the paper's evaluations (Vafa et al., 2021, Tables 1-4), as pure functions.

Rationales and gold annotations are collections of integer positions; every function takes
plain Python data (lists, sets, tuples) and returns plain floats or dicts, so it can be used on
logs read back from JSON. Only the standard library is used.

Conventions shared by all metrics (the paper leaves them open; we state ours):

* A rationale is treated as a **set** of positions (order and duplicates are ignored) except
  where the order matters (:func:`first_added_source`).
* Two empty sets agree perfectly: IOU = 1, F1 = 1, AER = 0. Means over zero items are ``nan``
  (nothing to measure), never 0.

Sections: generic set metrics; word alignments (Table 4); distractors (Table 3); analogies
(Table 1); annotated Lambada (Table 2); faithfulness (sufficiency, comprehensiveness, AOPC), whose
probabilities :func:`sequential_rationales.perturbation.faithfulness` computes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

Positions = Iterable[int]

__all__ = [
    "mean", "mean_length", "intersection_over_union", "pooled_f1",
    "alignment_error_rate", "alignment_error_rate_corpus", "first_added_source",
    "top1_accuracy", "alignment_table_row",
    "distractor_counts", "in_second_half", "distractor_table_row",
    "contains_any", "approximation_ratio", "analogy_table_row",
    "character_spans_to_token_positions", "word_rationale", "lambada_table_row",
    "sufficiency", "comprehensiveness", "aopc", "faithfulness_scores", "faithfulness",
    "faithfulness_table_row",
    "METHOD_LABELS", "format_number", "markdown_table",
]

# The paper's row names, in the paper's order.
METHOD_LABELS = {
    "gradient_norm": "Gradient norms",
    "signed_gradient": "Grad x emb",
    "integrated_gradient": "Integrated grads",
    "attention_rollout": "Attention rollout",
    "last_attention": "Last attention",
    "all_attention": "All attentions",
    "greedy": "Greedy",
    "exhaustive": "Exhaustive",
    # Not in the paper: our variants, perturbation orderings and the peer methods.
    "signed_gradient_token": "Grad x token emb",
    "integrated_gradient_midpoint": "Integrated grads (midpoint)",
    "occlusion": "Occlusion",
    "lrp": "LRP (AttnLRP)",
    "iba": "IBA",
    "random": "Random",
    "greedy_paper": "Greedy (paper's code)",
    "amortized": "Amortized (learned)",
    "amortized_top_k": "Amortized top-k",
}


def _as_set(positions: Positions | None) -> set[int]:
    return set() if positions is None else {int(p) for p in positions}


# -- generic --------------------------------------------------------------------------------
def mean(values: Iterable[float]) -> float:
    """Arithmetic mean; ``nan`` for no values."""
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def mean_length(rationales: Iterable[Positions]) -> float:
    """Length: the mean number of distinct positions per rationale (``nan`` for none)."""
    return mean(len(_as_set(r)) for r in rationales)


def intersection_over_union(predicted: Positions, gold: Positions) -> float:
    """IOU = |A ∩ G| / |A ∪ G| of a predicted set A and a gold set G (1.0 when both are empty).
    """
    a, g = _as_set(predicted), _as_set(gold)
    union = a | g
    return len(a & g) / len(union) if union else 1.0


def _restrict(positions: set[int], universe: int | Positions | None) -> set[int]:
    if universe is None:
        return positions
    allowed = set(range(universe)) if isinstance(universe, int) else _as_set(universe)
    return positions & allowed


def pooled_f1(predicted: Sequence[Positions], gold: Sequence[Positions],
              universes: Sequence[int | Positions] | None = None) -> float:
    """F1 of per-position indicators pooled over a corpus of items.

    Item ``i`` contributes one indicator pair (predicted?, gold?) per position of its
    universe (``universes[i]``: an int ``n`` meaning positions ``0..n-1``, or an explicit
    collection; ``None``: all positions in either set). Pooling the indicators of all items
    and computing one F1 equals ``2 TP / (2 TP + FP + FN)`` with the counts summed over items,
    positions outside the universe ignored. Negatives (in neither set) do not enter F1.
    Returns 1.0 when no position is positive in either the predictions or the gold sets.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted sets but {len(gold)} gold sets")
    if universes is not None and len(universes) != len(gold):
        raise ValueError(f"{len(universes)} universes for {len(gold)} items")
    tp = fp = fn = 0
    for i, (p, g) in enumerate(zip(predicted, gold)):
        universe = None if universes is None else universes[i]
        a, b = _restrict(_as_set(p), universe), _restrict(_as_set(g), universe)
        tp += len(a & b)
        fp += len(a - b)
        fn += len(b - a)
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else 1.0


# -- word alignments (Table 4) --------------------------------------------------------------
def alignment_error_rate(predicted: Positions, sure: Positions, possible: Positions) -> float:
    """AER of one target word (Och & Ney, 2003): ``1 - (|A∩P| + |A∩S|) / (|S| + |A|)``.

    ``A``: the source positions of the word's rationale; ``S``: gold sure links; ``P``: gold
    possible links. ``P`` is taken to include ``S`` (``P := P ∪ S``), as the definition
    requires, whether or not the caller's ``possible`` already lists the sure links. When
    ``|S| + |A| = 0`` (no sure link and an empty prediction) nothing is wrong: 0.0.
    """
    a, s = _as_set(predicted), _as_set(sure)
    p = _as_set(possible) | s
    denominator = len(s) + len(a)
    if denominator == 0:
        return 0.0
    return 1.0 - (len(a & p) + len(a & s)) / denominator


def alignment_error_rate_corpus(predicted: Sequence[Positions], sure: Sequence[Positions],
                                possible: Sequence[Positions]) -> float:
    """Corpus AER: the counts of :func:`alignment_error_rate` summed over all target words
    before dividing, ``1 - Σ(|A∩P| + |A∩S|) / Σ(|S| + |A|)`` (the standard pooled AER).

    The paper's evaluation script instead averaged the per-word values; both are provided.
    0.0 for a corpus with no sure link and no prediction.
    """
    if not len(predicted) == len(sure) == len(possible):
        raise ValueError("predicted, sure and possible must have one entry per target word")
    hits = total = 0
    for a_, s_, p_ in zip(predicted, sure, possible):
        a, s = _as_set(a_), _as_set(s_)
        p = _as_set(p_) | s
        hits += len(a & p) + len(a & s)
        total += len(s) + len(a)
    return 1.0 - hits / total if total else 0.0


def first_added_source(source_rationale: Sequence[int], skip: Positions = ()) -> int | None:
    """The first source position added to a rationale (``source_rationale`` in the order
    added), passing over positions in ``skip`` (e.g. the source ``</s>``); ``None`` if the
    rationale has no other source position."""
    skipped = _as_set(skip)
    return next((int(p) for p in source_rationale if int(p) not in skipped), None)


def top1_accuracy(first_added: Sequence[int | Positions | None],
                  gold: Sequence[Positions]) -> float:
    """Top1: the fraction of target words whose first added source token is aligned.

    ``first_added[i]`` is the first source position added for word ``i`` (see
    :func:`first_added_source`), ``None`` if none was added (counted as a miss), or a
    collection of such positions, one per sub-word piece of the word: the word is a hit if any
    of them is aligned. ``gold[i]`` holds the word's aligned source positions (possible links,
    which include the sure ones).
    """
    if len(first_added) != len(gold):
        raise ValueError(f"{len(first_added)} predictions but {len(gold)} gold sets")
    hits = []
    for first, g in zip(first_added, gold):
        candidates = set() if first is None else (
            {int(first)} if isinstance(first, int) else _as_set(first))
        hits.append(1.0 if candidates & _as_set(g) else 0.0)
    return mean(hits)


def alignment_table_row(predicted: Sequence[Positions], sure: Sequence[Positions],
                        possible: Sequence[Positions],
                        source_lengths: Sequence[int | Positions] | None = None,
                        first_added: Sequence[int | Positions | None] | None = None
                        ) -> dict[str, float]:
    """One row of Table 4 over target words ``i``.

    - ``Length``: mean number of source positions in a word's rationale;
    - ``AER``: mean of the per-word :func:`alignment_error_rate` (the paper's script);
      ``AER (corpus)``: the pooled :func:`alignment_error_rate_corpus`;
    - ``IOU``: mean per-word IOU against all gold links (``S ∪ P``);
    - ``F1``: :func:`pooled_f1` over (target word, source position) indicators against
      ``S ∪ P``; ``source_lengths[i]`` limits word ``i``'s positions (e.g. the source length
      without ``</s>``);
    - ``Top1``: :func:`top1_accuracy` when ``first_added`` is given.

    ``predicted[i]`` is the source part of word ``i``'s rationale (the union over its pieces),
    without the source ``</s>``, which the paper's evaluation never counted.
    """
    gold = [_as_set(p) | _as_set(s) for s, p in zip(sure, possible)]
    row = {
        "Length": mean_length(predicted),
        "AER": mean(alignment_error_rate(a, s, p) for a, s, p in zip(predicted, sure, possible)),
        "AER (corpus)": alignment_error_rate_corpus(predicted, sure, possible),
        "IOU": mean(intersection_over_union(a, g) for a, g in zip(predicted, gold)),
        "F1": pooled_f1(predicted, gold, source_lengths),
        "n": float(len(gold)),
    }
    if first_added is not None:
        row["Top1"] = top1_accuracy(first_added, gold)
    return row


# -- distractors (Table 3) ------------------------------------------------------------------
def in_second_half(position: int, break_position: int) -> bool:
    """Whether ``position`` lies in the second (appended) example: ``position >= break``."""
    return int(position) >= int(break_position)


def distractor_counts(source_rationale: Positions, target_rationale: Positions,
                      target_position: int, source_break: int, target_break: int,
                      source_eos: int | None = None, target_bos: int | None = 0
                      ) -> tuple[int, int]:
    """Numbers of source and target rationale tokens in the wrong (distractor) half.

    Each side is the concatenation of two examples; ``source_break`` / ``target_break`` are
    the positions where the second example starts in each stream (the first example's token
    count, plus one on a target stream that begins with a BOS token at position 0). The half
    of ``target_position`` is the real one and the other half is the distractor: a target in
    the second half (``target_position >= target_break``) has the first half as distractor,
    and vice versa.

    Not counted: the source end-of-sentence token (``source_eos``, e.g. the last source
    position), the first target token (``target_bos``, position 0), and the forced previous
    token ``target_position - 1``. A target in the first half cannot have a target-side
    distractor (its context ends before the break), so its target count is always 0.

    Returns ``(source_wrong, target_wrong)``.

    With a ``DistractorExample`` of :mod:`sequential_rationales_experiments.distractors` (whose
    breaks count the tokens of the first sentence as text) and a fairseq model, whose target
    stream starts with its BOS at position 0 and whose source ends with ``</s>``:
    ``source_break=ex.source_break``, ``target_break=ex.target_break + 1``,
    ``source_eos=len(source_tokens) - 1``.
    """
    second = in_second_half(target_position, target_break)
    ignored_target = {int(target_position) - 1}
    if target_bos is not None:
        ignored_target.add(int(target_bos))
    source = _as_set(source_rationale) - ({int(source_eos)} if source_eos is not None else set())
    target = _as_set(target_rationale) - ignored_target

    def wrong(positions: set[int], break_position: int) -> int:
        return sum(in_second_half(p, break_position) != second for p in positions)

    return wrong(source, source_break), wrong(target, target_break)


def distractor_table_row(counts: Sequence[tuple[int, int]],
                         target_in_second_half: Sequence[bool]) -> dict[str, float]:
    """One row of Table 3 from per-target ``(source_wrong, target_wrong)`` counts.

    ``Source Mean`` / ``Source Frac.``: mean count and fraction with at least one wrong source
    token, over all rationalized targets. ``Target Mean`` / ``Target Frac.``: the same for the
    target side, over the targets in the second half only (``target_in_second_half``), since
    only they have earlier target tokens from the other example (the paper's evaluation
    likewise averaged the target side over those targets).
    """
    if len(counts) != len(target_in_second_half):
        raise ValueError(f"{len(counts)} counts but {len(target_in_second_half)} flags")
    source = [s for s, _ in counts]
    target = [t for (_, t), second in zip(counts, target_in_second_half) if second]
    return {
        "Source Mean": mean(source),
        "Target Mean": mean(target),
        "Source Frac.": mean(1.0 if s > 0 else 0.0 for s in source),
        "Target Frac.": mean(1.0 if t > 0 else 0.0 for t in target),
        "n": float(len(source)),
        "n_target": float(len(target)),
    }


# -- analogies (Table 1) --------------------------------------------------------------------
def contains_any(rationale: Positions, positions: Positions) -> bool:
    """Whether the rationale contains at least one of ``positions``."""
    return bool(_as_set(rationale) & _as_set(positions))


def approximation_ratio(length: int, exhaustive_length: int) -> float:
    """Ratio: a rationale's length divided by the exact minimum (exhaustive) length."""
    if exhaustive_length < 1:
        raise ValueError(f"an exhaustive rationale has at least one token, got "
                         f"{exhaustive_length}")
    return length / exhaustive_length


def analogy_table_row(rationales: Sequence[Positions], antecedents: Sequence[Positions],
                      distractors: Sequence[Positions],
                      exhaustive: Sequence[Positions | None] | None = None) -> dict[str, float]:
    """One row of Table 1 over analogy examples ``i`` (the last token's rationale each).

    - ``Length``: mean rationale length;
    - ``Ratio``: mean of ``len(rationale_i) / len(exhaustive_i)`` over the examples that have
      an exhaustive (exact minimum) rationale, ``exhaustive[i]`` being ``None`` where not;
    - ``Ante``: fraction of rationales containing the antecedent (any of ``antecedents[i]``,
      the antecedent word's token positions);
    - ``No D``: fraction of rationales containing no token of ``distractors[i]``.
    """
    if not len(rationales) == len(antecedents) == len(distractors):
        raise ValueError("rationales, antecedents and distractors must align")
    if exhaustive is not None and len(exhaustive) != len(rationales):
        raise ValueError("exhaustive must have one entry (or None) per example")
    ratios = [] if exhaustive is None else [
        approximation_ratio(len(_as_set(r)), len(_as_set(e)))
        for r, e in zip(rationales, exhaustive) if e is not None]
    return {
        "Length": mean_length(rationales),
        "Ratio": mean(ratios),
        "Ante": mean(1.0 if contains_any(r, a) else 0.0 for r, a in zip(rationales, antecedents)),
        "No D": mean(0.0 if contains_any(r, d) else 1.0 for r, d in zip(rationales, distractors)),
        "n": float(len(rationales)),
        "n_ratio": float(len(ratios)),
    }


# -- annotated Lambada (Table 2) ------------------------------------------------------------
def character_spans_to_token_positions(offsets: Sequence[Sequence[int]],
                                       spans: Iterable[Sequence[int]]) -> list[int]:
    """Token positions covered by character spans.

    ``offsets[i] = (start, end)`` is token ``i``'s ``[start, end)`` character range (a fast
    tokenizer's ``offset_mapping``); ``spans`` are ``[start, end)`` ranges (the human
    annotations). A token belongs if its range overlaps a span (``start < span_end`` and
    ``span_start < end``); zero-width tokens (special tokens) never belong. Sorted output.
    """
    spans = [(int(s), int(e)) for s, e in spans]
    chosen = []
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < e and s < end for s, e in spans):
            chosen.append(i)
    return chosen


def word_rationale(piece_rationales: Iterable[Positions], first_piece_position: int) -> set[int]:
    """The rationale of a word split into pieces: the union of its pieces' rationales, with
    positions after the first piece ignored (the later pieces' rationales may contain the
    earlier pieces; the first piece's own position is kept, as in the paper's evaluation)."""
    union: set[int] = set()
    for r in piece_rationales:
        union |= _as_set(r)
    return {p for p in union if p <= first_piece_position}


def lambada_table_row(word_rationales: Sequence[Positions], human: Sequence[Positions],
                      first_piece_positions: Sequence[int]) -> dict[str, float]:
    """One row of Table 2 over passages ``i``.

    - ``Length``: mean size of the word rationale (:func:`word_rationale`);
    - ``IOU``: mean per-passage IOU with the human token set;
    - ``F1``: :func:`pooled_f1` of per-token indicators over the context tokens
      ``0 .. first_piece_positions[i] - 1`` of every passage, pooled across passages.
    """
    if not len(word_rationales) == len(human) == len(first_piece_positions):
        raise ValueError("word_rationales, human and first_piece_positions must align")
    return {
        "Length": mean_length(word_rationales),
        "IOU": mean(intersection_over_union(r, h) for r, h in zip(word_rationales, human)),
        "F1": pooled_f1(word_rationales, human, [int(n) for n in first_piece_positions]),
        "n": float(len(human)),
    }


# -- faithfulness ---------------------------------------------------------------------------
# ERASER (DeYoung et al., 2020) and UNIREX (Chan et al., 2022), adapted to next-token
# prediction: the "class" is the observed token y_t, and a rationale R is a set of context
# positions. Probabilities, not log-probabilities, as in ERASER. Higher values mean a more
# faithful rationale for comprehensiveness, a less faithful one for sufficiency.
def sufficiency(p_full: float, p_rationale: float) -> float:
    """``p(y_t | context) - p(y_t | R only)``: how much is lost by showing only the rationale
    (0 or below: the rationale alone suffices)."""
    return p_full - p_rationale


def comprehensiveness(p_full: float, p_without: float) -> float:
    """``p(y_t | context) - p(y_t | context without R)``: how much the prediction needed the
    rationale (high: the rest of the context cannot stand in for it)."""
    return p_full - p_without


def aopc(p_full: float, p_prefixes: Sequence[float]) -> float:
    """Area over the perturbation curve: the mean of ``p_full - p_k`` over the rationale's
    prefixes ``R[:k]``, ``k = 1 .. |R|`` (``p_k``: the probability with ``R[:k]`` only, for
    sufficiency, or with ``R[:k]`` removed, for comprehensiveness); ``nan`` for no prefixes.

    Bins are the rationale's own prefixes rather than ERASER's 1/5/10/20/50 % of the context:
    a sequential rationale is already ordered and usually holds only a few tokens, so
    percentage bins would mostly fall beyond its end.
    """
    return mean(p_full - p for p in p_prefixes)


def faithfulness_scores(p_full: float, p_sufficient: Sequence[float],
                        p_comprehensive: Sequence[float]) -> dict[str, float]:
    """The faithfulness metrics of one target from its probabilities.

    ``p_sufficient[k - 1] = p(y_t | R[:k] only)`` and ``p_comprehensive[k - 1] =
    p(y_t | context without R[:k])`` for ``k = 1 .. |R|``; the last entries are those of the
    whole rationale. ``nan`` where the rationale is empty.
    """
    if len(p_sufficient) != len(p_comprehensive):
        raise ValueError(f"{len(p_sufficient)} sufficiency probabilities but "
                         f"{len(p_comprehensive)} comprehensiveness probabilities")
    empty = not len(p_sufficient)
    return {
        "p_full": p_full,
        "sufficiency": math.nan if empty else sufficiency(p_full, p_sufficient[-1]),
        "comprehensiveness": math.nan if empty else comprehensiveness(p_full,
                                                                      p_comprehensive[-1]),
        "aopc_sufficiency": aopc(p_full, p_sufficient),
        "aopc_comprehensiveness": aopc(p_full, p_comprehensive),
    }


def faithfulness(adapter, problem, result, max_tokens_per_batch: int | None = None
                 ) -> dict[int, dict[str, float]]:
    """:func:`faithfulness_scores` of every target of ``result`` (a ``SequenceRationales`` of
    ``problem``), keyed by target position, with the probabilities computed through
    ``adapter`` in batches: :func:`sequential_rationales.perturbation.faithfulness`, imported
    only when called, so this module keeps to the standard library."""
    from .perturbation import faithfulness as compute

    return compute(adapter, problem, result, max_tokens_per_batch)


def faithfulness_table_row(per_target: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Means of :func:`faithfulness_scores` over targets (``n``: their number); targets with
    an empty rationale (``nan``) are left out of each mean."""
    rows = list(per_target)
    keys = ("sufficiency", "comprehensiveness", "aopc_sufficiency", "aopc_comprehensiveness")
    row = {k: mean(r[k] for r in rows if not math.isnan(r[k])) for k in keys}
    row["n"] = float(len(rows))
    return row


def format_number(value: float, digits: int) -> str:
    """Table formatting: ``-`` for a missing (nan) value."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.{digits}f}")


def markdown_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str],
                   digits: Mapping[str, int], first: str = "Method") -> str:
    """A Markdown table: one line per row name, the chosen columns formatted."""
    lines = ["| " + " | ".join([first, *columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = [format_number(row.get(c, math.nan), digits.get(c, 2)) for c in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
