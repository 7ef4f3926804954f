"""Figure 3: are Majority Class models calibrated on incomplete inputs?

The program behind ``analysis/plot_majority_class_compatibility.py`` (usage there); the
partial inputs and the binomial truth live in
:mod:`sequential_rationales_experiments.majority_class`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.fairseq_tools import encode_lm_line, quiet_fairseq_logging
from sequential_rationales_experiments.figures import save_figure
from sequential_rationales_experiments.majority_class import majority_class_calibration

MODELS = {"standard": "standard_majority_class", "compatible": "compatible_majority_class"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", required=True,
                   help="folder with standard_majority_class/ and compatible_majority_class/")
    p.add_argument("--checkpoint_file", default="checkpoint_best.pt", help="checkpoint name")
    p.add_argument("--data", default="data-bin/majority_class",
                   help="binarized data folder (its dict.txt)")
    p.add_argument("--text", required=True, help="test sentences, one per line")
    p.add_argument("--sentences", type=int, default=100, help="sentences to evaluate")
    p.add_argument("--num_bits", type=int, default=17, help="bits per sentence")
    p.add_argument("--seed", type=int, default=0, help="seed of the random partial inputs")
    p.add_argument("--out", default="figure3_majority_class_compatibility",
                   help="output path without extension (.png, .pdf and .json are written)")
    return p.parse_args(argv)


def calibration(checkpoint: Path, data: str, sentences: list[str], num_bits: int, seed: int
                ) -> tuple[list[float], list[float]]:
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel
    from sequential_rationales_integrations.fairseq import load_hub_model

    hub = load_hub_model(checkpoint.parent, checkpoint.name, data).eval()
    adapter = FairseqLanguageModel(hub)
    dictionary = adapter.decoder.dictionary
    sequences = [encode_lm_line(dictionary, s) for s in sentences]
    return majority_class_calibration(adapter, sequences, num_bits, dictionary.index("1"),
                                      generator=torch.Generator().manual_seed(seed),
                                      first_bit_position=1)


def plot(points: dict[str, tuple[list[float], list[float]]], maes: dict[str, float],
         out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(points), figsize=(4.2 * len(points), 4), sharey=True)
    for ax, (name, (model_p, true_p)) in zip(axes, points.items()):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        ax.scatter(true_p, model_p, s=14, alpha=0.7)
        ax.set_title(f"{name.capitalize()} (MAE {maes[name]:.3f})")
        ax.set_xlabel("true p(label = 1 | partial input)")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("model p(label = 1 | partial input)")
    fig.tight_layout()
    save_figure(fig, out)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    quiet_fairseq_logging()
    lines = Path(args.text).read_text().splitlines()[:args.sentences]
    if not lines:
        raise InputError(f"{args.text} holds no sentences")
    points, maes = {}, {}
    for name, folder in MODELS.items():
        checkpoint = Path(args.checkpoint_dir) / folder / args.checkpoint_file
        if not checkpoint.exists():
            raise FileNotFoundError(f"no checkpoint {checkpoint}: train the {name} model first")
        model_p, true_p = calibration(checkpoint, args.data, lines, args.num_bits, args.seed)
        points[name] = (model_p, true_p)
        maes[name] = sum(abs(m - t) for m, t in zip(model_p, true_p)) / len(model_p)
        print(f"{name:<10} calibration MAE {maes[name]:.4f}")
    out = Path(args.out)
    plot(points, maes, out)
    out.with_suffix(".json").write_text(json.dumps(
        {"mae": maes, "points": {k: {"model": m, "true": t} for k, (m, t) in points.items()}}))
    print(f"Figure 3 written to {out.with_suffix('.png')} and .pdf")
    return maes
