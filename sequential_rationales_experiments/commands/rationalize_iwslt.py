"""Rationalize every target token of a binarized translation test set, one JSON log per example.

The program behind ``fairseq/rationalize_iwslt.py`` (usage there). It calls the core directly:
the plugin's hub model through :class:`~sequential_rationales.adapters.fairseq.
FairseqTranslationModel` and :func:`~sequential_rationales.rationalize_translation` with the
method by name, and the dataset through the one resumable runner.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import BASELINE_METHODS, format_rationales, rationalize_translation
from sequential_rationales.adapters.fairseq import FairseqTranslationModel, unwrap_model
from sequential_rationales.methods import TRAINED_METHODS
from sequential_rationales_experiments.cli import (
    ProgramParser,
    add_search_arguments,
    check_writable_dir,
    method_options,
    method_provenance,
    positive_int,
)
from sequential_rationales_experiments.fairseq_tools import quiet_fairseq_logging
from sequential_rationales_experiments.runner import run_examples
from sequential_rationales_integrations import provenance
from sequential_rationales_integrations.fairseq import load_hub_model
from sequential_rationales_integrations.sharding import current_shard, shard_device

DEFAULT_DATA = {
    "distractors": "data-bin/iwslt14_distractors.tokenized.de-en",
    "alignments": "data-bin/iwslt14_alignments.tokenized.de-en",
}
METHODS = ("greedy", *BASELINE_METHODS, *TRAINED_METHODS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                      verbose_help="print every rationale, and on an error the full traceback")
    p.add_argument("--checkpoint_dir", required=True,
                   help="folder holding compatible_iwslt/ (or pass --checkpoint_file)")
    p.add_argument("--checkpoint_file", default=None,
                   help="model checkpoint (default: CHECKPOINT_DIR/compatible_iwslt/"
                        "checkpoint_best.pt)")
    p.add_argument("--task", choices=sorted(DEFAULT_DATA), default="distractors",
                   help="which test set to rationalize (sets the default --data and --out)")
    p.add_argument("--data", default=None,
                   help="binarized data folder with the test split (default by --task)")
    p.add_argument("--split", default="test", help="data split to rationalize")
    p.add_argument("--method", choices=METHODS, default="greedy", help="rationalization method")
    p.add_argument("--top_1", action="store_true",
                   help="stop each search at the first source token (Top1 alignment metric)")
    add_search_arguments(p, 1024)
    p.add_argument("--limit", type=positive_int, default=None,
                   help="rationalize only the first N examples")
    p.add_argument("--out", default="rationalization_results/iwslt",
                   help="output root; logs go to OUT/TASK/METHOD[_top_1]/INDEX.json")
    p.add_argument("--overwrite", action="store_true",
                   help="delete the logs already in the output folder and start afresh, "
                        "instead of resuming; needed when they were written by another "
                        "model, data or setting")
    p.add_argument("--cpu", action="store_true", help="stay on CPU even if CUDA is available")
    args = p.parse_args(argv)
    check_writable_dir(args.out)  # before the model loads, not at the first finished example
    return args


def is_iwslt_log(value: Any) -> bool:
    """The shape of the logs this program writes."""
    return isinstance(value, dict) and isinstance(value.get("rationalizations"), list) and (
        "source_tokens" in value)


def run_provenance(args: argparse.Namespace, checkpoint: Path, data: Path) -> dict[str, Any]:
    """What the logs depend on: checkpoint, data (its dictionaries and split), method and
    search settings."""
    search = provenance.search_settings(args.method, args.max_steps,
                                        args.integrated_gradient_steps, args.precision)
    settings = {**search, **method_provenance(args), "top_1": args.top_1, "split": args.split}
    dictionaries = tuple(path.name for path in data.glob("dict.*.txt"))
    return provenance.make("rationalize_iwslt", args.method, checkpoint, data, settings,
                           experiment=args.task, data=provenance.identity(data, dictionaries))


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    quiet_fairseq_logging()
    data = args.data or DEFAULT_DATA[args.task]
    checkpoint = Path(args.checkpoint_file or Path(args.checkpoint_dir) / "compatible_iwslt"
                      / "checkpoint_best.pt")
    hub = load_hub_model(checkpoint.parent, checkpoint.name, data)
    if torch.cuda.is_available() and not args.cpu:
        hub.to(shard_device("cuda", current_shard()))  # a sharded run: this rank's GPU
    hub.eval()
    model = unwrap_model(hub)
    decode_source = model.encoder.dictionary.__getitem__
    decode_target = model.decoder.dictionary.__getitem__
    task = hub.task
    task.load_dataset(args.split)
    dataset = task.dataset(args.split)
    if len(dataset) == 0:
        raise SystemExit(f"error: the {args.split!r} split of {data} is empty: nothing to "
                         "rationalize")
    eos = task.target_dictionary.eos()
    out_dir = Path(args.out) / args.task / (args.method + ("_top_1" if args.top_1 else ""))
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))

    def rationalize(index: int) -> dict[str, Any]:
        example = dataset[index]
        source = example["source"].to(hub.device)
        # Decoder input: </s> then the translation without its final </s>.
        target = torch.cat([torch.tensor([eos]), example["target"][:-1]]).to(hub.device)
        adapter = FairseqTranslationModel(hub, source_length=len(source))
        result, log = rationalize_translation(
            adapter, source, target, decode_source, decode_target, method=args.method,
            max_steps=args.max_steps, max_tokens_per_batch=args.max_tokens_per_batch,
            top_1=args.top_1, integrated_gradient_steps=args.integrated_gradient_steps,
            precision=args.precision, progress=False,  # the runner's bar counts examples
            **method_options(args))
        if args.verbose:
            print(format_rationales(result, decode_target, decode_source))
        log["example_index"] = index
        return log

    counts = run_examples(((str(index), index) for index in range(count)), out_dir, rationalize,
                          desc=f"{args.method} ({args.task})", unit="example", total=count,
                          provenance=run_provenance(args, checkpoint, Path(data)),
                          overwrite=args.overwrite, is_result=is_iwslt_log)
    if current_shard().is_main:
        print(f"{count} logs in {out_dir} ({counts['existing']} were already there)")
    return out_dir
