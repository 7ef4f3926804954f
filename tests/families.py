"""The model-family conformance checks: every causal LM either gives the paper's objective
exactly or is refused in one sentence.

The reference for a subset ``S`` of the context of target ``t`` needs no code of ours: the full
prefix ``y_0 .. y_{t-1}`` with ``position_ids = arange(t)`` and a 2-D attention mask that is 1
on ``S``, logits read at position ``t - 1`` (only ``y_S``, at its original positions). Where a
family's own masking counts positions as columns (sliding windows included), this is the
paper's objective by construction. A second check needs no convention at all: changing the
tokens outside ``S`` must not change the score.

``python -m tests.families`` prints the outcome table of the README (exact / refused, and why).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sequential_rationales import BASELINE_METHODS, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.baselines import gradient_norm_scores
from sequential_rationales.search import (
    RationalizationProblem,
    batch_from_codes,
    build_batch,
    greedy_search,
)

LENGTH = 12  # long enough for a window of 4 to bite several times
WINDOW = 4
TOLERANCE = 1e-4  # float32 log-probabilities
MAX_STEPS = 3  # greedy rationale sizes compared with the plain one-target-at-a-time greedy
# Orderings that need no search of their own; exhaustive runs on a shorter problem.
ORDERINGS = list(BASELINE_METHODS)


@dataclass(frozen=True)
class Variant:
    """One way to build a family: attention implementation, a small window, ALiBi."""

    attn: str = "eager"
    window: int | None = None
    alibi: bool | None = None

    @property
    def label(self) -> str:
        parts = [self.attn]
        if self.window:
            parts.append(f"window {self.window}")
        if self.alibi is not None:
            parts.append("alibi" if self.alibi else "no alibi")
        return ", ".join(parts)


def reference_log_probs(model: torch.nn.Module, ids: torch.Tensor, subset: list[int],
                        t: int) -> torch.Tensor:
    """``log p(. | y_S)`` of target ``t`` from the full prefix with a 2-D mask on ``S``."""
    mask = torch.zeros(1, t, dtype=torch.long)
    mask[0, subset] = 1
    with torch.no_grad():
        logits = model(input_ids=ids[None, :t], position_ids=torch.arange(t)[None],
                       attention_mask=mask).logits
    return torch.log_softmax(logits[0, t - 1].float(), -1)


def random_subsets(length: int, per_target: int, generator: torch.Generator
                   ) -> list[tuple[int, list[int]]]:
    """``(t, S)`` pairs: every target, ``S`` random but always holding ``t - 1``."""
    pairs = []
    for t in range(1, length):
        for _ in range(per_target):
            k = int(torch.randint(0, t, (1,), generator=generator))
            rest = torch.randperm(t - 1, generator=generator)[:k].tolist() if t > 1 else []
            pairs.append((t, sorted(set(rest) | {t - 1})))
    return pairs


def check_greedy_step_by_step(model: torch.nn.Module, ids: torch.Tensor, t: int,
                              rationale: list[int], max_steps: int) -> None:
    """The paper's Algorithm 1 for one target, every subset scored by the reference: each
    token the search added has the best reference score among the candidates (up to float
    noise: a window can make several candidates exactly tie, and the search then takes the
    earliest), and the search stops where the reference's argmax is reached."""
    goal = int(ids[t])
    assert rationale[0] == t - 1, f"target {t} starts with {rationale[0]}, not {t - 1}"
    for k in range(1, len(rationale) + 1):
        chosen = rationale[:k]
        reached = int(reference_log_probs(model, ids, sorted(chosen), t).argmax()) == goal
        last = k == len(rationale)
        if not last:
            assert not reached, f"target {t}: the argmax was reached at {chosen}"
            values = {c: float(reference_log_probs(model, ids, sorted(chosen + [c]), t)[goal])
                      for c in range(t) if c not in chosen}
            best = max(values.values())
            assert values[rationale[k]] >= best - 1e-4, (
                f"target {t}: after {chosen} the search added {rationale[k]}, the reference "
                f"prefers {max(values, key=values.get)}")
        else:
            assert reached or len(chosen) >= min(t, max_steps), (
                f"target {t}: stopped at {chosen} without reaching the argmax")


def _max_gap(scores: torch.Tensor, references: list[float]) -> float:
    expected = torch.tensor(references, dtype=torch.float64)
    return float((scores[:, 0].detach().cpu() - expected).abs().max())


