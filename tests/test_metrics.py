"""The paper's metrics on small cases whose values were computed by hand (see the comments)."""

from __future__ import annotations

import math

import pytest

from sequential_rationales.metrics import (
    METHOD_LABELS,
    alignment_error_rate,
    alignment_error_rate_corpus,
    alignment_table_row,
    analogy_table_row,
    aopc,
    approximation_ratio,
    character_spans_to_token_positions,
    comprehensiveness,
    contains_any,
    distractor_counts,
    distractor_table_row,
    faithfulness_scores,
    faithfulness_table_row,
    first_added_source,
    format_number,
    in_second_half,
    intersection_over_union,
    lambada_table_row,
    markdown_table,
    mean,
    mean_length,
    pooled_f1,
    sufficiency,
    top1_accuracy,
    word_rationale,
)

approx = pytest.approx


# -- generic ----------------------------------------------------------------------------------
def test_mean_and_length():
    assert math.isnan(mean([]))
    assert math.isnan(mean_length([]))
    # {1, 2} has 2 distinct positions, [] has 0: (2 + 0) / 2 = 1
    assert mean_length([[1, 1, 2], []]) == 1.0


def test_intersection_over_union():
    # {1,2,3} ∩ {2,3,4,5} = {2,3} (2); ∪ = {1..5} (5): 2/5
    assert intersection_over_union([1, 2, 3], [2, 3, 4, 5]) == approx(0.4)
    assert intersection_over_union([], [1]) == 0.0
    assert intersection_over_union([], []) == 1.0  # two empty sets agree
    assert intersection_over_union([3, 3], [3]) == 1.0  # duplicates ignored


def test_pooled_f1_counts_over_items_and_universes():
    predicted = [{0, 1, 2}, {0}]
    gold = [{1, 2, 3}, set()]
    # item 1: TP {1,2} = 2, FP {0} = 1, FN {3} = 1; item 2: FP {0} = 1.
    # TP 2, FP 2, FN 1: F1 = 2*2 / (2*2 + 2 + 1) = 4/7
    assert pooled_f1(predicted, gold) == approx(4 / 7)
    # universes 3 and 5: position 3 of item 1 falls outside -> FN 0: 4 / (4 + 2 + 0) = 2/3
    assert pooled_f1(predicted, gold, [3, 5]) == approx(2 / 3)
    assert pooled_f1([set()], [set()]) == 1.0  # nothing positive anywhere
    assert pooled_f1([{1}], [set()]) == 0.0
    with pytest.raises(ValueError):
        pooled_f1([{1}], [])


def test_pooled_f1_matches_sklearn_on_indicators():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    predicted, gold, universes = [{0, 1, 2}, {0}], [{1, 2, 3}, set()], [3, 5]
    y_true, y_pred = [], []
    for p, g, n in zip(predicted, gold, universes):
        y_true += [int(i in g) for i in range(n)]
        y_pred += [int(i in p) for i in range(n)]
    assert pooled_f1(predicted, gold, universes) == approx(
        sklearn_metrics.f1_score(y_true, y_pred))


# -- alignments (Table 4) ----------------------------------------------------------------------
def test_alignment_error_rate_by_hand():
    # A={1,2,3}, S={1}, P={1,4}: |A∩P| = 1, |A∩S| = 1, |S|+|A| = 4 -> 1 - 2/4
    assert alignment_error_rate([1, 2, 3], [1], [1, 4]) == approx(0.5)
    # A={4}, S={1}, P={4} (P ∪ S = {1,4}): (1 + 0) / (1 + 1) -> 0.5
    assert alignment_error_rate([4], [1], [4]) == approx(0.5)
    # P given without the sure links is completed: A=S={1} is perfect
    assert alignment_error_rate([1], [1], []) == 0.0
    # empty prediction with a sure link: 1 - 0/1
    assert alignment_error_rate([], [1], [1]) == 1.0
    # no sure link and no prediction: nothing wrong (possible links are optional)
    assert alignment_error_rate([], [], [2]) == 0.0
    # no sure link, a possible hit: 1 - (1 + 0)/(0 + 1) = 0; a miss: 1 - 0/1 = 1
    assert alignment_error_rate([2], [], [2]) == 0.0
    assert alignment_error_rate([3], [], [2]) == 1.0


