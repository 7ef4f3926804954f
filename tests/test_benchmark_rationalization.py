"""The rationalization benchmark: its plain re-implementation of the paper's algorithm against
literal brute force and against the package, and a smoke run of the script."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales_experiments.commands import benchmark_rationalization as bench

TINY = bench.Config("tiny", "greedy", layers=2, dim=32, vocab=16, length=9, sequences=2)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other work for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    return bench.build_model(TINY, "float32", torch.device("cpu"), seed=0)


@pytest.fixture(scope="module")
def sequences(model):
    """Generated sequences (the model predicts their tokens, so most searches stop early) and a
    random one (many of its targets never reach the argmax and use up the whole context)."""
    generator = torch.Generator().manual_seed(1)
    generated = [bench.generate(model, TINY.vocab, TINY.length, generator) for _ in range(2)]
    random = [torch.randint(TINY.vocab, (TINY.length,), generator=generator)]
    return generated + random


def log_probs(model, ids, subset):
    """log p(. | ids[subset]) from one forward pass over the whole prefix in which every query
    sees only itself and the kept positions (causally)."""
    last = max(subset)
    kept = torch.zeros(last + 1, dtype=torch.bool)
    kept[list(subset)] = True
    visible = (kept[None] | torch.eye(last + 1, dtype=torch.bool)).tril()
    with torch.no_grad():
        logits = model(input_ids=ids[None, :last + 1], attention_mask=visible[None, None]).logits
    return torch.log_softmax(logits[0, -1], dim=-1)


def test_sparse_subsets_keep_their_positions(model, sequences):
    ids = sequences[0]
    for subset in ([3], [0, 4], [1, 2, 6], [0, 3, 5, 7]):
        sparse = bench.last_log_probs(model, ids, torch.tensor([subset]))[0]
        assert torch.allclose(sparse, log_probs(model, ids, subset), atol=1e-5)


def brute_force_greedy(model, ids, t, max_steps):
    """Greedy rationalization as defined: every candidate scored on its own."""
    goal = int(ids[t])
    chosen = [t - 1]
    current = log_probs(model, ids, chosen)
    while int(current.argmax()) != goal and len(chosen) < min(max_steps, t):
        scored = {c: float(log_probs(model, ids, [*chosen, c])[goal])
                  for c in range(t) if c not in chosen}
        best = max(scored.values())
        chosen.append(min(c for c, v in scored.items() if v == best))  # earliest on ties
        current = log_probs(model, ids, chosen)
    return chosen, int(current.argmax()) == goal


def brute_force_exhaustive(model, ids, t, max_steps):
    """The most probable of the smallest sufficient subsets containing ``t-1``."""
    goal = int(ids[t])
    best = None
    for size in range(1, min(max_steps, t) + 1):
        scored = []
        for combo in itertools.combinations(range(t - 1), size - 1):
            lp = log_probs(model, ids, [t - 1, *combo])
            scored.append((float(lp[goal]), int(lp.argmax()) == goal, [t - 1, *combo]))
        sufficient = [s for s in scored if s[1]]
        pool = sufficient or scored
        top = max(s[0] for s in pool)
        best = next(s for s in pool if s[0] == top)  # first enumerated on ties
        if sufficient:
            return best[2], True
    return best[2], False


@pytest.mark.parametrize("max_steps", [100, 3])
def test_paper_greedy_is_greedy_by_definition(model, sequences, max_steps):
    sizes, reached = set(), set()
    for ids in sequences:
        for t in range(1, TINY.length):
            expected = brute_force_greedy(model, ids, t, max_steps)
            assert bench.paper_greedy(model, ids, t, max_steps) == expected
            sizes.add(len(expected[0]))
            reached.add(expected[1])
    # Meaningful only if searches stopped at several sizes, with and without the argmax.
    assert len(sizes) >= 3 and reached == {True, False}


def test_paper_exhaustive_is_the_smallest_sufficient_subset(model, sequences):
    sizes = set()
    for ids in sequences[1:3]:
        for t in range(1, TINY.length):
            expected = brute_force_exhaustive(model, ids, t, max_steps=3)
            assert bench.paper_exhaustive(model, ids, t, max_steps=3) == expected
            sizes.add((len(expected[0]), expected[1]))
    assert len(sizes) >= 3


def test_paper_integrated_gradients_are_complete(model, sequences):
    """Attributions sum to log p(y_t | x) - log p(y_t | zero token embeddings)."""
    ids, t = sequences[0], TINY.length - 1
    scores = bench.paper_integrated_gradient_scores(model, ids, t, steps=200)
    positions = torch.arange(t)[None]
    embeds = model.get_input_embeddings()(ids[None, :t])
    with torch.no_grad():
        ends = [torch.log_softmax(model(inputs_embeds=e, position_ids=positions).logits[0, -1],
                                  dim=-1)[int(ids[t])] for e in (embeds, 0 * embeds)]
    assert float(scores.sum()) == pytest.approx(float(ends[0] - ends[1]), rel=1e-2, abs=1e-3)


@pytest.mark.parametrize("method, max_steps", [("greedy", 100), ("greedy", 3),
                                               ("exhaustive", 3), ("integrated_gradient", 100)])
def test_paper_agrees_with_the_package(model, sequences, method, max_steps):
    adapter = HuggingFaceCausalLM(model)
    targets = range(1, TINY.length)
    for ids in sequences:
        paper = bench.paper_rationalize(model, ids, targets, method, max_steps, ig_steps=8)
        result = rationalize(adapter, RationalizationProblem(ids, targets=list(targets)),
                             method, max_steps=max_steps, integrated_gradient_steps=8)
        assert [r.target_rationale for r in result.rationales] == paper


def test_every_flag_is_explained():
    for action in bench.build_parser()._actions:
        assert action.help, action.option_strings


def test_quick_run_reports_every_configuration(tmp_path, capsys):
    out = tmp_path / "table.json"
    rows = bench.main(["--quick", "--threads", "1", "--json", str(out)])
    assert [r["config"] for r in rows] == [c.name for c in bench.CPU_CONFIGS]
    report = json.loads(out.read_text())
    assert report["rows"] == rows and report["quick"] and report["max_tokens_per_batch"] == "auto"
    for row in rows:
        config = bench.quick_config(bench.ALL_CONFIGS[row["config"]])
        assert row["targets"] == (config.targets or config.length - bench.PROMPT_TOKENS)
        assert row["identical"] == row["targets"]
        assert row["identical_of"] == f"{row['targets']}/{row['targets']}"
        assert row["paper_s"] > 0 and row["ours_s"] > 0
        assert row["ratio"] == pytest.approx(row["paper_s"] / row["ours_s"])
        assert 0 < row["forward_share"] <= 1
    printed = capsys.readouterr().out
    for header in ("paper s", "ours s", "ratio", "identical", "fwd share"):
        assert header in printed


def test_dtypes_and_configurations_select_the_rows():
    rows = bench.main(["--quick", "--threads", "1", "--configs", "gpt2-small-100",
                       "exhaustive-2x128-v500-40", "--dtype", "float32", "bfloat16",
                       "--max-tokens-per-batch", "64"])
    assert [(r["config"], r["dtype"]) for r in rows] == [
        ("gpt2-small-100", "float32"), ("gpt2-small-100", "bfloat16"),
        ("exhaustive-2x128-v500-40", "float32"), ("exhaustive-2x128-v500-40", "bfloat16")]
    assert [r["max_steps"] for r in rows] == [10, 10, 3, 3]


def test_long_rationale_configurations_use_random_text_and_the_last_targets():
    (config,) = [c for c in bench.CPU_CONFIGS if c.name == "long-2x128-v500-400"]
    assert (config.text, config.targets, config.max_steps) == ("random", 8, 16)
    rows = bench.main(["--configs", "long-2x128-v500-400", "--threads", "1", "--sequences",
                       "1", "--max-steps", "3"])
    assert rows[0]["targets"] == 8 and rows[0]["identical"] == 8
    assert rows[0]["mean_size"] == 3.0  # random text: every search runs to max_steps


def test_scaling_rows_and_their_processes(capsys):
    row = bench.scaling_row(48, bench.parse_args(["--threads", "1", "--max-steps", "3"]))
    assert (row["length"], row["targets"], row["max_steps"]) == (48, 8, 3)
    assert row["identical_of"] == "8/8" and row["ratio"] == pytest.approx(
        row["paper_s"] / row["ours_s"])
    assert row["peak_mib"] >= row["before_mib"] > 0
    rows = bench.main(["--scaling", "--lengths", "40", "64", "--paper-up-to", "50",
                       "--max-steps", "2", "--threads", "1"])
    assert [r["length"] for r in rows] == [40, 64]
    assert "paper_s" in rows[0] and "paper_s" not in rows[1]
    printed = capsys.readouterr().out
    assert "peak MiB" in printed and "search MiB" in printed
