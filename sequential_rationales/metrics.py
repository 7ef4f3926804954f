"""Metrics of the paper's evaluations (Vafa et al., 2021, Tables 1-4), as pure functions.

Rationales and gold annotations are collections of integer positions; every function takes
plain Python data (lists, sets, tuples) and returns plain floats or dicts, so it can be used on
logs read back from JSON. Only the standard library is used.

Conventions shared by all metrics (the paper leaves them open; we state ours):

* A rationale is treated as a **set** of positions (order and duplicates are ignored) except
  where the order matters
  ([`first_added_source`][sequential_rationales.metrics.first_added_source]).
* Two empty sets agree perfectly: IOU = 1, F1 = 1, AER = 0. Means over zero items are `nan`
  (nothing to measure), never 0.

Sections: generic set metrics; word alignments (Table 4); distractors (Table 3); analogies
(Table 1); annotated Lambada (Table 2); faithfulness (sufficiency, comprehensiveness, AOPC), whose
probabilities [`perturbation.faithfulness`][sequential_rationales.perturbation.faithfulness]
computes.
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
    """The arithmetic mean of `values`; `nan` for no values.

    Args:
        values: the numbers to average (any iterable, read once).
    """
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def mean_length(rationales: Iterable[Positions]) -> float:
    """Length: the mean number of distinct positions per rationale.

    Args:
        rationales: one collection of positions per rationale.

    Returns:
        The mean; `nan` for no rationales.
    """
    return mean(len(_as_set(r)) for r in rationales)


def intersection_over_union(predicted: Positions, gold: Positions) -> float:
    """Intersection over union, `|A ∩ G| / |A ∪ G|`, of a predicted and a gold set.

    Args:
        predicted: the predicted positions `A`.
        gold: the gold positions `G`.

    Returns:
        The IOU in `[0, 1]`; 1.0 when both sets are empty.
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

    Item `i` contributes one indicator pair (predicted?, gold?) per position of its universe.
    Pooling the indicators of all items and computing one F1 equals
    `2 TP / (2 TP + FP + FN)` with the counts summed over items, positions outside the
    universe ignored. Negatives (in neither set) do not enter F1.

    Args:
        predicted: the predicted positions of each item.
        gold: the gold positions of each item.
        universes: per item, an int `n` meaning positions `0..n-1`, or an explicit collection
            of positions; `None`: all positions in either set.

    Returns:
        The pooled F1; 1.0 when no position is positive in either the predictions or the
            gold sets.

    Raises:
        ValueError: the sequences have different lengths.
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
    """Alignment error rate of one target word (Och & Ney, 2003):
    `1 - (|A∩P| + |A∩S|) / (|S| + |A|)`.

    `P` is taken to include `S` (`P := P ∪ S`), as the definition requires, whether or not
    the caller's `possible` already lists the sure links.

    Args:
        predicted: `A`, the source positions of the word's rationale.
        sure: `S`, the gold sure links.
        possible: `P`, the gold possible links.

    Returns:
        The AER in `[0, 1]`; 0.0 when `|S| + |A| = 0` (no sure link and an empty
            prediction: nothing is wrong).
    """
    a, s = _as_set(predicted), _as_set(sure)
    p = _as_set(possible) | s
    denominator = len(s) + len(a)
    if denominator == 0:
        return 0.0
    return 1.0 - (len(a & p) + len(a & s)) / denominator


