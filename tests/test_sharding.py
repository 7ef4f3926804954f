"""Sharded runs: the pieces of :mod:`sequential_rationales_integrations.sharding` by hand, then
real ``torchrun --nproc_per_node 2`` runs on CPU (gloo) of the ``rationalize`` command, of the
shared runner and of a dataset program through it, each equal to the single-process run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from sequential_rationales.validation import InputError
from sequential_rationales_integrations import rationalize_cli as rationalize
from sequential_rationales_integrations import sharding
from sequential_rationales_integrations.sharding import Shard

from .test_rationalize_cli import TEXTS, WORDS, read, save_tiny_lm, without_durations

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"
SHARED_DATA = ROOT.parent / "shared" / "data"


def torchrun(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` from the repository root, one thread
    per rank (as the single-process runs compared with them, so that sums add up alike)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node", "2",
                           *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-2000:]
    return done


def in_one_thread(main, *args: object):
    """A program's ``main`` in this process, on one thread as each torchrun rank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(list(map(str, args)))
    finally:
        torch.set_num_threads(threads)


# -- the pieces -------------------------------------------------------------------------------
def test_shard_from_the_launchers_environment(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert sharding.current_shard() == Shard(0, 1, 0)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="outside WORLD_SIZE"):
        sharding.current_shard()
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    shard = sharding.current_shard()
    assert shard == Shard(2, 3, 0) and shard.distributed and not shard.is_main
    assert [i for i in range(10) if shard.owns(i)] == [2, 5, 8] and shard.count(10) == 3
    assert sharding.shard_device("cuda", shard) == "cuda:0"
    assert sharding.shard_device("cuda:1", shard) == "cuda:1"
    assert sharding.shard_device("cuda", Shard()) == "cuda"
    sharding.init(Shard())  # a single process joins no group
    assert not torch.distributed.is_initialized()
    assert sharding.gather("x", Shard()) == ["x"]


def test_torn_last_lines_are_cut_and_parts_merge_in_order(tmp_path):
    out = tmp_path / "out.jsonl"
    assert sharding.part_path(out, 1, 2) == tmp_path / "out.part-1-of-2.jsonl"
    out.write_text('{"input_index": 0}\n{"input_index": 3}\n{"input_ind')
    assert sharding.read_records(out) == [{"input_index": 0}, {"input_index": 3}]
    with sharding.open_for_append(out) as f:
        sharding.append_record(f, {"input_index": 4})
    assert out.read_text() == '{"input_index": 0}\n{"input_index": 3}\n{"input_index": 4}\n'
    sharding.part_path(out, 0, 2).write_text('{"input_index": 2}\n{"input_index": 3, "x": 1}\n')
    sharding.part_path(out, 1, 3).write_text('{"input_index": 1}\n{"input_index": 5}\n{"in')
    assert sharding.merge_records(out, key=lambda r: r["input_index"]) == 6
    assert read(out) == [{"input_index": i} for i in range(6)]  # the first record of 3 kept
    assert sharding.part_paths(out) == []
    mtime = out.stat().st_mtime_ns
    sharding.merge_records(out, key=lambda r: r["input_index"])
    assert out.stat().st_mtime_ns == mtime  # nothing to merge: not rewritten
    out.write_text('{"input_index": 0}\nnot json\n{"input_index": 1}\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        sharding.read_records(out)


# -- torchrun ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory) -> Path:
    return save_tiny_lm(tmp_path_factory.mktemp("tiny_lm"))


def test_torchrun_rationalize_merges_one_record_per_input_in_order(lm_dir, tmp_path):
    inputs = tmp_path / "in.txt"
    texts = [*TEXTS, "the mat", "big red dog ran to the house", "a cat", "the dog sat"]
    inputs.write_text("\n".join(texts[:5]) + "\n")
    common = ["--model", lm_dir, "--device", "cpu", "--input", inputs, "--max-steps", "5"]
    in_one_thread(rationalize.main, *common, "--out", tmp_path / "single.jsonl")
    out = tmp_path / "sharded.jsonl"
    done = torchrun("scripts/rationalize.py", *common, "--out", out)
    assert "5 inputs (5 rationalized now" in done.stdout
    assert done.stdout.count(" inputs (") == 1  # only rank 0 prints the summary
    records = read(out)
    assert [r["input_index"] for r in records] == [0, 1, 2, 3, 4]
    assert without_durations(records) == without_durations(read(tmp_path / "single.jsonl"))
    assert sharding.part_paths(out) == []

    # Resume with more inputs, and the leftovers of a killed 3-rank run (a part file with one
    # finished record and a torn line): only the inputs in neither file are computed.
    inputs.write_text("\n".join(texts) + "\n")
    in_one_thread(rationalize.main, *common, "--out", tmp_path / "single.jsonl")
    expected = without_durations(read(tmp_path / "single.jsonl"))
    sharding.part_path(out, 2, 3).write_text(
        json.dumps(read(tmp_path / "single.jsonl")[5]) + '\n{"input_index": 6, "te')
    done = torchrun("scripts/rationalize.py", *common, "--out", out)
    assert "7 inputs (1 rationalized now" in done.stdout
    assert without_durations(read(out)) == expected
    assert sharding.part_paths(out) == []


RUNNER_SCRIPT = """
import json, os, sys
from sequential_rationales_experiments.runner import run_examples

rank, out = int(os.environ["RANK"]), sys.argv[1]
for n, limit in ((7, None), (9, 8)):  # twice in one process: one process group serves both
    counts = run_examples([(f"ex{i}", i) for i in range(n)], out, lambda i: "skipped" if i == 4
                          else {"i": i, "n": n, "rank": rank}, desc="test", limit=limit)
    with open(f"{out}.report-{n}-{rank}", "w") as f:  # the ranks' stdout may interleave
        json.dump(counts, f)
"""


def test_torchrun_shares_the_runner_and_sums_its_counts(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUNNER_SCRIPT))
    out = tmp_path / "out"
    out.mkdir()
    (out / "ex0.json").write_text('{"i": 0, "rank": "befo')  # torn: redone
    torchrun(script, out)

    def reports(n: int) -> list[dict]:
        return [json.loads(Path(f"{out}.report-{n}-{rank}").read_text()) for rank in (0, 1)]

    assert reports(7) == [{"written": 6, "existing": 0, "skipped": 1}] * 2
    # Then 9 examples, at most 8 finished: each rank stops at its 4 (3 of them existing).
    assert reports(9) == [{"written": 2, "existing": 6, "skipped": 1}] * 2
    results = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(results) == [f"ex{i}" for i in range(9) if i != 4]
    assert all(r["rank"] == r["i"] % 2 for r in results.values())
    assert [i for i in range(9) if results.get(f"ex{i}", {}).get("n") == 9] == [7, 8]


