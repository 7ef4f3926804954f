"""Table 3 and Table 4 scripts on hand-made logs with hand-computed values."""

from __future__ import annotations

import json

import pytest

from sequential_rationales_experiments.commands import (
    evaluate_alignment_rationales,
    evaluate_distractor_rationales,
)


def write_log(directory, index, source_len, entries):
    directory.mkdir(parents=True, exist_ok=True)
    log = {"source_tokens": list(range(source_len)), "rationalizations": [
        {"target_position": t, "source_rationale": s, "target_rationale": g}
        for t, s, g in entries]}
    (directory / f"{index}.json").write_text(json.dumps(log))


def test_distractor_table_hand_computed(tmp_path):
    # Source: 6 tokens + </s> (position 6), second sentence from 3. Target pieces 0..3 at
    # decoder positions 1..4, second sentence from piece 2 = decoder position 3.
    results = tmp_path / "results"
    write_log(results / "greedy", 0, 7, [
        (1, [0, 4, 6], [0]),     # first half: source 4 is wrong; </s> not counted -> (1, 0)
        (3, [1, 2, 5], [2, 1]),  # second half: sources 1, 2 wrong; target 1 wrong -> (2, 1)
        (4, [3], [3, 0]),        # second half: nothing wrong -> (0, 0)
    ])
    breaks = tmp_path / "distractors.jsonl"
    breaks.write_text(json.dumps({"index": 0, "source_break": 3, "target_break": 2}) + "\n")
    rows = evaluate_distractor_rationales.main(
        ["--results_dir", str(results), "--breaks", str(breaks), "--out",
         str(tmp_path / "table")])
    row = rows["greedy"]
    assert row["Source Mean"] == pytest.approx(1.0)       # (1 + 2 + 0) / 3
    assert row["Source Frac."] == pytest.approx(2 / 3)
    assert row["Target Mean"] == pytest.approx(0.5)       # second-half targets: (1 + 0) / 2
    assert row["Target Frac."] == pytest.approx(0.5)
    assert (tmp_path / "table.csv").exists() and (tmp_path / "table.json").exists()


def test_alignment_table_hand_computed(tmp_path):
    # Target pieces 0, 1 form word 0 and piece 2 is word 1; source has 3 tokens + </s>.
    gold = {"index": 0, "target_word_index": [0, 0, 1], "sure": [[0, 0], [1, 2]],
            "possible": [[0, 0], [1, 2], [2, 1]]}
    alignments = tmp_path / "gold.jsonl"
    alignments.write_text(json.dumps(gold) + "\n")
    results = tmp_path / "results"
    write_log(results / "greedy", 0, 4, [(1, [0, 2], [0]), (2, [1], [1]), (3, [1], [2])])
    write_log(results / "greedy_top_1", 0, 4, [(1, [2, 0], [0]), (2, [1], [1]),
                                               (3, [0], [2])])
    rows = evaluate_alignment_rationales.main(
        ["--results_dir", str(results), "--alignments", str(alignments), "--top_1"])
    row = rows["greedy"]
    # Word 0: A = {0, 1, 2}, S = {0}, P = {0, 2}: AER = 1 - (2 + 1) / (1 + 3) = 0.25.
    # Word 1: A = S = P = {1}: AER = 0.
    assert row["AER"] == pytest.approx(0.125)
    assert row["Length"] == pytest.approx(2.0)
    assert row["IOU"] == pytest.approx((2 / 3 + 1) / 2)
    assert row["F1"] == pytest.approx(6 / 7)  # tp 3, fp 1, fn 0
    # Top1: word 0's first added sources {2, 1} include aligned 2; word 1's {0} misses.
    assert row["Top1"] == pytest.approx(0.5)
    only_greedy = tmp_path / "only_greedy"
    write_log(only_greedy / "greedy", 0, 4, [(1, [0], [0])])
    with pytest.raises(SystemExit, match="greedy_top_1"):
        evaluate_alignment_rationales.main(
            ["--results_dir", str(only_greedy), "--alignments", str(alignments), "--top_1"])


def test_figure6_grid_marks_rationale_tokens_by_order(tmp_path):
    from sequential_rationales_experiments.commands import plot_iwslt_rationalization

    log = {"method": "greedy", "source_tokens_text": ["a", "b", "</s>"],
           "target_tokens_text": ["</s>", "x", "y"],
           "rationalizations": [
               {"target_position": 1, "log": [
                   {"added_token_position": 0, "from": "target"},
                   {"added_token_position": 1, "from": "source"}]},
               {"target_position": 2, "log": [
                   {"added_token_position": 1, "from": "target"}]}]}
    rows, columns, labels, n_source = plot_iwslt_rationalization.rationale_grid(log)
    assert columns == ["a", "b", "</s>", "</s>", "x", "y"] and n_source == 3
    assert labels == ["x", "y"]
    assert rows[0] == [0.0, 0.5, 0.0, 1.0, 0.0, 0.0]  # first added: 1, second: 0.5
    assert rows[1] == [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    path = tmp_path / "log.json"
    path.write_text(json.dumps(log))
    png = plot_iwslt_rationalization.main(["--log", str(path), "--out", str(tmp_path / "f6")])
    assert png.exists() and (tmp_path / "f6.pdf").exists()