def alignment_error_rate_corpus(predicted: Sequence[Positions], sure: Sequence[Positions],
                                possible: Sequence[Positions]) -> float:
    """Corpus AER: the counts of
    [`alignment_error_rate`][sequential_rationales.metrics.alignment_error_rate] summed over all
    target words before dividing, `1 - Σ(|A∩P| + |A∩S|) / Σ(|S| + |A|)` (the standard pooled
    AER).

    The paper's evaluation script instead averaged the per-word values; both are provided.

    Args:
        predicted: per target word, the source positions of its rationale.
        sure: per target word, its gold sure links.
        possible: per target word, its gold possible links (taken to include the sure ones).

    Returns:
        The pooled AER; 0.0 for a corpus with no sure link and no prediction.

    Raises:
        ValueError: the sequences have different lengths.
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
    """The first source position added to a rationale.

    Args:
        source_rationale: the rationale's source positions, in the order they were added.
        skip: positions to pass over (e.g. the source `</s>`).

    Returns:
        The first position not in `skip`; `None` if the rationale has no other source
            position.
    """
    skipped = _as_set(skip)
    return next((int(p) for p in source_rationale if int(p) not in skipped), None)


def top1_accuracy(first_added: Sequence[int | Positions | None],
                  gold: Sequence[Positions]) -> float:
    """Top1: the fraction of target words whose first added source token is aligned.

    Args:
        first_added: per word, the first source position added (see
            [`first_added_source`][sequential_rationales.metrics.first_added_source]),
            `None` if none was added (counted as a miss), or a collection of such positions,
            one per sub-word piece of the word: the word is a hit if any of them is aligned.
        gold: per word, its aligned source positions (possible links, which include the sure
            ones).

    Returns:
        The fraction of hits; `nan` for no words.

    Raises:
        ValueError: the sequences have different lengths.
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
    """One row of Table 4 (word alignment) over target words `i`.

    The row's columns:

    - `Length`: mean number of source positions in a word's rationale;
    - `AER`: mean of the per-word
      [`alignment_error_rate`][sequential_rationales.metrics.alignment_error_rate] (the paper's
      script); `AER (corpus)`: the pooled
      [`alignment_error_rate_corpus`][sequential_rationales.metrics.alignment_error_rate_corpus];
    - `IOU`: mean per-word IOU against all gold links (`S ∪ P`);
    - `F1`: [`pooled_f1`][sequential_rationales.metrics.pooled_f1] over (target word, source
      position) indicators against `S ∪ P`;
    - `Top1`: [`top1_accuracy`][sequential_rationales.metrics.top1_accuracy], when
      `first_added` is given;
    - `n`: the number of words.

    Args:
        predicted: per word, the source part of its rationale (the union over its pieces),
            without the source `</s>`, which the paper's evaluation never counted.
        sure: per word, its gold sure links `S`.
        possible: per word, its gold possible links `P`.
        source_lengths: per word, the positions F1 counts (an int `n` for `0..n-1`, e.g. the
            source length without `</s>`, or a collection); `None`: all positions in either
            set.
        first_added: per word, the first source position(s) added (see
            [`top1_accuracy`][sequential_rationales.metrics.top1_accuracy]); `None` leaves `Top1`
            out.

    Returns:
        The row, column name to value.
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
    """Whether `position` lies in the second (appended) example: `position >= break_position`.

    Args:
        position: a position in one stream.
        break_position: the position where the second example starts in that stream.
    """
    return int(position) >= int(break_position)


def distractor_counts(source_rationale: Positions, target_rationale: Positions,
                      target_position: int, source_break: int, target_break: int,
                      source_eos: int | None = None, target_bos: int | None = 0
                      ) -> tuple[int, int]:
    """Numbers of source and target rationale tokens in the wrong (distractor) half.

    Each side is the concatenation of two examples. The half of `target_position` is the real
    one and the other half is the distractor: a target in the second half
    (`target_position >= target_break`) has the first half as distractor, and vice versa.

    Not counted: the source end-of-sentence token (`source_eos`), the first target token
    (`target_bos`), and the forced previous token `target_position - 1`. A target in the
    first half cannot have a target-side distractor (its context ends before the break), so
    its target count is always 0.

    With a `DistractorExample` of `sequential_rationales_experiments.distractors` (whose
    breaks count the tokens of the first sentence as text) and a fairseq model, whose target
    stream starts with its BOS at position 0 and whose source ends with `</s>`:
    `source_break=ex.source_break`, `target_break=ex.target_break + 1`,
    `source_eos=len(source_tokens) - 1`.

    Args:
        source_rationale: the rationale's source positions.
        target_rationale: the rationale's target positions.
        target_position: the position of the rationalized target token.
        source_break: the source position where the second example starts (the first
            example's token count).
        target_break: the target position where the second example starts (the first
            example's token count, plus one on a target stream that begins with a BOS token
            at position 0).
        source_eos: the position of the source end-of-sentence token (e.g. the last source
            position); `None`: nothing to leave out.
        target_bos: the position of the target's begin token (default 0); `None`: nothing to
            leave out.

    Returns:
        `(source_wrong, target_wrong)`.
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
    """One row of Table 3 (distractors) from per-target counts.

    The row's columns:

    - `Source Mean` / `Source Frac.`: mean count and fraction with at least one wrong source
      token, over all rationalized targets;
    - `Target Mean` / `Target Frac.`: the same for the target side, over the targets in the
      second half only, since only they have earlier target tokens from the other example
      (the paper's evaluation likewise averaged the target side over those targets);
    - `n`: the number of targets; `n_target`: those in the second half.

    Args:
        counts: per target, `(source_wrong, target_wrong)` from
            [`distractor_counts`][sequential_rationales.metrics.distractor_counts].
        target_in_second_half: per target, whether it lies in the second half.

    Returns:
        The row, column name to value.

    Raises:
        ValueError: the sequences have different lengths.
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
    """Whether the rationale contains at least one of `positions`.

    Args:
        rationale: the rationale's positions.
        positions: the positions to look for.
    """
    return bool(_as_set(rationale) & _as_set(positions))


def approximation_ratio(length: int, exhaustive_length: int) -> float:
    """Ratio: a rationale's length divided by the exact minimum (exhaustive) length.

    Args:
        length: the rationale's length.
        exhaustive_length: the exhaustive rationale's length, at least 1.

    Raises:
        ValueError: `exhaustive_length` is below 1.
    """
    if exhaustive_length < 1:
        raise ValueError(f"an exhaustive rationale has at least one token, got "
                         f"{exhaustive_length}")
    return length / exhaustive_length


def analogy_table_row(rationales: Sequence[Positions], antecedents: Sequence[Positions],
                      distractors: Sequence[Positions],
                      exhaustive: Sequence[Positions | None] | None = None) -> dict[str, float]:
    """One row of Table 1 (analogies) over examples `i`, the last token's rationale each.

    The row's columns:

    - `Length`: mean rationale length;
    - `Ratio`: mean of `len(rationale_i) / len(exhaustive_i)` over the examples that have an
      exhaustive (exact minimum) rationale;
    - `Ante`: fraction of rationales containing the antecedent;
    - `No D`: fraction of rationales containing no distractor token;
    - `n`: the number of examples; `n_ratio`: those in `Ratio`.

    Args:
        rationales: per example, the positions of the last token's rationale.
        antecedents: per example, the antecedent word's token positions (any of them counts).
        distractors: per example, the distractor tokens' positions.
        exhaustive: per example, the exhaustive rationale's positions, or `None` where there
            is none; `None` for no exhaustive rationales (`Ratio` is then `nan`).

    Returns:
        The row, column name to value.

    Raises:
        ValueError: the sequences have different lengths, or an exhaustive rationale is
            empty.
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

    A token belongs if its range overlaps a span (`start < span_end` and
    `span_start < end`); zero-width tokens (special tokens) never belong.

    Args:
        offsets: `offsets[i] = (start, end)`, token `i`'s `[start, end)` character range (a
            fast tokenizer's `offset_mapping`).
        spans: `[start, end)` character ranges (the human annotations).

    Returns:
        The covered token positions, sorted.
    """
    spans = [(int(s), int(e)) for s, e in spans]
    chosen = []
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < e and s < end for s, e in spans):
            chosen.append(i)
    return chosen


def word_rationale(piece_rationales: Iterable[Positions], first_piece_position: int) -> set[int]:
    """The rationale of a word split into pieces: the union of its pieces' rationales.

    Positions after the first piece are ignored (the later pieces' rationales may contain the
    earlier pieces); the first piece's own position is kept, as in the paper's evaluation.

    Args:
        piece_rationales: the rationale of each piece of the word.
        first_piece_position: the position of the word's first piece.

    Returns:
        The positions up to and including `first_piece_position`.
    """
    union: set[int] = set()
    for r in piece_rationales:
        union |= _as_set(r)
    return {p for p in union if p <= first_piece_position}


def lambada_table_row(word_rationales: Sequence[Positions], human: Sequence[Positions],
                      first_piece_positions: Sequence[int]) -> dict[str, float]:
    """One row of Table 2 (annotated Lambada) over passages `i`.

    The row's columns:

    - `Length`: mean size of the word rationale;
    - `IOU`: mean per-passage IOU with the human token set;
    - `F1`: [`pooled_f1`][sequential_rationales.metrics.pooled_f1] of per-token indicators over
      the context tokens `0 .. first_piece_positions[i] - 1` of every passage, pooled across
      passages;
    - `n`: the number of passages.

    Args:
        word_rationales: per passage, the last word's rationale (see
            [`word_rationale`][sequential_rationales.metrics.word_rationale]).
        human: per passage, the human annotation's token positions.
        first_piece_positions: per passage, the position of the last word's first piece.

    Returns:
        The row, column name to value.

    Raises:
        ValueError: the sequences have different lengths.
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
    """Sufficiency, `p(y_t | context) - p(y_t | R only)`: how much is lost by showing only
    the rationale (0 or below: the rationale alone suffices).

    Args:
        p_full: the probability of `y_t` given the whole context.
        p_rationale: the probability of `y_t` given the rationale only.
    """
    return p_full - p_rationale