def test_alignment_error_rate_corpus_pools_counts():
    predicted, sure, possible = [[1, 2, 3], []], [[1], [5, 6]], [[1, 4], []]
    # per word: 0.5 and 1 - 0/2 = 1.0 -> mean 0.75
    # pooled: hits (1+1) + 0 = 2, total (1+3) + (2+0) = 6 -> 1 - 2/6 = 2/3
    assert alignment_error_rate_corpus(predicted, sure, possible) == approx(2 / 3)
    assert alignment_error_rate_corpus([[]], [[]], [[]]) == 0.0
    with pytest.raises(ValueError):
        alignment_error_rate_corpus([[1]], [], [])


def test_first_added_source_and_top1():
    assert first_added_source([9, 4, 2], skip=[9]) == 4
    assert first_added_source([9], skip=[9]) is None
    assert first_added_source([]) is None
    # hits: 3 in {3}; None misses; pieces {5,7}: 7 in {7}; 2 not in {1} -> 2/4
    assert top1_accuracy([3, None, {5, 7}, 2], [{3}, {1}, {7}, {1}]) == 0.5


def test_alignment_table_row_by_hand():
    row = alignment_table_row([[1, 2, 3], []], [[1], [5, 6]], [[1, 4], []],
                              source_lengths=[3, 10], first_added=[1, None])
    assert row["Length"] == approx(1.5)  # (3 + 0) / 2
    assert row["AER"] == approx(0.75)  # mean of 0.5 and 1.0
    assert row["AER (corpus)"] == approx(2 / 3)
    # IOU vs S ∪ P: {1,2,3} vs {1,4}: 1/4; {} vs {5,6}: 0 -> 0.125
    assert row["IOU"] == approx(0.125)
    # universes {0,1,2} and {0..9}: item 1 A={1,2}, G={1}: TP 1, FP 1; item 2 FN 2
    # F1 = 2 / (2 + 1 + 2) = 0.4
    assert row["F1"] == approx(0.4)
    assert row["Top1"] == 0.5  # 1 in {1,4}; None misses
    assert row["n"] == 2
    # Without universes: item 1 TP 1, FP {2,3} 2, FN {4} 1; item 2 FN 2 -> 2 / (2 + 2 + 3)
    assert alignment_table_row([[1, 2, 3], []], [[1], [5, 6]], [[1, 4], []])["F1"] == approx(
        2 / 7)


# -- distractors (Table 3) ---------------------------------------------------------------------
# Source: first example at 0..3, second at 4..6, </s> at 7 -> source_break 4, source_eos 7.
# Target: BOS at 0, first example at 1..3, second at 4.. -> target_break 4.
def test_distractor_counts_second_half_target():
    # target 6: distractor = first half. source {0,2} wrong, 5 right, 7 (</s>) ignored.
    # target: 5 (= 6-1, forced) and 0 (BOS) ignored; 2 wrong, 4 right.
    assert distractor_counts([0, 2, 5, 7], [5, 0, 2, 4], 6, 4, 4, source_eos=7) == (2, 1)
    # without excluding </s>: 7 is in the second half, which is right for this target
    assert distractor_counts([0, 2, 5, 7], [5, 0, 2, 4], 6, 4, 4) == (2, 1)


def test_distractor_counts_first_half_target():
    # target 2: distractor = second half. source 4 and 6 wrong, 7 ignored, 1 right.
    assert distractor_counts([1, 4, 6, 7], [1, 0], 2, 4, 4, source_eos=7) == (2, 0)
    # if </s> were not excluded it would count as a third wrong token
    assert distractor_counts([1, 4, 6, 7], [1, 0], 2, 4, 4) == (3, 0)


