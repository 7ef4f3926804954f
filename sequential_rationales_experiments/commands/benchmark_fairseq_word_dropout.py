"""Training speed with and without word dropout, measured with fairseq's own ``Trainer``.

The program behind ``scripts/benchmark_fairseq_word_dropout.py`` (the configurations and what
is printed are described there). Trainers of every configuration are fed the same batches,
their steps interleaved, so a burst of load on a shared machine hits them all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sequential_rationales_experiments.cli import ProgramParser, positive_int
from sequential_rationales_experiments.fairseq_tools import plugin_dir, preprocess
from sequential_rationales_experiments.majority_class import write_majority_class_corpus
from sequential_rationales_experiments.synthetic_translation import write_reversal_corpus

LM_CONFIGS = {
    "lm mixture 0": ["--word-dropout-mixture", "0"],
    "lm mixture 1.0 uniform_length": ["--word-dropout-mixture", "1.0", "--word-dropout-type",
                                      "uniform_length"],
}
MT_CONFIGS = {
    "mt mixture 0": ["--word-dropout-mixture", "0"],
    "mt mixture 1.0 inverse_length per-head": ["--word-dropout-mixture", "1.0",
                                               "--word-dropout-type", "inverse_length"],
    "mt mixture 1.0 inverse_length per-example": ["--word-dropout-mixture", "1.0",
                                                  "--word-dropout-type", "inverse_length",
                                                  "--word-dropout-per-example"],
}
MT_SIZES = ["--encoder-layers", "3", "--decoder-layers", "3", "--encoder-embed-dim", "128",
            "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
            "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
            "--decoder-attention-heads", "4"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=positive_int, default=200,
                   help="measured training updates per configuration")
    p.add_argument("--warmup", type=int, default=5,
                   help="updates per configuration run before measuring")
    p.add_argument("--max-tokens", type=positive_int, default=2048,
                   help="fairseq --max-tokens per batch")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu passes --cpu to fairseq; cuda uses fairseq's default GPU")
    p.add_argument("--only", choices=["lm", "mt", "both"], default="both",
                   help="which model family to benchmark")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=1, help="data, weights and word-dropout seed")
    args = p.parse_args(argv)
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    return args


def build_trainer(command: list[object], seed: int):
    """A fairseq ``Trainer`` exactly as ``fairseq-train <command>`` would build it."""
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    parser = options.get_training_parser()
    cfg = convert_namespace_to_omegaconf(
        options.parse_args_and_arch(parser, [str(a) for a in command]))
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)  # identical initial weights in every configuration
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    return Trainer(cfg, task, model, criterion)


def run_interleaved(commands: dict[str, list[object]], args: argparse.Namespace
                    ) -> dict[str, tuple[float, float]]:
    """Median tokens/s per configuration and its median per-step speed ratio to the first
    (mixture 0) configuration."""
    import torch

    trainers = {name: build_trainer(command, args.seed) for name, command in commands.items()}
    first = next(iter(trainers.values()))
    batches = []
    epoch = 1
    while len(batches) < args.warmup + args.updates:  # same batches for every configuration
        itr = first.get_train_iterator(epoch=epoch, load_dataset=True).next_epoch_itr(
            shuffle=True)
        batches.extend(itr)
        epoch += 1
    batches = batches[: args.warmup + args.updates]
    seconds: dict[str, list[float]] = {name: [] for name in trainers}
    step_tokens: list[int] = []
    names = list(trainers)
    torch.manual_seed(args.seed)
    for step, sample in enumerate(batches):
        order = names[step % len(names):] + names[: step % len(names)]
        for name in order:
            start = time.perf_counter()
            trainers[name].train_step([sample])
            if args.device == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                seconds[name].append(time.perf_counter() - start)
        if step >= args.warmup:
            step_tokens.append(int(sample["ntokens"]))
    # Medians, not totals: a burst of load on a shared machine would dominate a total. The
    # ratio pairs each step with the baseline's step on the same batch, run moments apart.
    baseline = seconds[names[0]]
    results = {}
    for name in names:
        rates = [n / t for n, t in zip(step_tokens, seconds[name])]
        ratio = statistics.median(b / t for b, t in zip(baseline, seconds[name]))
        results[name] = (statistics.median(rates), ratio)
        print(f"  {name:<45} median step {1000 * statistics.median(seconds[name]):7.1f} ms",
              flush=True)
    return results


def benchmark(args: argparse.Namespace) -> dict[str, tuple[float, float]]:
    common = ["--user-dir", plugin_dir(), "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
              "--lr", "0.0005", "--max-tokens", args.max_tokens, "--seed", args.seed,
              "--num-workers", "0", "--no-progress-bar"]
    if args.device == "cpu":
        common.append("--cpu")
    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory(prefix="benchmark_word_dropout_") as tmp:
        tmp_path = Path(tmp)
        if args.only in ("lm", "both"):
            write_majority_class_corpus(tmp_path / "lm", [("train", 3000), ("valid", 50)],
                                        args.seed)
            preprocess(tmp_path / "lm-bin", tmp_path / "lm-preprocess.log", "--only-source",
                       "--trainpref", tmp_path / "lm/train.tok",
                       "--validpref", tmp_path / "lm/valid.tok", "--workers", "1")
            lm = [tmp_path / "lm-bin", "--task", "language_modeling", "--arch",
                  "transformer_lm_majority_class", "--tokens-per-sample", "512",
                  "--sample-break-mode", "eos", *common]
            results.update(run_interleaved(
                {name: lm + flags for name, flags in LM_CONFIGS.items()}, args))
        if args.only in ("mt", "both"):
            # Source words s0..s99, 8-24 per line; the target is the reversed lexicon mapping.
            write_reversal_corpus(tmp_path / "mt", [("train", 3000), ("valid", 50)], args.seed,
                                  vocabulary=100, lengths=(8, 24))
            preprocess(tmp_path / "mt-bin", tmp_path / "mt-preprocess.log",
                       "--source-lang", "src", "--target-lang", "tgt",
                       "--trainpref", tmp_path / "mt/train", "--validpref", tmp_path / "mt/valid",
                       "--workers", "1")
            mt = [tmp_path / "mt-bin", "--arch", "compatible_transformer", *MT_SIZES,
                  "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
                  *common]
            results.update(run_interleaved(
                {name: mt + flags for name, flags in MT_CONFIGS.items()}, args))
    return results


def report(results: dict[str, tuple[float, float]]) -> list[dict[str, object]]:
    rows = [{"configuration": name, "tokens_per_second": round(rate, 1),
             "speed_ratio_to_mixture_0": round(ratio, 3)}
            for name, (rate, ratio) in results.items()]
    print(f"\n{'configuration':<45} {'tokens/s':>10} {'ratio':>7}")
    for row in rows:
        print(f"{row['configuration']:<45} {row['tokens_per_second']:>10.0f} "
              f"{row['speed_ratio_to_mixture_0']:>7.3f}")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    import logging
    import warnings

    # fairseq's INFO logs and hydra/torch deprecation warnings would bury the table.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    warnings.simplefilter("ignore")
    print(f"fairseq Trainer, {args.updates} measured updates per configuration (+{args.warmup} "
          f"warm-up), --max-tokens {args.max_tokens}, device {args.device}", flush=True)
    rows = report(benchmark(args))
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                         "results": rows}, indent=2) + "\n")
    return rows
