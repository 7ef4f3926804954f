"""Timing comparison: greedy with sparse batched subsets vs greedy on full masked inputs vs
exhaustive search, measured in one run on the same sequences and model.

The program behind ``analysis/compare_rationalization_times.py``; its user documentation is
that file's docstring.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.search import DEFAULT_MAX_SUBSETS
from sequential_rationales_experiments.analogies import (
    ANALOGIES_FILE,
    TEMPLATES_FILE,
    build_examples,
    predicts_last_token,
    read_analogy_pairs,
    read_templates,
    single_token_checker,
)
from sequential_rationales_experiments.cli import HelpFormatter, ProgramParser, missing_data_error
from sequential_rationales_experiments.hf_models import (
    DEFAULT_DATA_DIR,
    add_max_subsets_argument,
    add_model_arguments,
    load_model_and_tokenizer,
)

METHODS = ("greedy_sparse", "greedy_masked", "exhaustive")


def tiny_model_and_sequences(args: argparse.Namespace) -> tuple[Any, list[torch.Tensor]]:
    """A random 2-layer GPT-2 and ``--num_sequences`` sequences of ``--length`` tokens: random
    tokens, then the model's own argmax prediction (so that the search always ends at the
    argmax, at the latest with the full context, as for generated text), drawn among those
    whose last token is not already predicted from the previous token alone."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=64,
                        n_positions=max(64, args.length), bos_token_id=0, eos_token_id=0,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = GPT2LMHeadModel(config).eval()
    gen = torch.Generator().manual_seed(args.seed)
    sequences: list[torch.Tensor] = []
    for _ in range(50):  # rounds of 64 candidates
        if len(sequences) >= args.num_sequences:
            break
        prefixes = torch.randint(1, config.vocab_size, (64, args.length - 1), generator=gen)
        with torch.no_grad():
            predictions = model(input_ids=prefixes).logits[:, -1].argmax(-1)
            from_previous = model(
                input_ids=prefixes[:, -1:],
                position_ids=torch.full((64, 1), args.length - 2)).logits[:, -1].argmax(-1)
        # Keep sequences whose last token needs more than the previous token to be predicted.
        keep = (predictions != from_previous) | (args.length == 2)
        sequences += [torch.cat([p, t[None]]) for p, t in zip(prefixes[keep], predictions[keep])]
    sequences = sequences[:args.num_sequences]
    if len(sequences) < args.num_sequences:
        raise SystemExit("error: could not draw enough tiny sequences; try another --seed")
    return model, sequences


def model_sequences(args: argparse.Namespace, model: Any, tokenizer: Any) -> list[torch.Tensor]:
    """The first ``--num_sequences`` lines of ``--prompts_file``, or analogy sentences taken
    round-robin over the categories; analogy sentences are kept only if the model completes
    them correctly with and without the distractor (as the timed paper runs), unless
    ``--no_filter``."""
    if args.prompts_file:
        lines = [line.strip() for line in Path(args.prompts_file).read_text(
            encoding="utf-8").splitlines() if line.strip()]
        sequences = [torch.tensor(tokenizer(t)["input_ids"], dtype=torch.long)
                     for t in lines[:args.num_sequences]]
    else:
        data_dir = Path(args.data_dir)
        for name in (ANALOGIES_FILE, TEMPLATES_FILE):
            if not (data_dir / name).is_file():
                raise missing_data_error(data_dir / name, data_dir)
        examples = build_examples(read_analogy_pairs(data_dir / ANALOGIES_FILE),
                                  read_templates(data_dir / TEMPLATES_FILE),
                                  single_token_checker(tokenizer))
        queues: dict[str, list[Any]] = {}
        for example in examples:
            queues.setdefault(example.category, []).append(example)
        sequences = []
        while len(sequences) < args.num_sequences and any(queues.values()):
            for queue in queues.values():
                if not queue or len(sequences) >= args.num_sequences:
                    continue
                example = queue.pop(0)
                ids = tokenizer(example.text)["input_ids"]
                if not args.no_filter and not (
                        predicts_last_token(model, ids) and predicts_last_token(
                            model, tokenizer(example.text_without_distractor)["input_ids"])):
                    continue
                sequences.append(torch.tensor(ids, dtype=torch.long))
    sequences = [s for s in sequences if len(s) >= 2]
    if not sequences:
        raise SystemExit("error: no sequence to rationalize (with analogy sentences: none was "
                         "completed correctly by the model; --no_filter times them anyway)")
    return sequences