def check_exact(model: torch.nn.Module, adapter: HuggingFaceCausalLM, seed: int = 0,
                greedy: bool = True) -> dict[str, float]:
    """Assert the paper's objective in every batching mode; returns the worst gaps."""
    generator = torch.Generator().manual_seed(seed)
    high = min(adapter.vocab_size, 100)
    ids = torch.randint(3, high, (LENGTH,), generator=generator)
    problem = RationalizationProblem(ids)
    pairs = random_subsets(LENGTH, 3, generator)
    goals = torch.tensor([int(ids[t]) for t, _ in pairs])
    refs = [float(reference_log_probs(model, ids, s, t)[int(ids[t])]) for t, s in pairs]
    gaps = {}

    # Single rows, then equal-length rows batched together, then every row padded together.
    single = torch.cat([adapter.score(batch_from_codes(problem, torch.tensor([s])), goals[i:i + 1])
                        for i, (_, s) in enumerate(pairs)])
    gaps["single rows"] = _max_gap(single, refs)
    equal = torch.zeros(len(pairs), 3, dtype=torch.float64)
    for size in sorted({len(s) for _, s in pairs}):
        rows = [i for i, (_, s) in enumerate(pairs) if len(s) == size]
        codes = torch.tensor([pairs[i][1] for i in rows])
        equal[rows] = adapter.score(batch_from_codes(problem, codes), goals[rows])
    gaps["equal-length rows"] = _max_gap(equal, refs)
    padded = adapter.score(build_batch(problem, [s for _, s in pairs]), goals)
    gaps["padded rows"] = _max_gap(padded, refs)

    # The dropped tokens must not matter: replace every one of them.
    for i, (t, s) in enumerate(pairs[::4]):
        changed = ids.clone()
        outside = [p for p in range(t) if p not in s]
        changed[outside] = (ids[outside] + 1 - 3) % (high - 3) + 3
        other = adapter.score(batch_from_codes(RationalizationProblem(changed),
                                               torch.tensor([s])), goals[4 * i:4 * i + 1])
        gap = float((other[0, 0] - single[4 * i, 0]).abs().detach())
        gaps["leak"] = max(gaps.get("leak", 0.0), gap)

    # Cached prefixes: each subset continues its own first tokens, where the model caches.
    cached = [(i, s) for i, (_, s) in enumerate(pairs) if len(s) >= 2]
    bases = [s[:-1] for _, s in cached]
    by_size: dict[int, list[int]] = {}
    for j, base in enumerate(bases):
        by_size.setdefault(len(base), []).append(j)
    for size, members in by_size.items():
        cache = adapter.prefix_cache(batch_from_codes(problem, torch.tensor(
            [bases[j] for j in members])))
        if cache is None:
            continue
        for q in range(1, size + 1):
            suffix = torch.tensor([cached[j][1][q:] for j in members])
            rows = [cached[j][0] for j in members]
            scores = adapter.score_after_prefix(cache, torch.arange(len(members)), q,
                                                batch_from_codes(problem, suffix), goals[rows])
            gap = _max_gap(scores, [refs[r] for r in rows])
            gaps["cached prefixes"] = max(gaps.get("cached prefixes", 0.0), gap)

    # Gradients of a target alone and inside a padded batch of every target are the same
    # (or refused in one sentence, as check_methods asserts).
    try:
        alone = {t: gradient_norm_scores(adapter, problem, [t])[t] for t in (3, LENGTH - 1)}
        batched = gradient_norm_scores(adapter, problem, problem.targets)
    except ValueError:
        alone = {}
    if alone:
        gaps["gradients batched"] = max(
            float(((batched[t] - g).abs() / g.abs().max().clamp(min=1e-12)).max())
            for t, g in alone.items())

    for mode, gap in gaps.items():
        assert gap <= TOLERANCE, f"{mode}: max |delta log p| {gap:.3g} > {TOLERANCE}"

    if greedy:
        found = greedy_search(adapter, problem, max_steps=MAX_STEPS)
        for target in found:
            check_greedy_step_by_step(model, ids, target.target_position,
                                      [token.position for token in target.rationale],
                                      MAX_STEPS)
    return gaps