def comprehensiveness(p_full: float, p_without: float) -> float:
    """Comprehensiveness, `p(y_t | context) - p(y_t | context without R)`: how much the
    prediction needed the rationale (high: the rest of the context cannot stand in for it).

    Args:
        p_full: the probability of `y_t` given the whole context.
        p_without: the probability of `y_t` given the context without the rationale.
    """
    return p_full - p_without


def aopc(p_full: float, p_prefixes: Sequence[float]) -> float:
    """Area over the perturbation curve: the mean of `p_full - p_k` over the rationale's
    prefixes `R[:k]`, `k = 1 .. |R|`.

    Bins are the rationale's own prefixes rather than ERASER's 1/5/10/20/50 % of the context:
    a sequential rationale is already ordered and usually holds only a few tokens, so
    percentage bins would mostly fall beyond its end.

    Args:
        p_full: the probability of `y_t` given the whole context.
        p_prefixes: `p_k` for `k = 1 .. |R|`, the probability with `R[:k]` only (for
            sufficiency) or with `R[:k]` removed (for comprehensiveness).

    Returns:
        The AOPC; `nan` for no prefixes.
    """
    return mean(p_full - p for p in p_prefixes)


def faithfulness_scores(p_full: float, p_sufficient: Sequence[float],
                        p_comprehensive: Sequence[float]) -> dict[str, float]:
    """The faithfulness metrics of one target from its probabilities.

    Args:
        p_full: `p(y_t | context)`.
        p_sufficient: `p_sufficient[k - 1] = p(y_t | R[:k] only)` for `k = 1 .. |R|`; the
            last entry is that of the whole rationale.
        p_comprehensive: `p_comprehensive[k - 1] = p(y_t | context without R[:k])` for
            `k = 1 .. |R|`.

    Returns:
        `p_full`, `sufficiency`, `comprehensiveness` (see
            [`sufficiency`][sequential_rationales.metrics.sufficiency] and
            [`comprehensiveness`][sequential_rationales.metrics.comprehensiveness]),
            `aopc_sufficiency` and `aopc_comprehensiveness` (see
            [`aopc`][sequential_rationales.metrics.aopc]); `nan` where the rationale is empty.

    Raises:
        ValueError: the two sequences have different lengths.
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
    """The faithfulness metrics of every target of a result, computed through the model.

    The probabilities are computed through `adapter` in batches by
    [`perturbation.faithfulness`][sequential_rationales.perturbation.faithfulness], imported
    only when called, so this module keeps to the standard library.

    Args:
        adapter (ModelAdapter): the model (a
            [`ModelAdapter`][sequential_rationales.adapter.ModelAdapter]).
        problem (RationalizationProblem): the token ids and targets the result rationalized
            (see [`RationalizationProblem`][sequential_rationales.search.RationalizationProblem]).
        result (SequenceRationales): the rationales of `problem` (see
            [`SequenceRationales`][sequential_rationales.results.SequenceRationales]).
        max_tokens_per_batch: tokens per forward pass; `None`: the device's default.

    Returns:
        Per target position, its
            [`faithfulness_scores`][sequential_rationales.metrics.faithfulness_scores].
    """
    from .perturbation import faithfulness as compute

    return compute(adapter, problem, result, max_tokens_per_batch)


def faithfulness_table_row(per_target: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Means of the faithfulness metrics over targets.

    Args:
        per_target: per target, its
            [`faithfulness_scores`][sequential_rationales.metrics.faithfulness_scores].

    Returns:
        The means of `sufficiency`, `comprehensiveness`, `aopc_sufficiency` and
            `aopc_comprehensiveness` (targets with an empty rationale, `nan`, left out of
            each), and `n`, the number of targets.
    """
    rows = list(per_target)
    keys = ("sufficiency", "comprehensiveness", "aopc_sufficiency", "aopc_comprehensiveness")
    row = {k: mean(r[k] for r in rows if not math.isnan(r[k])) for k in keys}
    row["n"] = float(len(rows))
    return row


def format_number(value: float, digits: int) -> str:
    """Format a table cell: the value with `digits` decimals, `-` for a missing (`None` or
    `nan`) value.

    Args:
        value: the number, or `None`.
        digits: the number of decimals.
    """
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else (
        f"{value:.{digits}f}")


def markdown_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str],
                   digits: Mapping[str, int], first: str = "Method") -> str:
    """Format rows as a Markdown table.

    Args:
        rows: row name to its values, column name to value.
        columns: the columns to show, in order; a column a row lacks shows as `-`.
        digits: decimals per column (default 2).
        first: the header of the row-name column.

    Returns:
        The table, one line per row name, without a final newline.
    """
    lines = ["| " + " | ".join([first, *columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, row in rows.items():
        cells = [format_number(row.get(c, math.nan), digits.get(c, 2)) for c in columns]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)