def timed(adapter: Any, ids: torch.Tensor, method: str, max_steps: int,
          max_tokens_per_batch: int, max_subsets: int = DEFAULT_MAX_SUBSETS
          ) -> tuple[float, list[int], bool]:
    problem = RationalizationProblem(ids, targets=[len(ids) - 1])
    start = time.perf_counter()
    result = rationalize(adapter, problem, method, max_steps=max_steps,
                         max_tokens_per_batch=max_tokens_per_batch, max_subsets=max_subsets)
    seconds = time.perf_counter() - start
    r = result.rationales[0]
    return seconds, r.target_rationale, r.reached_argmax


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--tiny", action="store_true",
                   help="use a small random GPT-2 and random sequences (CPU demo)")
    add_model_arguments(p, required=False)
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR),
                   help="folder with the analogy files (sequences when a model is given), "
                        "relative to the current folder")
    p.add_argument("--prompts_file", default=None,
                   help="text file, one sequence per line, instead of the analogy sentences")
    p.add_argument("--num_sequences", type=int, default=5, help="sequences to time")
    p.add_argument("--no_filter", action="store_true",
                   help="with analogy sentences: also time those the model gets wrong")
    p.add_argument("--length", type=int, default=16, help="--tiny: tokens per sequence")
    p.add_argument("--max_steps", type=int, default=1024, help="greedy: largest rationale")
    p.add_argument("--exhaustive_max_steps", type=int, default=6,
                   help="exhaustive: largest subset size tried (the paper's code used 6)")
    p.add_argument("--skip_exhaustive", action="store_true", help="time only the greedy forms")
    add_max_subsets_argument(p)
    p.add_argument("--max_tokens_per_batch", type=int, default=None,
                   help="token budget of one batch of candidate subsets")
    p.add_argument("--seed", type=int, default=0, help="--tiny: seed of model and sequences")
    p.add_argument("--num_threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest "
                        "for tiny models)")
    p.add_argument("--out", default="outputs/rationalization_times.json",
                   help="JSON file for the timings, relative to the current folder")
    args = p.parse_args(argv)
    has_model = bool(args.checkpoint_dir or args.model_name_or_path)
    if args.tiny == has_model:
        p.error("give either --tiny or a model (--checkpoint_dir / --model_name_or_path)")
    for name in ("num_sequences", "max_steps", "exhaustive_max_steps", "max_tokens_per_batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.tiny and args.length < 2:
        p.error("--length must be >= 2")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    if args.tiny:
        model, sequences = tiny_model_and_sequences(args)
    else:
        model, tokenizer = load_model_and_tokenizer(args)
        sequences = model_sequences(args, model, tokenizer)
    sparse = HuggingFaceCausalLM(model)
    masked = HuggingFaceCausalLM(model, use_position_ids=False)
    if not sparse.sparse:
        raise SystemExit(f"error: {type(model).__name__} takes no position_ids, so it has no "
                         "sparse form to compare")
    timed(sparse, sequences[0], "greedy", args.max_steps, args.max_tokens_per_batch)  # warm-up
    methods = METHODS[:2] if args.skip_exhaustive else METHODS
    per_method: dict[str, dict[str, list]] = {
        m: {"seconds": [], "rationales": [], "reached_argmax": []} for m in methods}
    for ids in sequences:
        runs = {"greedy_sparse": (sparse, "greedy", args.max_steps),
                "greedy_masked": (masked, "greedy", args.max_steps),
                "exhaustive": (sparse, "exhaustive", args.exhaustive_max_steps)}
        for name in methods:
            adapter, method, steps = runs[name]
            seconds, rationale, reached = timed(adapter, ids, method, steps,
                                                args.max_tokens_per_batch, args.max_subsets)
            per_method[name]["seconds"].append(seconds)
            per_method[name]["rationales"].append(rationale)
            per_method[name]["reached_argmax"].append(reached)
    base = sum(per_method["greedy_sparse"]["seconds"])
    summary: dict[str, Any] = {
        "model": "tiny random GPT-2" if args.tiny else (args.model_name_or_path
                                                        or args.checkpoint_dir),
        "device": str(sparse.device),
        "num_sequences": len(sequences),
        "sequence_lengths": [len(s) for s in sequences],
        "exhaustive_max_steps": args.exhaustive_max_steps,
        "greedy_rationales_agree": (per_method["greedy_sparse"]["rationales"]
                                    == per_method["greedy_masked"]["rationales"]),
        "methods": {},
    }
    print(f"{len(sequences)} sequences of {min(summary['sequence_lengths'])}-"
          f"{max(summary['sequence_lengths'])} tokens on {summary['device']}; last token "
          "rationalized")
    print(f"{'method':<15} {'mean s':>9} {'total s':>9} {'x sparse':>9} {'mean size':>9} "
          f"{'reached':>8}")
    for name, runs_of in per_method.items():
        total = sum(runs_of["seconds"])
        entry = {
            "seconds": runs_of["seconds"],
            "mean_seconds": total / len(sequences),
            "total_seconds": total,
            "ratio_to_greedy_sparse": total / base if base > 0 else float("inf"),
            "mean_rationale_size": sum(map(len, runs_of["rationales"])) / len(sequences),
            "reached_argmax": runs_of["reached_argmax"],
            "num_reached_argmax": sum(runs_of["reached_argmax"]),
            "rationales": runs_of["rationales"],
        }
        summary["methods"][name] = entry
        print(f"{name:<15} {entry['mean_seconds']:>9.4f} {total:>9.3f} "
              f"{entry['ratio_to_greedy_sparse']:>9.2f} {entry['mean_rationale_size']:>9.2f} "
              f"{entry['num_reached_argmax']:>5}/{len(sequences)}")
    print(f"greedy sparse and masked found the same rationales: "
          f"{summary['greedy_rationales_agree']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(f"wrote {out}")
    return summary
