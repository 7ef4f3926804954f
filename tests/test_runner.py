"""The one resumable dataset runner: finished examples are skipped, an interrupted run keeps
what it finished, skip reasons are counted, and files appear whole or not at all."""

from __future__ import annotations

import json

import pytest

from sequential_rationales_experiments.runner import run_examples


def _examples(n: int) -> list[tuple[str, int]]:
    return [(f"ex{i}", i) for i in range(n)]


def test_writes_one_json_per_example_and_counts_reasons(tmp_path):
    def process(i: int) -> dict | str:
        return "odd" if i % 2 else {"value": i * i}

    counts = run_examples(_examples(5), tmp_path / "out", process, desc="test")
    assert counts == {"written": 3, "existing": 0, "odd": 2}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ex0.json", "ex2.json", "ex4.json"]
    assert json.loads((tmp_path / "out" / "ex4.json").read_text()) == {"value": 16}


def test_an_interrupted_run_resumes_with_only_the_missing_examples(tmp_path):
    seen = []

    def failing(i: int) -> dict:
        if i == 3:
            raise KeyboardInterrupt
        seen.append(i)
        return {"i": i}

    with pytest.raises(KeyboardInterrupt):
        run_examples(_examples(6), tmp_path, failing, desc="test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex0.json", "ex1.json", "ex2.json"]

    seen.clear()
    counts = run_examples(_examples(6), tmp_path, lambda i: seen.append(i) or {"i": i},
                          desc="test")
    assert seen == [3, 4, 5]
    assert counts == {"written": 3, "existing": 3}
    assert not list(tmp_path.glob("*.tmp"))


def test_limit_counts_finished_examples_old_and_new(tmp_path):
    run_examples(_examples(2), tmp_path, lambda i: {"i": i}, desc="test")
    counts = run_examples(_examples(10), tmp_path, lambda i: {"i": i}, desc="test", limit=5)
    assert counts == {"written": 3, "existing": 2}
    assert len(list(tmp_path.glob("*.json"))) == 5


def test_a_failed_write_leaves_no_file_to_be_skipped(tmp_path):
    with pytest.raises(TypeError):
        run_examples(_examples(1), tmp_path, lambda i: {"not json": object()}, desc="test")
    assert not list(tmp_path.iterdir())


def test_a_torn_or_empty_result_file_is_redone_not_counted(tmp_path):
    """A crash on a filesystem without atomic rename can leave a partial file behind."""
    (tmp_path / "ex0.json").write_text('{"i": 0')
    (tmp_path / "ex1.json").write_text("")
    (tmp_path / "ex2.json").write_text('{"i": 2}')
    seen = []
    counts = run_examples(_examples(3), tmp_path, lambda i: seen.append(i) or {"i": i},
                          desc="test")
    assert seen == [0, 1]
    assert counts == {"written": 2, "existing": 1}
    assert [json.loads((tmp_path / f"ex{i}.json").read_text()) for i in range(3)] == [
        {"i": 0}, {"i": 1}, {"i": 2}]
