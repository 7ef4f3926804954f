"""ROAR and recursive ROAR of every attribution method on Majority Class.

The program behind ``scripts/run_roar.py`` (usage there); the experiment, its choices and its
caveats are described in :mod:`sequential_rationales_experiments.roar`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from sequential_rationales_experiments import roar
from sequential_rationales_experiments.cli import (
    HelpFormatter,
    ProgramParser,
    check_writable_dir,
    int_at_least,
    non_negative_int,
    positive_int,
)


def percentage(text: str) -> int:
    """An argparse ``type=`` for a k value: an integer percentage 0..100."""
    value = int_at_least(0)(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"must be a percentage <= 100, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    full, quick = roar.Settings(), roar.QUICK
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--out", default="outputs/roar",
                   help="output folder (steps, table.csv, table.md, roar.json, roar.png/.pdf)")
    p.add_argument("--quick", action="store_true",
                   help=f"the CPU schedule: {quick.train_sentences} training and "
                        f"{quick.test_sentences} test sentences, {quick.train_steps} steps of "
                        f"{quick.batch_size}, k = {' '.join(map(str, quick.k))}, integrated "
                        f"gradients with {quick.integrated_gradient_steps} steps (default: "
                        f"{full.train_sentences} / {full.test_sentences} sentences, "
                        f"{full.train_steps} steps of {full.batch_size}, k = "
                        f"{' '.join(map(str, full.k))})")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                   help="attribution methods (default: the registered ones of "
                        f"{', '.join(roar.DEFAULT_METHODS)}; any registered method but "
                        "exhaustive)")
    p.add_argument("--k", nargs="+", type=percentage, default=None, metavar="PERCENT",
                   help="percentages of the 17 bits to mask; 0 is always added (default: the "
                        "schedule's)")
    p.add_argument("--train-sentences", type=positive_int, default=None,
                   help="training sentences (default: the schedule's)")
    p.add_argument("--test-sentences", type=positive_int, default=None,
                   help="test sentences (default: the schedule's)")
    p.add_argument("--train-steps", type=positive_int, default=None,
                   help="Adam steps per (re)training (default: the schedule's)")
    p.add_argument("--integrated-gradient-steps", type=positive_int, default=None,
                   help="path steps of integrated gradients (default: the schedule's; the "
                        "full schedule takes the adapter's, 100)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the data, the model initialization, batches, word dropout "
                        "and the random orders")
    p.add_argument("--device", default="cpu",
                   help="torch device for training and rationalizing, e.g. cpu or cuda")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.methods = roar.check_methods(args.methods or roar.default_methods())
        if args.k is not None:
            args.k = roar.check_k(args.k)
    except ValueError as error:
        parser.error(str(error))
    return args


def settings_of(args: argparse.Namespace) -> roar.Settings:
    settings = roar.QUICK if args.quick else roar.Settings()
    overrides = {"k": args.k, "train_sentences": args.train_sentences,
                 "test_sentences": args.test_sentences, "train_steps": args.train_steps,
                 "integrated_gradient_steps": args.integrated_gradient_steps}
    return replace(settings, seed=args.seed,
                   **{key: value for key, value in overrides.items() if value is not None})


def main(argv: list[str] | None = None) -> dict:
    from sequential_rationales_integrations.sharding import resolve_device

    args = parse_args(argv)
    device = resolve_device(args.device)
    out = check_writable_dir(args.out)
    settings = settings_of(args)
    start = time.perf_counter()
    experiment = roar.Experiment(settings, args.methods, out, device)
    print(f"ROAR on Majority Class: {len(args.methods)} methods, k = "
          f"{' '.join(map(str, settings.k))}, {experiment.total} steps, device {device}")
    results = experiment.run()
    summary = roar.write_outputs(results, settings, args.methods, out, experiment.data["test"],
                                 time.perf_counter() - start)
    print(summary["table"])
    print(f"wrote {out / 'table.csv'}, table.md, roar.json, roar.png and roar.pdf "
          f"({summary['seconds']:.0f} s, {experiment.trained} models trained)")
    return summary
