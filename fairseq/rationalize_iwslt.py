"""Rationalize every target token of a binarized translation test set, one JSON log per example.

As in the original project::

    python fairseq/rationalize_iwslt.py --checkpoint_dir $CHECKPOINT_DIR \
        --task distractors --method greedy

reads ``data-bin/iwslt14_distractors.tokenized.de-en`` (``--task alignments``:
``data-bin/iwslt14_alignments.tokenized.de-en``) and the compatible model
``$CHECKPOINT_DIR/compatible_iwslt/checkpoint_best.pt``, and writes
``rationalization_results/iwslt/<task>/<method>[_top_1]/<index>.json``. ``--data``,
``--checkpoint_file`` and ``--out`` point it at any other binarized data, model and folder.
Examples whose log already exists are skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from rationalization import (  # noqa: E402
    baseline_rationalize_conditional_model,
    rationalize_conditional_model,
)
from tqdm import tqdm  # noqa: E402

from sequential_rationales import BASELINE_METHODS  # noqa: E402
from sequential_rationales.fairseq_plugin import load_hub_model  # noqa: E402

DEFAULT_DATA = {
    "distractors": "data-bin/iwslt14_distractors.tokenized.de-en",
    "alignments": "data-bin/iwslt14_alignments.tokenized.de-en",
}
METHODS = ("greedy", *BASELINE_METHODS)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
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
    p.add_argument("--max_steps", type=int, default=1024, help="largest rationale size")
    p.add_argument("--max_tokens_per_batch", type=int, default=None,
                   help="tokens per forward pass of candidate subsets (default: 2048 on CPU, "
                   "32768 on CUDA); results do not depend on it")
    p.add_argument("--integrated_gradient_steps", type=int, default=100,
                   help="path steps of integrated gradients")
    p.add_argument("--limit", type=int, default=None, help="rationalize only the first N examples")
    p.add_argument("--out", default="rationalization_results/iwslt",
                   help="output root; logs go to OUT/TASK/METHOD[_top_1]/INDEX.json")
    p.add_argument("--cpu", action="store_true", help="stay on CPU even if CUDA is available")
    p.add_argument("--verbose", action="store_true", help="print every rationale")
    args = p.parse_args(argv)
    if args.max_steps < 1:
        p.error("--max_steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    # fairseq sets the root logger to DEBUG on import; keep the output to progress and results.
    logging.getLogger().setLevel(logging.WARNING)
    data = args.data or DEFAULT_DATA[args.task]
    checkpoint = Path(args.checkpoint_file or Path(args.checkpoint_dir) / "compatible_iwslt"
                      / "checkpoint_best.pt")
    hub = load_hub_model(checkpoint.parent, checkpoint.name, data)
    if torch.cuda.is_available() and not args.cpu:
        hub.cuda()
    hub.eval()
    task = hub.task
    task.load_dataset(args.split)
    dataset = task.dataset(args.split)
    eos = task.target_dictionary.eos()
    out_dir = Path(args.out) / args.task / (args.method + ("_top_1" if args.top_1 else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    done = 0
    for index in tqdm(range(count), desc=f"{args.method} ({args.task})", unit="example"):
        path = out_dir / f"{index}.json"
        if path.exists():
            done += 1
            continue
        example = dataset[index]
        source = example["source"].to(hub.device)
        target = example["target"]
        # Decoder input: </s> then the translation without its final </s>.
        target_tokens = torch.cat([torch.tensor([eos]), target[:-1]]).to(hub.device)
        kwargs = dict(verbose=args.verbose, max_steps=args.max_steps, top_1=args.top_1,
                      max_tokens_per_batch=args.max_tokens_per_batch)
        if args.method == "greedy":
            _, _, log = rationalize_conditional_model(hub, source, target_tokens, **kwargs)
        else:
            _, _, log = baseline_rationalize_conditional_model(
                hub, source, target_tokens, args.method,
                integrated_gradient_steps=args.integrated_gradient_steps, **kwargs)
        log["example_index"] = index
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(log))
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written log
    print(f"{count} logs in {out_dir} ({done} were already there)")
    return out_dir


if __name__ == "__main__":
    main()