def test_distractor_counts_forced_previous_token_across_the_break():
    # target 4 starts the second half; its forced previous token 3 is in the first half
    # but is never counted; 1 is a real target-side distractor.
    assert distractor_counts([], [3, 1], 4, 4, 4) == (0, 1)
    # with the BOS kept in the count (target_bos=None) position 0 would be wrong too
    assert distractor_counts([], [3, 1, 0], 4, 4, 4, target_bos=None) == (0, 2)
    assert in_second_half(4, 4) and not in_second_half(3, 4)


def test_distractor_table_row_by_hand():
    counts = [(2, 1), (2, 0), (0, 1), (0, 0)]
    second = [True, False, True, True]
    row = distractor_table_row(counts, second)
    assert row["Source Mean"] == approx(1.0)  # (2 + 2 + 0 + 0) / 4
    assert row["Source Frac."] == approx(0.5)  # 2 of 4 have a source distractor
    assert row["Target Mean"] == approx(2 / 3)  # second-half targets: (1 + 1 + 0) / 3
    assert row["Target Frac."] == approx(2 / 3)
    assert row["n"] == 4 and row["n_target"] == 3
    empty = distractor_table_row([(1, 0)], [False])
    assert math.isnan(empty["Target Mean"]) and empty["Source Frac."] == 1.0


# -- analogies (Table 1) -----------------------------------------------------------------------
def test_analogy_table_row_by_hand():
    rationales = [[10, 3, 2], [10, 5], [10, 3, 5, 6, 1]]
    antecedents = [[3], [3], [1]]
    distractors = [[5, 6, 7]] * 3
    exhaustive = [[10, 3], None, [10, 1]]
    row = analogy_table_row(rationales, antecedents, distractors, exhaustive)
    assert row["Length"] == approx(10 / 3)  # (3 + 2 + 5) / 3
    assert row["Ratio"] == approx(2.0)  # (3/2 + 5/2) / 2; example 2 has no exhaustive result
    assert row["Ante"] == approx(2 / 3)  # examples 1 and 3 contain their antecedent
    assert row["No D"] == approx(1 / 3)  # only example 1 avoids 5, 6, 7
    assert row["n"] == 3 and row["n_ratio"] == 2
    assert math.isnan(analogy_table_row(rationales, antecedents, distractors)["Ratio"])
    assert contains_any([1, 2], [2, 9]) and not contains_any([], [1])
    assert approximation_ratio(6, 4) == 1.5
    with pytest.raises(ValueError):
        approximation_ratio(3, 0)


# -- Lambada (Table 2) -------------------------------------------------------------------------
def test_character_spans_to_token_positions():
    # "He saw a big dog." with a zero-width BOS at index 0:
    offsets = [(0, 0), (0, 2), (2, 6), (6, 8), (8, 12), (12, 16), (16, 17)]
    #           BOS     He      " saw"  " a"    " big"   " dog"    "."
    # span [3,6) = "saw" overlaps " saw" only; [13,16) = "dog" overlaps " dog" only
    assert character_spans_to_token_positions(offsets, [[3, 6], [13, 16]]) == [2, 5]
    # [0,2) = "He": the BOS (0,0) is zero-width and never belongs
    assert character_spans_to_token_positions(offsets, [[0, 2]]) == [1]
    # a span inside one token selects it; an empty list selects nothing
    assert character_spans_to_token_positions(offsets, [[9, 10]]) == [4]
    assert character_spans_to_token_positions(offsets, []) == []


def test_word_rationale_union_and_cut():
    # pieces at 5, 6, 7; rationales of targets 5, 6, 7:
    pieces = [[4, 2, 0], [5, 4, 1], [6, 5, 3]]
    # union {0..6}; 6 (the second piece) is after the first piece and dropped
    assert word_rationale(pieces, 5) == {0, 1, 2, 3, 4, 5}
    assert word_rationale([[4, 1]], 5) == {1, 4}  # single-piece word: its rationale


