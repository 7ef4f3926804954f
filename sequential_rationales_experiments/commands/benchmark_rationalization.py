"""Rationalization speed: this package against the paper's own algorithm, on the same inputs.

"paper" is the algorithm of the paper's code, written plainly below:

* **greedy**: one target at a time. At each step, the candidate subsets (the rationale so far
  plus one context position not yet chosen; the first step's only candidate is the previous
  token) are fed sparsely, tokens sorted by position with their original position ids, in
  batches of at most 4,096 tokens, without padding or a subset mask (all rows of a step have
  the same length). The model computes the logits of every position; the log-softmax of the
  last one is taken. The candidate with the highest log p(target) wins (ties: the earliest
  position); the search stops when the argmax is the target, after ``max_steps`` tokens, or
  when the context is exhausted.
* **integrated gradients**: per target, one forward and one backward pass per path point
  (midpoint rule from all-zero token embeddings, positions kept); positions are then added in
  the order of their scores (the previous token first) until the argmax is the target.
* **exhaustive**: per target, all subsets containing the previous token of size 1, 2, ...,
  ``max_steps``, batched as for greedy; the smallest sufficient size wins and, within it, the
  subset with the highest p(target) (ties: the first enumerated).

"ours" is ``sequential_rationales.rationalize`` with ``HuggingFaceCausalLM``, called once per
sequence for all its targets. Both run on the same random-init GPT-2 (seeded, dropout off,
output layer untied) and on sequences that model generated greedily from four random prompt
tokens, as users rationalize generated text; the generated tokens are the targets. Each
configuration is warmed up once (both implementations, two targets) before it is timed; then,
sequence by sequence, both run back to back (alternating which goes first).

Columns: ``size`` the mean rationale length (ours); ``paper s`` and ``ours s`` the seconds
summed over the sequences; ``ratio`` their quotient (paper / ours); ``med ratio`` the median
over sequences of the per-sequence quotient, which a burst of load on a shared machine barely
moves; ``identical`` the targets whose rationales (positions, in the order added) are the
same; ``fwd share`` the share of our time spent inside the model's forward passes (for
integrated gradients, backward passes are outside it). That share comes from a second,
instrumented run of ours, so the CUDA synchronizations the timer needs do not slow down the
timed run. ``rescored`` (``--precision bf16-exact``): the share of the subsets that the
bfloat16 screen passed on to be scored again in float32.

    python scripts/benchmark_rationalization.py                      # CPU, 2 threads
    python scripts/benchmark_rationalization.py --device cuda --json gpu.json
    python scripts/benchmark_rationalization.py --quick              # smoke run, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.methods import SCREENED_METHODS
from sequential_rationales.search import PRECISIONS
from sequential_rationales_experiments.cli import ProgramParser, positive_int
from sequential_rationales_experiments.timing import synchronize

PAPER_MAX_TOKENS = 4096  # the paper's batch budget, in tokens
SCALING_LENGTHS = (256, 1024, 4096)

PROMPT_TOKENS = 4
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
METHODS = {"greedy": "greedy", "integrated_gradient": "IG", "exhaustive": "exhaustive"}


@dataclass(frozen=True)
class Config:
    """One benchmarked setting: a random-init GPT-2 shape, a sequence length and a method."""

    name: str
    method: str
    layers: int
    dim: int
    vocab: int
    length: int
    sequences: int
    dtypes: tuple[str, ...] = ("float32",)
    max_steps: int | None = None  # None: up to the whole context
    text: str = "generated"  # or "random": uniformly random tokens (long rationales)
    targets: int | None = None  # the last N positions; None: every generated token

    @property
    def heads(self) -> int:
        return max(1, self.dim // 64)


# Sequence counts chosen from measured row times on two idle cores, so that the default CPU
# run takes about six minutes there (the 6x384 row about half of it).
CPU_CONFIGS = (
    Config("2x128-v500-40", "greedy", 2, 128, 500, 40, sequences=100),
    Config("2x128-v500-80", "greedy", 2, 128, 500, 80, sequences=50),
    Config("6x384-v50257-40", "greedy", 6, 384, 50257, 40, sequences=24),
    Config("ig-2x128-v500-40", "integrated_gradient", 2, 128, 500, 40, sequences=8),
    Config("exhaustive-2x128-v500-40", "exhaustive", 2, 128, 500, 40, sequences=50,
           max_steps=3),
    # Long rationales: random text, the last 8 tokens, 16 steps each.
    Config("long-2x128-v500-400", "greedy", 2, 128, 500, 400, sequences=1, max_steps=16,
           text="random", targets=8),
    Config("long-2x128-v50257-200", "greedy", 2, 128, 50257, 200, sequences=1, max_steps=16,
           text="random", targets=8),
)
GPU_DTYPES = ("float32", "bfloat16")
# Not measured here (no GPU); estimated at a few minutes on an H100, within ten.
CUDA_CONFIGS = (
    Config("gpt2-small-100", "greedy", 12, 768, 50257, 100, sequences=5, dtypes=GPU_DTYPES,
           max_steps=10),
    Config("gpt2-medium-100", "greedy", 24, 1024, 50257, 100, sequences=5, dtypes=GPU_DTYPES,
           max_steps=10),
    Config("ig-gpt2-small-40", "integrated_gradient", 12, 768, 50257, 40, sequences=1,
           max_steps=10),
    Config("exhaustive-gpt2-small-40", "exhaustive", 12, 768, 50257, 40, sequences=4,
           max_steps=3),
)
ALL_CONFIGS = {c.name: c for c in CPU_CONFIGS + CUDA_CONFIGS}
SCALING = Config("scaling", "greedy", 2, 128, 50257, 0, sequences=1, max_steps=8,
                 text="random", targets=8)  # a tiny GPT-2 with GPT-2's vocabulary


# -- the paper's algorithm, written plainly ---------------------------------------------------

def last_log_probs(model: nn.Module, ids: Tensor, positions: Tensor) -> Tensor:
    """``[N, V]`` log-softmax of the last position of each row of ``positions`` (``[N, L]``,
    sorted); the model computes the logits of every position.

    No row is padded, so nothing needs masking: the all-ones mask only stops transformers from
    reading the gaps in ``position_ids`` as the boundaries of packed sequences (which it does
    when neither a mask nor a cache is given).
    """
    logits = model(input_ids=ids[positions], position_ids=positions,
                   attention_mask=torch.ones_like(positions)).logits
    return torch.log_softmax(logits[:, -1].float(), dim=-1)


def subset_batches(subsets: list[list[int]], device: torch.device
                   ) -> Iterator[tuple[int, Tensor]]:
    """Consecutive batches of equally long subsets, at most ``PAPER_MAX_TOKENS`` tokens each."""
    rows = max(1, PAPER_MAX_TOKENS // len(subsets[0]))
    for start in range(0, len(subsets), rows):
        yield start, torch.tensor(subsets[start:start + rows], device=device)


@torch.inference_mode()
def paper_greedy(model: nn.Module, ids: Tensor, t: int, max_steps: int
                 ) -> tuple[list[int], bool]:
    """Greedy rationale of target position ``t`` and whether its argmax was reached."""
    goal = int(ids[t])
    chosen: list[int] = []
    reached = False
    while not reached and len(chosen) < min(max_steps, t):
        candidates = [c for c in range(t) if c not in chosen] if chosen else [t - 1]
        subsets = [sorted([*chosen, c]) for c in candidates]
        best = None  # (log p(goal), candidate, argmax token)
        for start, positions in subset_batches(subsets, ids.device):
            log_probs = last_log_probs(model, ids, positions)
            goal_log_prob, i = log_probs[:, goal].max(dim=0)  # first maximum on ties
            if best is None or goal_log_prob.item() > best[0]:
                best = (goal_log_prob.item(), candidates[start + int(i)],
                        int(log_probs[i].argmax()))
        chosen.append(best[1])
        reached = best[2] == goal
    return chosen, reached


def paper_integrated_gradient_scores(model: nn.Module, ids: Tensor, t: int, steps: int
                                     ) -> Tensor:
    """Integrated gradients of log p(y_t) for the context ``0 .. t-1``: one forward and
    backward pass per path point: as the paper's code, the mean gradient over ``steps + 1``
    evenly spaced points from zero token embeddings to the tokens, ends included (positions
    kept), times the token embedding."""
    goal = int(ids[t])
    with torch.no_grad():
        tokens = model.get_input_embeddings()(ids[None, :t])
    positions = torch.arange(t, device=ids.device)[None]
    total = torch.zeros(tokens.shape, dtype=torch.float32, device=ids.device)
    for alpha in (i / steps for i in range(steps + 1)):
        scaled = (tokens * alpha).requires_grad_(True)
        logits = model(inputs_embeds=scaled, position_ids=positions).logits
        log_prob = torch.log_softmax(logits[0, -1].float(), dim=-1)[goal]
        (grad,) = torch.autograd.grad(log_prob, scaled)
        total += grad.float()
    return (total / (steps + 1) * tokens.float()).sum(-1)[0].cpu()


@torch.inference_mode()
def paper_ordered(model: nn.Module, ids: Tensor, t: int, order: list[int], max_steps: int
                  ) -> tuple[list[int], bool]:
    """Add positions in ``order`` until the argmax is the target (one forward per step)."""
    goal = int(ids[t])
    chosen: list[int] = []
    for c in order[:min(max_steps, t)]:
        chosen.append(c)
        positions = torch.tensor([sorted(chosen)], device=ids.device)
        if int(last_log_probs(model, ids, positions)[0].argmax()) == goal:
            return chosen, True
    return chosen, False


def paper_integrated_gradient(model: nn.Module, ids: Tensor, t: int, max_steps: int,
                              steps: int) -> tuple[list[int], bool]:
    scores = paper_integrated_gradient_scores(model, ids, t, steps)
    rest = sorted((c for c in range(t) if c != t - 1), key=lambda c: (-float(scores[c]), c))
    return paper_ordered(model, ids, t, [t - 1, *rest], max_steps)


@torch.inference_mode()
def paper_exhaustive(model: nn.Module, ids: Tensor, t: int, max_steps: int
                     ) -> tuple[list[int], bool]:
    """Smallest sufficient subset containing ``t-1`` (the most probable one of that size);
    without one within ``max_steps``, the most probable subset of the largest size tried."""
    goal, previous = int(ids[t]), t - 1
    rationale: list[int] = []
    for size in range(1, min(max_steps, t) + 1):
        subsets = [sorted([*combo, previous])
                   for combo in itertools.combinations(range(previous), size - 1)]
        best_any = best_ok = None  # (log p(goal), subset)
        for start, positions in subset_batches(subsets, ids.device):
            log_probs = last_log_probs(model, ids, positions)
            goal_log_probs = log_probs[:, goal]
            value, i = goal_log_probs.max(dim=0)
            if best_any is None or value.item() > best_any[0]:
                best_any = (value.item(), subsets[start + int(i)])
            sufficient = log_probs.argmax(dim=1) == goal
            if bool(sufficient.any()):
                value, i = goal_log_probs.masked_fill(~sufficient, -math.inf).max(dim=0)
                if best_ok is None or value.item() > best_ok[0]:
                    best_ok = (value.item(), subsets[start + int(i)])
        rationale = (best_ok or best_any)[1]
        if best_ok is not None:
            return [previous, *(c for c in rationale if c != previous)], True
    return [previous, *(c for c in rationale if c != previous)], False


def paper_rationalize(model: nn.Module, ids: Tensor, targets: Sequence[int], method: str,
                      max_steps: int, ig_steps: int) -> list[list[int]]:
    """The paper's rationales of ``targets``, one target at a time."""
    if method == "greedy":
        return [paper_greedy(model, ids, t, max_steps)[0] for t in targets]
    if method == "integrated_gradient":
        return [paper_integrated_gradient(model, ids, t, max_steps, ig_steps)[0]
                for t in targets]
    return [paper_exhaustive(model, ids, t, max_steps)[0] for t in targets]


