"""Command-line pieces every experiment program shares."""

from __future__ import annotations

import argparse
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` unless the help already states the default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def positive_int(text: str) -> int:
    """``type=`` for flags that take an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_search_arguments(parser: argparse.ArgumentParser, max_steps: int | None,
                         max_steps_help: str = "largest rationale size searched") -> None:
    """``--max_steps``, ``--max_tokens_per_batch`` and ``--integrated_gradient_steps``: the
    options of :func:`sequential_rationales.rationalize` every rationalizing program takes."""
    parser.add_argument("--max_steps", type=positive_int, default=max_steps,
                        help=max_steps_help)
    parser.add_argument("--max_tokens_per_batch", type=positive_int, default=None,
                        help="tokens per forward pass of candidate subsets (default: 2048 on "
                             "CPU, 32768 on CUDA); results do not depend on it")
    parser.add_argument("--integrated_gradient_steps", type=positive_int, default=100,
                        help="path steps of integrated gradients")


def missing_data_error(path: Path, data_dir: Path) -> SystemExit:
    """The error for a data file that is not there, with the command that gets it."""
    return SystemExit(
        f"error: {path.name} not found in {data_dir}.\nGet the data with "
        "`python scripts/download_data.py` (or copy it from a local folder: "
        "`python scripts/download_data.py --source ../shared/data`), or point --data_dir at "
        "a folder that has it, e.g. --data_dir ../shared/data")