def check_input_embedding(adapter: HuggingFaceCausalLM, seed: int = 0) -> None:
    """What ``input_embedding`` says the first block sees is what it sees, up to the constant
    factor of an embedding scale (which gradient x input does not notice)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, min(adapter.vocab_size, 100), (8,), generator=generator)
    batch = batch_from_codes(RationalizationProblem(ids), torch.tensor([[0, 2, 3, 6, 7]]))
    try:
        claimed = adapter.input_embedding(batch).target.detach()
    except ValueError as error:  # refused: signed_gradient refuses the same way
        assert "\n" not in str(error)
        return
    seen = []

    def capture(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        seen.append(hidden.detach())

    block = adapter.layers()["target"][0]
    handle = block.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            adapter.logits(batch)
    finally:
        handle.remove()
    actual = seen[0]
    if not adapter.sparse:  # scattered to positions: keep the subset's columns
        actual = actual[:, batch.target_positions[0]]
    factor = (actual * claimed).sum() / (claimed * claimed).sum()
    gap = float((actual - factor * claimed).abs().max() / actual.abs().max())
    assert gap <= 1e-4, f"the first block's input is not input_embedding (gap {gap:.3g})"


def check_methods(adapter: HuggingFaceCausalLM, seed: int = 0) -> dict[str, str]:
    """Every registered method runs to finite results or refuses in one sentence."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, min(adapter.vocab_size, 100), (6,), generator=generator)
    problem = RationalizationProblem(ids)
    outcome = {}
    for method in ORDERINGS + ["exhaustive"]:
        try:
            result = rationalize(adapter, problem, method=method, max_steps=2,
                                 integrated_gradient_steps=4)
        except (ValueError, TypeError) as error:
            message = str(error)
            assert message and "\n" not in message, f"{method}: multi-line refusal {message!r}"
            outcome[method] = f"refused: {message}"
            continue
        for target in result.rationales:
            assert target.rationale, f"{method}: empty rationale for {target.target_position}"
            for step in target.steps:
                assert 0.0 <= step.true_token_prob <= 1.0, f"{method}: bad probability"
        outcome[method] = "ok"
    return outcome


def seq2seq_reference(model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor,
                      src_subset: list[int], tgt_subset: list[int], t: int) -> torch.Tensor:
    """``log p(. | x_S, y_S)`` of target ``t``: the whole source with a 2-D mask on its kept
    tokens (the final ``</s>`` always kept), the target prefix with a 2-D mask on its kept
    tokens; every token at its own position, by construction."""
    src_mask = torch.zeros(1, len(src), dtype=torch.long)
    src_mask[0, sorted(set(src_subset) | {len(src) - 1})] = 1
    tgt_mask = torch.zeros(1, t, dtype=torch.long)
    tgt_mask[0, tgt_subset] = 1
    with torch.no_grad():
        logits = model(input_ids=src[None], attention_mask=src_mask,
                       decoder_input_ids=tgt[None, :t], decoder_attention_mask=tgt_mask).logits
    return torch.log_softmax(logits[0, t - 1].float(), -1)


def check_exact_seq2seq(model: torch.nn.Module, seed: int = 0) -> dict[str, float]:
    """Assert the paper's objective for an encoder-decoder, single and padded rows, and that
    the dropped source and target tokens do not matter."""
    from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

    config = model.config
    generator = torch.Generator().manual_seed(seed)
    high = min(int(config.vocab_size), 100)
    specials = {config.pad_token_id, config.eos_token_id, config.decoder_start_token_id,
                getattr(config, "bos_token_id", None)}
    words = torch.tensor([i for i in range(high) if i not in specials])

    def sample(n: int) -> torch.Tensor:
        return words[torch.randint(0, len(words), (n,), generator=generator)]

    src = torch.cat([sample(6), torch.tensor([config.eos_token_id])])
    tgt = torch.cat([torch.tensor([config.decoder_start_token_id]), sample(6)])
    adapter = HuggingFaceSeq2Seq(model, len(src))
    problem = RationalizationProblem(tgt, source_ids=src)
    s = len(src)
    rows = []
    for t in range(1, len(tgt)):
        for _ in range(3):
            source = torch.randperm(s - 1, generator=generator)[
                :int(torch.randint(0, s, (1,), generator=generator))].tolist()
            target = torch.randperm(t - 1, generator=generator)[
                :int(torch.randint(0, t, (1,), generator=generator))].tolist() if t > 1 else []
            rows.append((t, sorted(source), sorted(set(target) | {t - 1})))
    goals = torch.tensor([int(tgt[t]) for t, _, _ in rows])
    refs = [float(seq2seq_reference(model, src, tgt, a, b, t)[int(tgt[t])]) for t, a, b in rows]
    codes = [a + [s + p for p in b] for _, a, b in rows]
    gaps = {}
    single = torch.cat([adapter.score(build_batch(problem, [c]), goals[i:i + 1])
                        for i, c in enumerate(codes)])
    gaps["single rows"] = _max_gap(single, refs)
    gaps["padded rows"] = _max_gap(adapter.score(build_batch(problem, codes), goals), refs)
    for i, (t, a, b) in enumerate(rows[::3]):
        src2, tgt2 = src.clone(), tgt.clone()
        out_src = [p for p in range(s - 1) if p not in a]
        out_tgt = [p for p in range(t) if p not in b]
        src2[out_src] = sample(len(out_src))
        tgt2[out_tgt] = sample(len(out_tgt))
        other = adapter.score(build_batch(RationalizationProblem(tgt2, source_ids=src2),
                                          [codes[3 * i]]), goals[3 * i:3 * i + 1])
        gap = float((other[0, 0] - single[3 * i, 0]).abs().detach())
        gaps["leak"] = max(gaps.get("leak", 0.0), gap)
    for mode, gap in gaps.items():
        assert gap <= TOLERANCE, f"{mode}: max |delta log p| {gap:.3g} > {TOLERANCE}"
    return gaps