def test_lambada_table_row_by_hand():
    rationales = [{0, 1, 2, 3, 4, 5}, {3, 2}]
    human = [{1, 2}, {0}]
    row = lambada_table_row(rationales, human, [5, 4])
    assert row["Length"] == approx(4.0)  # (6 + 2) / 2
    # IOU: 2/6 and 0/3 -> 1/6
    assert row["IOU"] == approx(1 / 6)
    # F1 over positions 0..4 and 0..3: item 1 (5 dropped) TP 2, FP {0,3,4} 3;
    # item 2 FP {2,3} 2, FN {0} 1 -> 2*2 / (4 + 5 + 1) = 0.4
    assert row["F1"] == approx(0.4)


def test_table_formatting():
    table = markdown_table({"Greedy": {"Length": 7.84, "IOU": math.nan}}, ["Length", "IOU"],
                           {"Length": 1})
    assert table.splitlines() == ["| Method | Length | IOU |", "|---|---|---|",
                                  "| Greedy | 7.8 | - |"]
    assert format_number(0.126, 2) == "0.13"
    assert METHOD_LABELS["signed_gradient"] == "Grad x emb"


# -- faithfulness -----------------------------------------------------------------------------
def test_sufficiency_comprehensiveness_and_aopc():
    # p_full 0.6; R alone gives 0.5: 0.6 - 0.5 = 0.1; a rationale that helps more than the
    # whole context has a negative sufficiency: 0.6 - 0.9 = -0.3
    assert sufficiency(0.6, 0.5) == approx(0.1)
    assert sufficiency(0.6, 0.9) == approx(-0.3)
    # without R the goal falls to 0.2: 0.6 - 0.2 = 0.4
    assert comprehensiveness(0.6, 0.2) == approx(0.4)
    # prefixes at 0.6 (k=1), 0.3, 0.0: mean(0.0, 0.3, 0.6) = 0.3
    assert aopc(0.6, [0.6, 0.3, 0.0]) == approx(0.3)
    assert math.isnan(aopc(0.6, []))


def test_faithfulness_scores_of_one_target():
    # Rationale of 3 tokens; p_full = 0.5.
    # only R[:k]: 0.1, 0.3, 0.45 -> sufficiency 0.5 - 0.45 = 0.05,
    #   AOPC (0.4 + 0.2 + 0.05) / 3 = 0.65 / 3
    # without R[:k]: 0.5, 0.2, 0.05 -> comprehensiveness 0.5 - 0.05 = 0.45,
    #   AOPC (0 + 0.3 + 0.45) / 3 = 0.25
    scores = faithfulness_scores(0.5, [0.1, 0.3, 0.45], [0.5, 0.2, 0.05])
    assert scores == {"p_full": 0.5, "sufficiency": approx(0.05),
                      "comprehensiveness": approx(0.45), "aopc_sufficiency": approx(0.65 / 3),
                      "aopc_comprehensiveness": approx(0.25)}
    empty = faithfulness_scores(0.5, [], [])
    assert all(math.isnan(empty[k]) for k in empty if k != "p_full")
    with pytest.raises(ValueError, match="2 sufficiency probabilities but 1"):
        faithfulness_scores(0.5, [0.1, 0.2], [0.3])


def test_faithfulness_table_row_skips_empty_rationales():
    rows = [faithfulness_scores(0.5, [0.1, 0.3, 0.45], [0.5, 0.2, 0.05]),  # from above
            faithfulness_scores(0.8, [0.4], [0.6]),  # suff 0.4, comp 0.2 (AOPCs alike)
            faithfulness_scores(0.3, [], [])]  # nan everywhere: left out of the means
    row = faithfulness_table_row(rows)
    assert row["n"] == 3.0
    assert row["sufficiency"] == approx((0.05 + 0.4) / 2)
    assert row["comprehensiveness"] == approx((0.45 + 0.2) / 2)
    assert row["aopc_sufficiency"] == approx((0.65 / 3 + 0.4) / 2)
    assert row["aopc_comprehensiveness"] == approx((0.25 + 0.2) / 2)
    assert math.isnan(faithfulness_table_row([])["sufficiency"])
    assert METHOD_LABELS["occlusion"] == "Occlusion" and METHOD_LABELS["random"] == "Random"