def test_torchrun_of_a_dataset_program_through_the_runner(tmp_path):
    """``huggingface/rationalize_analogies.py`` shards with no change of its own."""
    if not (SHARED_DATA / "questions-words.txt").is_file():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    from sequential_rationales_experiments import analogies
    from sequential_rationales_experiments.commands import rationalize_analogies

    from .test_hf_experiments import tiny_gpt2, word_level_tokenizer

    pairs = analogies.read_analogy_pairs(SHARED_DATA / analogies.ANALOGIES_FILE)
    templates = analogies.read_templates(SHARED_DATA / analogies.TEMPLATES_FILE)
    texts = [analogies.fill_template(templates["family"], a, b)[0] for a, b in pairs["family"]]
    tokenizer = word_level_tokenizer(texts + [" ".join(WORDS)])
    model_dir = tmp_path / "model"
    tiny_gpt2(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    common = ["--model_name_or_path", model_dir, "--data_dir", SHARED_DATA, "--categories",
              "family", "--max_examples", "5", "--no_filter", "--device", "cpu", "--max_steps",
              "4"]
    in_one_thread(rationalize_analogies.main, *common, "--out", tmp_path / "single")
    torchrun("huggingface/rationalize_analogies.py", *common, "--out", tmp_path / "sharded")

    def results(folder: Path) -> dict[str, dict]:
        return {p.name: without_durations([json.loads(p.read_text())])[0]
                for p in sorted(folder.glob("*.json")) if p.name != "provenance.json"}

    assert len(results(tmp_path / "single")) == 5
    assert results(tmp_path / "sharded") == results(tmp_path / "single")
    provenances = [json.loads((tmp_path / run / "provenance.json").read_text())
                   for run in ("single", "sharded")]
    assert provenances[0] == provenances[1]


def test_a_killed_torchrun_run_resumes_with_one_record_per_input(lm_dir, tmp_path):
    """SIGKILL the launcher and both ranks after their first records (the part files stay
    behind), then launch again: the merged file has every input once, in order."""
    inputs = tmp_path / "in.txt"
    texts = [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(12 + i % 5)) for i in range(30)]
    inputs.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["scripts/rationalize.py", "--model", lm_dir, "--device", "cpu", "--input", inputs,
            "--out", out]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node", "2",
                             *map(str, args)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def finished() -> int:
        return sum(p.read_text().count("\n") for p in sharding.part_paths(out))

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and finished() < 4:
        time.sleep(0.02)
    victims = [proc.pid, *descendants(proc.pid)]  # torchrun's workers: its children
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    killed_at = finished()
    assert len(victims) >= 3 and 4 <= killed_at < len(texts) and not out.exists()
    done = torchrun(*args)
    assert f"{len(texts)} inputs ({len(texts) - killed_at} rationalized now" in done.stdout
    records = read(out)
    assert [r["input_index"] for r in records] == list(range(len(texts)))
    assert [r["text"] for r in records] == texts
    assert sharding.part_paths(out) == []


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, and theirs (found by parent id)."""
    children = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                                               capture_output=True, text=True).stdout.split()]
    return [*children, *(d for child in children for d in descendants(child))]