# -- ours, and the timing helpers -------------------------------------------------------------

def ours_rationalize(adapter: HuggingFaceCausalLM, ids: Tensor, targets: Sequence[int],
                     method: str, max_steps: int, ig_steps: int, max_tokens_per_batch: int | None,
                     reuse_prefix: bool = True, precision: str = "fp32",
                     screening: dict[str, float] | None = None) -> list[list[int]]:
    """Our rationales (positions in the order added); ``screening`` sums the rows scored and
    re-scored by a ``bf16-exact`` screen."""
    # Without --max-tokens-per-batch the package's own default budget applies.
    budget = {} if max_tokens_per_batch is None else {"max_tokens_per_batch": max_tokens_per_batch}
    result = rationalize(adapter, RationalizationProblem(ids, targets=list(targets)), method,
                         max_steps=max_steps, integrated_gradient_steps=ig_steps,
                         reuse_prefix=reuse_prefix, progress=False, precision=precision,
                         **budget)
    if screening is not None:
        for key in ("rows", "rescored"):
            screening[key] = screening.get(key, 0) + result.extra.get("screening", {}).get(key, 0)
    return [r.target_rationale for r in result.rationales]


class ForwardTimer:
    """Seconds spent inside the models' forward (or, when the caller runs them on their own,
    their bodies' or output layers' forward), synchronized on CUDA. Nested calls count once."""

    def __init__(self, *models: nn.Module) -> None:
        self.device = next(models[0].parameters()).device
        self.seconds = 0.0
        self._depth = 0
        self._start = 0.0
        modules = {id(m): m for model in models
                   for m in (model, model.base_model, model.get_output_embeddings())}
        self._handles = []
        for module in modules.values():
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._exit))

    def _enter(self, *_: object) -> None:
        if self._depth == 0:
            synchronize(self.device)
            self._start = time.perf_counter()
        self._depth += 1

    def _exit(self, *_: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._start

    def __enter__(self) -> ForwardTimer:
        return self

    def __exit__(self, *_: object) -> None:
        for handle in self._handles:
            handle.remove()


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


# -- models and sequences ---------------------------------------------------------------------

def build_model(config: Config, dtype: str, device: torch.device, seed: int) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    # Untied output layer: a tied random-init GPT-2 mostly predicts its last input token again,
    # so its generated text repeats one token and every rationale is that token alone.
    gpt2 = GPT2Config(n_layer=config.layers, n_embd=config.dim, n_head=config.heads,
                      vocab_size=config.vocab, n_positions=max(1024, config.length),
                      tie_word_embeddings=False, bos_token_id=0, eos_token_id=0,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(gpt2).to(device=device, dtype=DTYPES[dtype]).eval()


@torch.no_grad()
def generate(model: nn.Module, vocab: int, length: int, generator: torch.Generator) -> Tensor:
    """A few random prompt tokens, then the model's greedy continuation up to ``length``."""
    device = next(model.parameters()).device
    ids = torch.randint(vocab, (PROMPT_TOKENS,), generator=generator).to(device)
    while len(ids) < length:
        next_id = model(input_ids=ids[None]).logits[0, -1].argmax()
        ids = torch.cat([ids, next_id[None]])
    return ids


def quick_config(config: Config) -> Config:
    """The same setting shrunk for a smoke run."""
    return replace(config, layers=2, dim=32, vocab=min(config.vocab, 96),
                   length=min(config.length, 12), sequences=1,
                   targets=None if config.targets is None else min(config.targets, 4))


# -- the benchmark ----------------------------------------------------------------------------

def benchmark_row(config: Config, dtype: str, args: argparse.Namespace,
                  precision: str = "fp32") -> dict[str, Any]:
    device = torch.device(args.device)
    model = build_model(config, dtype, device, args.seed)
    adapter = HuggingFaceCausalLM(model)
    generator = torch.Generator().manual_seed(args.seed)
    count = args.sequences or config.sequences
    if config.text == "random":
        sequences = [torch.randint(config.vocab, (config.length,), generator=generator)
                     .to(device) for _ in range(count)]
    else:
        sequences = [generate(model, config.vocab, config.length, generator)
                     for _ in range(count)]
    first = config.length - config.targets if config.targets else PROMPT_TOKENS
    targets = list(range(first, config.length))
    if config.method == "exhaustive":
        max_steps = args.exhaustive_max_steps or config.max_steps
    else:
        max_steps = args.max_steps or config.max_steps or config.length

    def paper(ids: Tensor, chosen: Sequence[int]) -> list[list[int]]:
        return paper_rationalize(model, ids, chosen, config.method, max_steps, args.ig_steps)

    screening: dict[str, float] = {}

    def ours(ids: Tensor, chosen: Sequence[int]) -> list[list[int]]:
        return ours_rationalize(adapter, ids.cpu(), chosen, config.method, max_steps,
                                args.ig_steps, args.max_tokens_per_batch,
                                not args.no_prefix_reuse, precision, screening)

    # The bfloat16 twin (precisions other than fp32) runs forward passes too.
    models = [model] + ([adapter.with_dtype(torch.bfloat16).model]
                        if precision in ("bf16-exact", "bf16") else [])
    paper(sequences[0], targets[:2])  # warm-up
    ours(sequences[0], targets[:2])
    screening.clear()  # counted over the timed and the instrumented runs alike
    paper_s: list[float] = []  # per sequence
    ours_s: list[float] = []
    forward_s = instrumented_s = 0.0
    identical = total = size = 0
    for k, ids in enumerate(sequences):
        # Alternate which implementation goes first, so that neither always runs on a
        # cache the other just warmed.
        runs = [("paper", paper), ("ours", ours)]
        out = {}
        for name, fn in runs if k % 2 == 0 else runs[::-1]:
            out[name], seconds = timed(device, lambda: fn(ids, targets))
            (paper_s if name == "paper" else ours_s).append(seconds)
        with ForwardTimer(*models) as timer:
            _, seconds = timed(device, lambda: ours(ids, targets))
        forward_s += timer.seconds
        instrumented_s += seconds
        identical += sum(p == o for p, o in zip(out["paper"], out["ours"]))
        total += len(targets)
        size += sum(len(o) for o in out["ours"])
    return {
        "config": config.name, "method": config.method, "dtype": dtype, "precision": precision,
        "layers": config.layers, "dim": config.dim, "vocab": config.vocab,
        "length": config.length, "sequences": len(sequences), "targets": total,
        "max_steps": max_steps, "mean_size": size / total, "paper_s": sum(paper_s),
        "ours_s": sum(ours_s), "ratio": sum(paper_s) / sum(ours_s),
        "median_ratio": statistics.median(p / o for p, o in zip(paper_s, ours_s)),
        "identical": identical, "identical_of": f"{identical}/{total}",
        "forward_share": forward_s / instrumented_s,
        "rescored_share": (screening["rescored"] / screening["rows"]
                           if screening.get("rows") else None),
        "paper_s_per_sequence": paper_s, "ours_s_per_sequence": ours_s,
    }


COLUMNS = [("config", "{}", 26), ("method", "{}", 10), ("dtype", "{}", 8),
           ("precision", "{}", 10), ("targets", "{}", 7),
           ("mean_size", "{:.2f}", 5), ("paper_s", "{:.2f}", 8), ("ours_s", "{:.2f}", 8),
           ("ratio", "{:.2f}x", 7), ("median_ratio", "{:.2f}x", 9), ("identical_of", "{}", 9),
           ("forward_share", "{:.0%}", 9), ("rescored_share", "{:.1%}", 8)]
HEADERS = {"mean_size": "size", "paper_s": "paper s", "ours_s": "ours s",
           "median_ratio": "med ratio", "identical_of": "identical",
           "forward_share": "fwd share", "rescored_share": "rescored"}


def format_table(rows: list[dict[str, Any]]) -> str:
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i < 4 else c.rjust(w)
                         for i, (c, (_, _, w)) in enumerate(zip(cells, COLUMNS)))

    out = [line([HEADERS.get(key, key) for key, _, _ in COLUMNS])]
    for row in rows:
        cells = ["-" if row[key] is None else
                 fmt.format(METHODS[row[key]] if key == "method" else row[key])
                 for key, fmt, _ in COLUMNS]
        out.append(line(cells))
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    cpu = ", ".join(c.name for c in CPU_CONFIGS)
    cuda = ", ".join(c.name for c in CUDA_CONFIGS)
    p = ProgramParser(description=__doc__,
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where both implementations run; it also picks the default "
                        f"configurations (cpu: {cpu}; cuda: {cuda})")
    p.add_argument("--dtype", choices=list(DTYPES), nargs="+", default=None,
                   help="model dtypes to run every configuration in (default: float32; on "
                        "cuda the greedy configurations also run in bfloat16)")
    p.add_argument("--threads", type=positive_int, default=2,
                   help="torch CPU threads (torch.set_num_threads)")
    p.add_argument("--configs", nargs="+", choices=list(ALL_CONFIGS), default=None,
                   metavar="NAME", help="run only these configurations, any of those named "
                   "under --device, on either device")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: every configuration shrunk to a 2-layer, 32-dim model, "
                        "12 tokens and one sequence, with 10 integrated-gradient steps")
    p.add_argument("--sequences", type=positive_int, default=None,
                   help="generated sequences per configuration (default: per configuration, "
                        "chosen to keep the default CPU run within about ten minutes)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="largest rationale of greedy and integrated gradients (default: the "
                        "whole context on the CPU configurations, 10 on the cuda ones)")
    p.add_argument("--exhaustive-max-steps", type=positive_int, default=None,
                   help="largest subset size of exhaustive search (default: 3)")
    p.add_argument("--ig-steps", type=positive_int, default=None,
                   help="integrated-gradient path points (default: 100; 10 with --quick)")
    p.add_argument("--max-tokens-per-batch", type=positive_int, default=None,
                   help="our batch budget in tokens (default: the package's automatic one); "
                        f"the paper's algorithm always uses {PAPER_MAX_TOKENS}")
    p.add_argument("--no-prefix-reuse", action="store_true",
                   help="ours without reusing the keys and values of rationale prefixes "
                        "(to measure what that reuse gains)")
    p.add_argument("--precision", nargs="+", choices=PRECISIONS, default=["fp32"],
                   help="our precision, one row each (float32 models): fp32, bf16-exact "
                        "(bfloat16 screening, float32 decisions; greedy and exhaustive "
                        "search only, where the rescored column gives the share of rows "
                        "re-scored in float32), bf16 or auto")
    p.add_argument("--scaling", action="store_true",
                   help="instead of the configurations: how time and memory grow with the "
                        "context (see --lengths), each length in its own process")
    p.add_argument("--lengths", type=positive_int, nargs="+", default=list(SCALING_LENGTHS),
                   help="--scaling: context lengths (random tokens; the last 8 are the "
                        "targets, searched for --max-steps steps, default 8)")
    p.add_argument("--paper-up-to", type=positive_int, default=1024, metavar="LENGTH",
                   help="--scaling: also time the paper's algorithm up to this length")
    p.add_argument("--scaling-child", type=positive_int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help="seed of the weights and the prompts")
    p.add_argument("--json", type=Path, default=None, help="also write the table here as JSON")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    if args.ig_steps is None:
        args.ig_steps = 10 if args.quick else 100
    return args


def scaling_row(length: int, args: argparse.Namespace) -> dict[str, Any]:
    """One length of the scaling run, in this process: seconds and peak memory of ours (and
    the paper's algorithm's seconds up to ``--paper-up-to``)."""
    import resource

    device = torch.device(args.device)
    config = replace(SCALING, length=length)
    model = build_model(config, "float32", device, args.seed)
    adapter = HuggingFaceCausalLM(model)
    ids = torch.randint(config.vocab, (length,),
                        generator=torch.Generator().manual_seed(args.seed)).to(device)
    targets = list(range(length - config.targets, length))
    max_steps = args.max_steps or config.max_steps
    warm = min(length, 64)
    ours_rationalize(adapter, ids[:warm].cpu(), [warm - 2, warm - 1], "greedy", 2, 1, None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ours, seconds = timed(device, lambda: ours_rationalize(
        adapter, ids.cpu(), targets, "greedy", max_steps, 1, args.max_tokens_per_batch))
    row = {"length": length, "targets": len(targets), "max_steps": max_steps,
           "mean_size": sum(map(len, ours)) / len(ours), "ours_s": seconds,
           "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "before_mib": before}
    if device.type == "cuda":
        row["cuda_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
    if length <= args.paper_up_to:
        paper, row["paper_s"] = timed(device, lambda: paper_rationalize(
            model, ids, targets, "greedy", max_steps, 1))
        row["ratio"] = row["paper_s"] / seconds
        row["identical_of"] = f"{sum(p == o for p, o in zip(paper, ours))}/{len(targets)}"
    return row


def scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every length of ``--lengths`` in a fresh process (peak memory is per process)."""
    import subprocess
    import sys

    rows = []
    for length in args.lengths:
        print(f"length {length} ...", end=" ", flush=True)
        child = [f"--{k.replace('_', '-')}={v}" for k, v in (
            ("device", args.device), ("threads", args.threads), ("seed", args.seed),
            ("paper_up_to", args.paper_up_to), ("max_steps", args.max_steps),
            ("max_tokens_per_batch", args.max_tokens_per_batch)) if v is not None]
        code = (f"import json; from {__name__} import scaling_row, parse_args; "
                f"print(json.dumps(scaling_row({length}, parse_args({child!r}))))")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the scaling run of length {length} failed: "
                               f"{done.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['ours_s']:.1f} s", flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"cpu, {args.threads} threads"
    print(f"\nScaling on {device}: 2x128 GPT-2 with a 50,257-token vocabulary, random text, "
          f"the last {SCALING.targets} tokens, at most {args.max_steps or SCALING.max_steps} "
          "steps each; memory: the process's peak RSS, and its growth during the search")
    memory = "cuda MiB" if args.device == "cuda" else "search MiB"
    print(f"{'length':>7} {'size':>5} {'ours s':>8} {'peak MiB':>9} {memory:>10} "
          f"{'paper s':>8} {'ratio':>6} {'identical':>9}")
    for row in rows:
        grown = row.get("cuda_peak_mib", row["peak_mib"] - row["before_mib"])
        paper = (f"{row['paper_s']:>8.1f} {row['ratio']:>6.2f} {row['identical_of']:>9}"
                 if "paper_s" in row else f"{'-':>8} {'-':>6} {'-':>9}")
        print(f"{row['length']:>7} {row['mean_size']:>5.1f} {row['ours_s']:>8.1f} "
              f"{row['peak_mib']:>9.0f} {grown:>10.0f} {paper}")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "rows": rows}, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    if args.scaling:
        torch.set_num_threads(args.threads)
        return scaling(args)
    defaults = CUDA_CONFIGS if args.device == "cuda" else CPU_CONFIGS
    configs = [ALL_CONFIGS[n] for n in args.configs] if args.configs else list(defaults)
    if args.quick:
        configs = [quick_config(c) for c in configs]
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    rows = []
    start = time.perf_counter()
    try:
        for config in configs:
            for dtype in args.dtype or config.dtypes:
                # A bf16 model has nothing to screen; integrated gradients run in full
                # precision under bf16-exact (only the searches screen).
                precisions = [p for p in args.precision if dtype == "float32" and (
                    config.method in SCREENED_METHODS or p not in ("bf16-exact", "auto"))]
                for precision in precisions or ["fp32"]:
                    print(f"{config.name} ({dtype}, {precision}) ...", end=" ", flush=True)
                    row_start = time.perf_counter()
                    rows.append(benchmark_row(config, dtype, args, precision))
                    print(f"{time.perf_counter() - row_start:.0f} s", flush=True)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests)
    seconds = time.perf_counter() - start
    device = torch.cuda.get_device_name() if args.device == "cuda" else \
        f"cpu, {args.threads} threads"
    budget = args.max_tokens_per_batch or "auto"
    reuse = "off" if args.no_prefix_reuse else "on"
    print(f"\n{device}; ours: max_tokens_per_batch={budget}, prefix reuse {reuse}; "
          f"paper: {PAPER_MAX_TOKENS}; "
          f"integrated gradients: {args.ig_steps} steps; {seconds:.0f} s in all")
    print(format_table(rows))
    if args.json:
        import transformers

        report = {"device": device, "torch": torch.__version__,
                  "transformers": transformers.__version__, "quick": args.quick,
                  "max_tokens_per_batch": budget, "prefix_reuse": not args.no_prefix_reuse,
                  "paper_max_tokens": PAPER_MAX_TOKENS,
                  "ig_steps": args.ig_steps, "seed": args.seed, "seconds": seconds,
                  "configs": [asdict(c) for c in configs], "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return rows
