"""Rationalize the final word of the annotated Lambada passages (the paper's Table 2).

The program behind ``huggingface/rationalize_annotated_lambada.py`` and
``rationales-lambada``; its user documentation is that file's docstring.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from sequential_rationales_experiments.cli import missing_data_error
from sequential_rationales_experiments.hf_models import (
    load_model_and_tokenizer,
    output_dir,
    rationalize_lm_example,
    runner_parser,
    runner_provenance,
)
from sequential_rationales_experiments.lambada import (
    LAMBADA_FILE,
    passage_record,
    read_annotated_lambada,
    tokenize_passage,
)
from sequential_rationales_experiments.runner import run_examples
from sequential_rationales_integrations.huggingface.config import model_max_positions
from sequential_rationales_integrations.sharding import current_shard

# The counts main() prints and returns, in this order.
COUNTS = ("written", "existing", "too_long")
# Every record has these keys (what the evaluation reads).
RECORD_KEYS = ("method", "rationalization", "all_rationales", "human_subword_rationale",
               "target_positions")


def is_lambada_record(value: Any) -> bool:
    return isinstance(value, dict) and all(key in value for key in RECORD_KEYS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return runner_parser(__doc__.split("\n\n")[0], "lambada", LAMBADA_FILE).parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / LAMBADA_FILE).is_file():
        raise missing_data_error(data_dir / LAMBADA_FILE, data_dir)
    rows = read_annotated_lambada(data_dir / LAMBADA_FILE)
    if args.max_examples is not None:
        rows = rows[:args.max_examples]
    model, tokenizer = load_model_and_tokenizer(args, need_offsets=True)
    max_positions = model_max_positions(model.config)
    out = output_dir(args, "lambada")

    def process(numbered: tuple[int, dict[str, Any]]) -> dict[str, Any] | str:
        row_number, row = numbered
        tokens = tokenize_passage(tokenizer, row["text"], row["rationale"])
        if max_positions is not None and len(tokens["ids"]) > max_positions:
            return "too_long"
        ids = torch.tensor(tokens["ids"], dtype=torch.long)
        log = rationalize_lm_example(model, tokenizer, ids, args,
                                     start_step=tokens["target_positions"][0] - 1)
        return passage_record(row_number, row, tokens, log)

    done = run_examples([(str(n), (n, row)) for n, row in enumerate(rows)], out, process,
                        desc=f"lambada/{args.method}", unit="passage",
                        provenance=runner_provenance(args, "lambada", "rationalize_lambada"),
                        overwrite=args.overwrite, is_result=is_lambada_record)
    counts = {key: done[key] for key in COUNTS}
    if current_shard().is_main:  # counts are summed over the ranks of a sharded run
        print(f"{len(rows)} passages; {counts}; results in {out}")
    return counts
