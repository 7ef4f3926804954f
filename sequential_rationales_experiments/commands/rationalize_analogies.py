"""Rationalize templated analogies with a causal LM (the paper's Table 1).

The program behind ``huggingface/rationalize_analogies.py`` and ``rationales-analogies``; its
user documentation is that file's docstring.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from sequential_rationales_experiments.analogies import (
    ANALOGIES_FILE,
    TEMPLATES_FILE,
    AnalogyExample,
    build_examples,
    example_record,
    predicts_last_token,
    read_analogy_pairs,
    read_templates,
    single_token_checker,
    tokenize_example,
)
from sequential_rationales_experiments.cli import missing_data_error
from sequential_rationales_experiments.hf_models import (
    load_model_and_tokenizer,
    output_dir,
    rationalize_lm_example,
    runner_parser,
    runner_provenance,
)
from sequential_rationales_experiments.runner import run_examples
from sequential_rationales_integrations.sharding import current_shard

# The counts main() prints and returns, in this order.
COUNTS = ("written", "existing", "not_correct", "not_sampled", "bad_tokenization")
# Every record has these keys (what the evaluation reads).
RECORD_KEYS = ("method", "rationalization", "all_rationales", "antecedent_positions",
               "distractor_positions")


def is_analogy_record(value: Any) -> bool:
    return isinstance(value, dict) and all(key in value for key in RECORD_KEYS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = runner_parser(__doc__.split("\n\n")[0], "analogies",
                      f"{ANALOGIES_FILE} and {TEMPLATES_FILE}")
    p.add_argument("--categories", nargs="+", default=None,
                   help="only these categories (names as in the templates file)")
    p.add_argument("--no_filter", action="store_true",
                   help="rationalize every example, not only those the model completes "
                        "correctly with and without the distractor (the paper filters; use "
                        "this for untrained test models)")
    p.add_argument("--exhaustive_fraction", type=float, default=0.33,
                   help="exhaustive search only: fraction of examples searched, drawn at "
                        "random (the paper's code searched about a third)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random choice of exhaustive examples")
    args = p.parse_args(argv)
    if not 0.0 < args.exhaustive_fraction <= 1.0:
        p.error("--exhaustive_fraction must be in (0, 1]")
    return args


def exhaustive_sample(examples: Sequence[AnalogyExample], args: argparse.Namespace, out: Path,
                      skipped: Counter[str]) -> Iterator[tuple[str, AnalogyExample]]:
    """The examples exhaustive search runs on, drawn one by one for every candidate in order
    (so the sample does not depend on resuming); the others are counted as ``not_sampled``.

    Like the runner, drawing stops once ``--max_examples`` examples are finished (written now
    or found), so that only the candidates before that point are counted.
    """
    rng = random.Random(args.seed)
    finished = 0
    for example in examples:
        if args.max_examples is not None and finished >= args.max_examples:
            return
        if not rng.random() < args.exhaustive_fraction:
            skipped["not_sampled"] += 1
            continue
        yield example.name, example
        # The runner is done with it: its file exists iff it was written now or before.
        finished += (out / f"{example.name}.json").exists()


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    for name in (ANALOGIES_FILE, TEMPLATES_FILE):
        if not (data_dir / name).is_file():
            raise missing_data_error(data_dir / name, data_dir)
    pairs = read_analogy_pairs(data_dir / ANALOGIES_FILE)
    templates = read_templates(data_dir / TEMPLATES_FILE)
    model, tokenizer = load_model_and_tokenizer(args, need_offsets=True)
    examples = build_examples(pairs, templates, single_token_checker(tokenizer),
                              args.categories)
    if not examples:  # not a finished run with 0 results
        raise SystemExit(f"error: no analogy example: no category of {ANALOGIES_FILE} has a "
                         f"template in {TEMPLATES_FILE} and word pairs that are single tokens "
                         "of this tokenizer")
    out = output_dir(args, "analogies")

    def process(example: AnalogyExample) -> dict[str, Any] | str:
        tokens = tokenize_example(tokenizer, example)
        if tokens is None:
            return "bad_tokenization"
        if not args.no_filter:
            short = tokenizer(example.text_without_distractor)["input_ids"]
            if not (predicts_last_token(model, tokens["ids"])
                    and predicts_last_token(model, short)):
                return "not_correct"
        ids = torch.tensor(tokens["ids"], dtype=torch.long)
        log = rationalize_lm_example(model, tokenizer, ids, args, start_step=len(ids) - 2)
        return example_record(example, tokens, log, not args.no_filter)

    skipped: Counter[str] = Counter()
    candidates: Iterable[tuple[str, AnalogyExample]]
    if args.method == "exhaustive":
        candidates = exhaustive_sample(examples, args, out, skipped)
    else:
        candidates = [(example.name, example) for example in examples]
    sampling = ({"seed": args.seed, "exhaustive_fraction": args.exhaustive_fraction}
                if args.method == "exhaustive" else {})
    record = runner_provenance(args, "analogies", "rationalize_analogies",
                               no_filter=args.no_filter, **sampling)
    done = run_examples(candidates, out, process, desc=f"analogies/{args.method}",
                        limit=args.max_examples, provenance=record, overwrite=args.overwrite,
                        is_result=is_analogy_record)
    counts = {key: done[key] + skipped[key] for key in COUNTS}
    if current_shard().is_main:  # counts are summed over the ranks of a sharded run
        print(f"{len(examples)} candidate examples; {counts}; results in {out}")
    return counts
