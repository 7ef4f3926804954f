"""Majority Class end to end on CPU (Vafa et al., 2021, Sec. 8.1) with the real fairseq CLIs.

The program behind ``scripts/run_majority_class.py`` (the steps and the summary's keys are
described there). A step is skipped when its marker (``step.done``, written last) records the
same settings, and an interrupted training resumes, so a rerun continues where a run stopped.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import torch

from sequential_rationales import rationalize_sequence, write_jsonl
from sequential_rationales.adapters.fairseq import FairseqLanguageModel
from sequential_rationales_experiments import fairseq_tools
from sequential_rationales_experiments.cli import (
    ProgramParser,
    check_writable_dir,
    non_negative_int,
    positive_int,
)
from sequential_rationales_experiments.commands import plot_majority_class_compatibility
from sequential_rationales_experiments.fairseq_tools import cli, encode_lm_line, run
from sequential_rationales_experiments.majority_class import write_majority_class_corpus

NUM_BITS = 17
# The paper's settings and the quick CPU ones (same model, shorter schedule).
SCHEDULES = {
    "paper": {"max_update": 20000, "max_tokens": 64000, "lr": 5e-4, "warmup": 4000},
    # Quick: measured on 2 CPU cores, lr 1e-3 without dropout calibrates the compatible model
    # (MAE 0.04) where lr 2e-3 does not (0.07).
    "quick": {"max_update": 1500, "max_tokens": 256 * (NUM_BITS + 3), "lr": 1e-3,
              "warmup": 150, "dropout": 0.0},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/majority_class", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="1,500 updates of 256 sentences per model (about 15 min on CPU)")
    p.add_argument("--train-lines", type=positive_int, default=50_000, help="training sentences")
    p.add_argument("--valid-lines", type=positive_int, default=5_000, help="validation sentences")
    p.add_argument("--test-lines", type=positive_int, default=5_000, help="test sentences")
    p.add_argument("--max-update", type=positive_int, default=None, help="override the updates")
    p.add_argument("--calibration-sentences", type=positive_int, default=200,
                   help="test sentences in Figure 3 and the calibration MAE")
    p.add_argument("--rationalize", type=positive_int, default=200,
                   help="test sentences whose label is rationalized")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed for data and training")
    p.add_argument("--force", action="store_true", help="redo steps whose outputs exist")
    p.add_argument("--cpu", action="store_true", help="train on CPU even if CUDA is available")
    return p.parse_args(argv)


def train(name: str, mixture: float, data_bin: Path, out: Path, schedule: dict,
          args: argparse.Namespace) -> Path:
    flags = ["--task", "language_modeling", "--arch", "transformer_lm_majority_class",
             "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--weight-decay", "0.01",
             "--clip-norm", "0.0", "--lr", schedule["lr"], "--lr-scheduler", "inverse_sqrt",
             "--warmup-updates", schedule["warmup"], "--warmup-init-lr", "1e-07",
             "--tokens-per-sample", "512", "--sample-break-mode", "eos",
             "--max-tokens", schedule["max_tokens"], "--update-freq", "1",
             "--max-update", schedule["max_update"], "--no-epoch-checkpoints",
             "--tensorboard-logdir", out / "tensorboard" / name,
             "--word-dropout-mixture", mixture, "--word-dropout-type", "uniform_length",
             "--seed", args.seed, "--num-workers", "0", "--log-format", "simple",
             "--log-interval", "100"]
    if "dropout" in schedule:
        flags += ["--dropout", schedule["dropout"]]
    if args.cpu or not torch.cuda.is_available():
        flags.append("--cpu")
    return fairseq_tools.train(name, data_bin, out / "checkpoints" / f"{name}_majority_class",
                               flags, out / f"train_{name}.log", force=args.force)


def eval_lm(checkpoint: Path, data_bin: Path, log: Path) -> float:
    output = run([cli("fairseq-eval-lm"), data_bin, "--path", checkpoint,
                  "--user-dir", fairseq_tools.plugin_dir(), "--batch-size", "1024",
                  "--tokens-per-sample", "20", "--context-window", "0", "--cpu"], log,
                 step=f"perplexity of {checkpoint}")
    found = re.findall(r"Perplexity: ([0-9.]+)", output)
    if not found:
        raise RuntimeError(f"no perplexity in the fairseq-eval-lm output ({log})")
    return float(found[-1])


def rationalize_labels(checkpoint: Path, data_bin: Path, text_dir: Path, n: int,
                       out: Path) -> dict:
    """Greedy rationales of each test sentence's label; the label's rationale should hold
    ``=`` and bits equal to the label."""
    from tqdm import tqdm

    from sequential_rationales_integrations.fairseq import load_hub_model

    hub = load_hub_model(checkpoint.parent, checkpoint.name, str(data_bin)).eval()
    adapter = FairseqLanguageModel(hub)
    dictionary = adapter.decoder.dictionary
    sentences = (text_dir / "test.tok").read_text().splitlines()[:n]
    logs, precisions, sizes = [], [], []
    for sentence in tqdm(sentences, desc="rationalizing labels", unit="sentence"):
        # fairseq LM inputs start with </s>: bits at 1..17, "=" at 18, the label at 19.
        ids = encode_lm_line(dictionary, sentence)
        _, log = rationalize_sequence(adapter, ids, dictionary.__getitem__, "greedy",
                                      start_step=NUM_BITS + 1, progress=False)
        rationales = log["all_rationales"]
        logs.append(log)
        label = sentence.split()[-1]
        bits = [log["input_text"][p] for p in rationales[0] if 1 <= p <= NUM_BITS]
        sizes.append(len(rationales[0]))
        if bits:
            precisions.append(sum(b == label for b in bits) / len(bits))
    write_jsonl(logs, out / "label_rationales.jsonl")
    return {"label_rationale_precision": sum(precisions) / max(len(precisions), 1),
            "label_rationale_mean_size": sum(sizes) / len(sizes),
            "label_rationale_count": len(sizes)}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    fairseq_tools.quiet_fairseq_logging()
    out = check_writable_dir(args.out)
    schedule = dict(SCHEDULES["quick" if args.quick else "paper"])
    if args.max_update:
        schedule["max_update"] = args.max_update
    start = time.perf_counter()
    text_dir, data_bin = out / "text", out / "data-bin"
    print("[1/6] data")
    sizes = [("train", args.train_lines), ("valid", args.valid_lines),
             ("test", args.test_lines)]
    corpus = fairseq_tools.settings_of(*sizes, args.seed, NUM_BITS)
    if args.force or not fairseq_tools.is_done(text_dir, corpus):
        with fairseq_tools.building_dir(text_dir) as tmp:
            write_majority_class_corpus(tmp, sizes, args.seed, NUM_BITS)
            fairseq_tools.mark_done(tmp, corpus)
    print("[2/6] fairseq-preprocess")
    fairseq_tools.preprocess(data_bin, out / "preprocess.log", "--only-source",
                             "--trainpref", text_dir / "train.tok",
                             "--validpref", text_dir / "valid.tok",
                             "--testpref", text_dir / "test.tok", "--workers", "2",
                             force=args.force, depends=fairseq_tools.read_marker(text_dir))
    print("[3/6] fairseq-train (standard, then compatible)")
    checkpoints = {name: train(name, mixture, data_bin, out, schedule, args)
                   for name, mixture in [("standard", 0.0), ("compatible", 1.0)]}
    print("[4/6] fairseq-eval-lm")
    summary: dict = {"settings": {**schedule, "seed": args.seed, "quick": args.quick}}
    for name, checkpoint in checkpoints.items():
        summary[f"{name}_ppl"] = eval_lm(checkpoint, data_bin, out / f"eval_{name}.log")
        print(f"  {name}: test perplexity {summary[f'{name}_ppl']:.3f}")
    print("[5/6] Figure 3: calibration")
    maes = plot_majority_class_compatibility.main(
        ["--checkpoint_dir", str(out / "checkpoints"), "--data", str(data_bin),
         "--text", str(text_dir / "test.tok"), "--sentences", str(args.calibration_sentences),
         "--out", str(out / "figure3_majority_class_compatibility")])
    summary["calibration_mae_standard"] = maes["standard"]
    summary["calibration_mae_compatible"] = maes["compatible"]
    print("[6/6] greedy rationales of the label (compatible model)")
    summary.update(rationalize_labels(checkpoints["compatible"], data_bin, text_dir,
                                      args.rationalize, out))
    summary["seconds"] = round(time.perf_counter() - start, 1)
    fairseq_tools.write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "settings"}, indent=2))
    return summary