def seq2seq_outcome(model_type: str, attn: str) -> str:
    """``"exact"``, ``"refused: ..."`` or ``"skipped: ..."`` for an encoder-decoder."""
    from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq
    from tests.model_zoo import ZooSkip, tiny_seq2seq

    try:
        model = tiny_seq2seq(model_type, attn_implementation=attn)
    except ZooSkip as why:
        return f"skipped: {why}"
    config = model.config
    if getattr(config, "decoder_start_token_id", None) is None and hasattr(config, "vocab_size"):
        # Default configs leave it to checkpoints: T5-style models start with the pad id.
        t5_style = hasattr(config, "relative_attention_num_buckets")
        config.decoder_start_token_id = config.pad_token_id if t5_style else config.eos_token_id
    try:
        HuggingFaceSeq2Seq(model, 7)
        check_exact_seq2seq(model)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert "\n" not in message and type(model).__name__ in message, message
        return f"refused: {message}"
    return "exact"


def build_adapter(model: torch.nn.Module) -> tuple[HuggingFaceCausalLM | None, str | None]:
    """The adapter, or the one-sentence refusal (asserted to be one sentence naming it)."""
    try:
        return HuggingFaceCausalLM(model), None
    except (ValueError, TypeError) as error:
        message = str(error)
        name = type(model).__name__
        assert "\n" not in message, f"multi-line refusal: {message!r}"
        assert name in message, f"the refusal does not name {name}: {message!r}"
        return None, message


def causal_variants(model_type: str) -> list[Variant]:
    from tests.model_zoo import sliding_window_types

    variants = [Variant("eager"), Variant("sdpa")]
    if model_type in sliding_window_types():
        variants += [Variant("eager", WINDOW), Variant("sdpa", WINDOW)]
    if model_type in ("falcon", "mpt"):
        variants += [Variant("eager", alibi=True), Variant("eager", alibi=False)]
    return variants


def family_outcome(model_type: str, variant: Variant, greedy: bool = True) -> str:
    """``"exact"`` (every check passed), ``"refused: ..."`` or ``"skipped: ..."``."""
    from tests.model_zoo import ZooSkip, tiny_causal_lm

    try:
        model = tiny_causal_lm(model_type, attn_implementation=variant.attn,
                               sliding_window=variant.window, alibi=variant.alibi)
    except ZooSkip as why:
        return f"skipped: {why}"
    adapter, refusal = build_adapter(model)
    if adapter is None:
        return f"refused: {refusal}"
    check_exact(model, adapter, greedy=greedy)
    check_input_embedding(adapter)
    check_methods(adapter)
    return "exact"


def _summary(outcomes: dict[str, str]) -> str:
    """One table cell: which variants are exact, and each distinct refusal or skip once."""
    exact = [label for label, outcome in outcomes.items() if outcome == "exact"]
    parts = [f"**exact** ({', '.join(exact)})"] if exact else []
    for outcome in dict.fromkeys(o for o in outcomes.values() if o != "exact"):
        labels = ", ".join(label for label, o in outcomes.items() if o == outcome)
        kind, _, why = outcome.partition(": ")
        why = why.split(" cannot be rationalized exactly: ")[-1]
        parts.append(f"{kind} ({labels}): {why}")
    return "; ".join(parts).replace("|", "\\|")


def main() -> None:
    """Print one Markdown row per model type: the outcome of each variant."""
    from tests.model_zoo import causal_lm_types, seq2seq_types

    print("| model type | outcome |")
    print("|---|---|")
    for model_type in causal_lm_types():
        outcomes = {}
        for variant in causal_variants(model_type):
            try:
                outcomes[variant.label] = family_outcome(model_type, variant)
            except AssertionError as error:
                outcomes[variant.label] = f"FAILED: {error}"
        print(f"| {model_type} | {_summary(outcomes)} |", flush=True)
    print()
    print("| encoder-decoder | outcome |")
    print("|---|---|")
    for model_type in seq2seq_types():
        outcomes = {}
        for attn in ("eager", "sdpa"):
            try:
                outcomes[attn] = seq2seq_outcome(model_type, attn)
            except AssertionError as error:
                outcomes[attn] = f"FAILED: {error}"
        print(f"| {model_type} | {_summary(outcomes)} |", flush=True)


if __name__ == "__main__":
    main()
