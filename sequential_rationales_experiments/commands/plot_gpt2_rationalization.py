"""Figure 1: a sequence with every token's greedy rationale, drawn as a grid.

The program behind ``analysis/plot_gpt2_rationalization.py``; its user documentation is that
file's docstring.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from sequential_rationales_experiments.cli import HelpFormatter, ProgramParser, positive_int
from sequential_rationales_experiments.figures import save_figure
from sequential_rationales_experiments.hf_models import (
    add_model_arguments,
    load_model_and_tokenizer,
    rationalize_tokens,
)

PAPER_PROMPT = ("The Supreme Court on Tuesday rejected a challenge to the constitutionality of "
                "the death penalty")


def rationale_matrix(log: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Tokens and the ``[T, T]`` 0/1 matrix: ``M[t, c] = 1`` if position ``c`` is in the
    rationale of target position ``t``."""
    tokens = list(log["input_text"])
    matrix = np.zeros((len(tokens), len(tokens)))
    for entry, rationale in zip(log["rationalization"], log["all_rationales"]):
        matrix[int(entry["target_position"]), list(rationale)] = 1
    return tokens, matrix


def merge_word_pieces(tokens: list[str], matrix: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Join sub-word pieces into words for display (byte-level BPE, as GPT-2: a token that
    does not start with a space continues the previous word). A word's row is the union of
    its pieces' rows, its column the union of their columns; a word's own cell is cleared."""
    groups: list[list[int]] = []
    for i, token in enumerate(tokens):
        if groups and not token[:1].isspace():
            groups[-1].append(i)
        else:
            groups.append([i])
    words = ["".join(tokens[i] for i in g) for g in groups]
    merged = np.zeros((len(groups), len(groups)))
    for r, rows in enumerate(groups):
        for c, cols in enumerate(groups):
            merged[r, c] = matrix[np.ix_(rows, cols)].max()
    return words, np.tril(merged, -1)


def plot(tokens: list[str], matrix: np.ndarray, out: str, highlight: int | None = None
         ) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors

    shown = matrix.copy()
    if highlight is not None:
        shown[highlight] *= 2
    cmap = colors.ListedColormap(["#eaeaf2", "#03051a", "firebrick"])
    norm = colors.BoundaryNorm([-0.5, 0.5, 1.5, 2.5], cmap.N)
    size = max(4.0, 0.45 * len(tokens))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
    labels = [t.strip() or repr(t) for t in tokens]
    ax.set_xticks(range(len(tokens)), labels, rotation=90)
    ax.set_yticks(range(len(tokens)), labels)
    ax.set_xticks(np.arange(-0.5, len(tokens), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(tokens), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("context token")
    ax.set_ylabel("predicted token")
    if highlight is not None:
        ax.get_yticklabels()[highlight].set_color("firebrick")
    return save_figure(fig, out)


def read_log(path: str, index: int) -> dict[str, Any]:
    text = Path(path).read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not 0 <= index < len(records):
            raise SystemExit(f"error: --index {index} outside the {len(records)} logs of "
                             f"{path}") from None
        return records[index]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--log", default=None,
                   help="a rationalize_lm log (JSON, or JSON lines with --index); no model is "
                        "loaded")
    p.add_argument("--index", type=int, default=0, help="which log of a JSON-lines file")
    add_model_arguments(p, required=False)
    p.add_argument("--prompt", default=PAPER_PROMPT, help="text to rationalize with the model")
    p.add_argument("--generate", type=int, default=0,
                   help="greedily generate this many tokens after the prompt first")
    p.add_argument("--max_steps", type=positive_int, default=1024, help="largest rationale size")
    p.add_argument("--merge_word_pieces", action="store_true",
                   help="show words instead of sub-word tokens (byte-level BPE such as "
                        "GPT-2's, whose word-initial tokens start with a space)")
    p.add_argument("--highlight", type=int, default=None,
                   help="row (position) drawn in red, as in the paper's figure")
    p.add_argument("--out", default="outputs/figs/gpt2_rationale",
                   help="output path without extension (.png and .pdf are written), relative "
                        "to the current folder")
    args = p.parse_args(argv)
    if not args.log and not (args.checkpoint_dir or args.model_name_or_path):
        p.error("give a log (--log) or a model (--checkpoint_dir or --model_name_or_path)")
    if args.log and (args.checkpoint_dir or args.model_name_or_path):
        p.error("--log and a model are alternatives; give one")
    return args


def rationalize_prompt(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    model, tokenizer = load_model_and_tokenizer(args)
    ids = tokenizer(args.prompt, return_tensors="pt")["input_ids"].to(model.device)
    if args.generate > 0:
        with torch.no_grad():
            for _ in range(args.generate):
                next_id = model(input_ids=ids).logits[:, -1].argmax(-1, keepdim=True)
                ids = torch.cat([ids, next_id], dim=1)
    if ids.shape[1] < 2:
        raise SystemExit("error: the prompt must have at least two tokens")
    return rationalize_tokens(model, tokenizer, ids[0], max_steps=args.max_steps)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    log = read_log(args.log, args.index) if args.log else rationalize_prompt(args)
    tokens, matrix = rationale_matrix(log)
    if args.merge_word_pieces:
        tokens, matrix = merge_word_pieces(tokens, matrix)
    if args.highlight is not None and not 0 <= args.highlight < len(tokens):
        raise SystemExit(f"error: --highlight must be in [0, {len(tokens) - 1}]")
    paths = plot(tokens, matrix, args.out, args.highlight)
    print("wrote " + " and ".join(str(p) for p in paths))
    return paths
