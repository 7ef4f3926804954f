"""Figure 6: the greedy rationale of every target token of one translation, as a grid.

The program behind ``analysis/plot_iwslt_rationalization.py`` (usage there).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.figures import save_figure


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--log", required=True, help="JSON log of one rationalized translation")
    p.add_argument("--out", default="outputs/figure6_iwslt_rationalization",
                   help="output path without extension (.png and .pdf are written)")
    p.add_argument("--title", default=None, help="figure title (default: the method)")
    return p.parse_args(argv)


def rationale_grid(log: dict[str, Any]) -> tuple[list[list[float]], list[str], list[str], int]:
    """Rows: targets; columns: source tokens then target tokens. A cell holds
    ``1 - rank / size`` for a rationale token (the first added is 1), else 0."""
    source = log["source_tokens_text"]
    target = log["target_tokens_text"]
    rows, labels = [], []
    for entry in log["rationalizations"]:
        row = [0.0] * (len(source) + len(target))
        steps = [s for s in entry["log"] if "added_token_position" in s]
        for rank, step in enumerate(steps):
            offset = 0 if step["from"] == "source" else len(source)
            row[offset + step["added_token_position"]] = 1.0 - rank / max(len(steps), 1)
        rows.append(row)
        labels.append(target[entry["target_position"]])
    return rows, source + target, labels, len(source)


def plot(log: dict[str, Any], out: Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, columns, labels, n_source = rationale_grid(log)
    if not rows:
        raise InputError("the log has no rationalized target token")
    width = max(6.0, 0.32 * len(columns) + 2)
    height = max(3.0, 0.32 * len(rows) + 1.5)
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.axvline(n_source - 0.5, color="black", linewidth=1)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("context: source tokens | target tokens (darker = added earlier)")
    ax.set_ylabel("predicted target token")
    ax.set_title(title or f"{log.get('method', 'greedy')} rationales")
    fig.tight_layout()
    return save_figure(fig, out)[0]


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    log = json.loads(Path(args.log).read_text(encoding="utf-8"))
    if "rationalizations" not in log:
        raise SystemExit(f"error: {args.log} is not a translation log (no 'rationalizations')")
    png = plot(log, Path(args.out), args.title)
    print(f"Figure 6 written to {png} and .pdf")
    return png
