"""Figure 4: does a model repeat "the" when "the" is all it sees?

The program behind ``analysis/plot_gpt2_the_repeats.py``; its user documentation is that
file's docstring.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from sequential_rationales_experiments.cli import HelpFormatter, ProgramParser
from sequential_rationales_experiments.figures import save_figure
from sequential_rationales_experiments.hf_models import (
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)
from sequential_rationales_integrations.huggingface.config import model_max_positions
from sequential_rationales_integrations.sharding import resolve_device


@torch.no_grad()
def repeat_probabilities(model: Any, token_id: int, num_positions: int) -> list[float]:
    """``p(next = token | context = [token] at position id p)`` for ``p < num_positions``.

    All positions are evaluated in one batch: row ``p`` is the one-token sequence with
    ``position_ids = [[p]]``.
    """
    device = next(model.parameters()).device
    ids = torch.full((num_positions, 1), token_id, dtype=torch.long, device=device)
    positions = torch.arange(num_positions, device=device)[:, None]
    logits = model(input_ids=ids, position_ids=positions).logits[:, -1].float()
    return logits.softmax(-1)[:, token_id].tolist()


def plot(series: dict[str, list[float]], word: str, out: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    for name, values in series.items():
        ax.scatter(range(len(values)), values, s=12, label=name)
    ax.set_title(f"Sentence so far: {word.strip()!r}")
    ax.set_xlabel(f"Position ID of {word.strip()!r}")
    ax.set_ylabel(f"p(next word is also {word.strip()!r})")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="center right")
    return save_figure(fig, out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    compatible = p.add_mutually_exclusive_group(required=True)
    compatible.add_argument("--checkpoint_dir",
                            help="the compatible model is CHECKPOINT_DIR/compatible_gpt2 (or "
                                 "CHECKPOINT_DIR itself), as in the seed")
    compatible.add_argument("--compatible_model",
                            help="the compatible (word-dropout) model directory")
    p.add_argument("--standard_model", default="gpt2-medium",
                   help="the standard model: a directory or hub name (hub needs network)")
    p.add_argument("--tokenizer", default=None,
                   help="tokenizer directory or name (default: the compatible model's folder)")
    p.add_argument("--word", default=" the",
                   help="the probed word; it must be a single token (GPT-2: with its space)")
    p.add_argument("--num_positions", type=int, default=100,
                   help="position ids 0 .. N-1 are probed (at most the models' context size)")
    p.add_argument("--device", default=None,
                   help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", default="outputs/figs/gpt2_the_repeats",
                   help="output path without extension (.png, .pdf and .json are written), "
                        "relative to the current folder")
    args = p.parse_args(argv)
    if args.num_positions < 1:
        p.error("--num_positions must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, list[float]]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    compatible_path = args.compatible_model or resolve_model_path(args.checkpoint_dir, None)
    tokenizer = load_tokenizer(args.tokenizer or compatible_path)
    ids = tokenizer(args.word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise SystemExit(f"error: {args.word!r} is {len(ids)} tokens for this tokenizer; the "
                         "probe needs a single token")
    series = {}
    for name, path in [("Standard", args.standard_model), ("Compatible", compatible_path)]:
        model = load_causal_lm(path, device)
        limit = model_max_positions(model.config)
        if limit is not None and args.num_positions > limit:
            raise SystemExit(f"error: --num_positions {args.num_positions} exceeds the "
                             f"{limit} positions of {path}")
        series[name] = repeat_probabilities(model, ids[0], args.num_positions)
    paths = plot(series, args.word, args.out)
    json_path = Path(f"{args.out}.json")
    json_path.write_text(json.dumps({"word": args.word, "token_id": ids[0],
                                     "standard_model": args.standard_model,
                                     "compatible_model": compatible_path, **series}, indent=1),
                         encoding="utf-8")
    for name, values in series.items():
        print(f"{name}: mean p(repeat) {sum(values) / len(values):.3f} over "
              f"{len(values)} positions")
    print("wrote " + ", ".join(str(p) for p in [*paths, json_path]))
    return series
