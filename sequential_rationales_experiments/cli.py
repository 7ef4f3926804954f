"""Command-line pieces the experiment programs share (the project-wide ones are in
:mod:`sequential_rationales_integrations.cli`, re-exported here)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sequential_rationales.search import PRECISIONS
from sequential_rationales_integrations.cli import (
    VERBOSE_HELP,
    HelpFormatter,
    ProgramParser,
    first_line,
    input_error_message,
    int_at_least,
    non_negative_int,
    positive_int,
    program_status,
    run_program,
)

__all__ = ["VERBOSE_HELP", "HelpFormatter", "ProgramParser", "add_search_arguments",
           "check_writable_dir", "first_line", "input_error_message", "int_at_least",
           "missing_data_error", "non_negative_int", "positive_int", "program_status",
           "run_program"]


def add_search_arguments(parser: argparse.ArgumentParser, max_steps: int | None,
                         max_steps_help: str = "largest rationale size searched") -> None:
    """``--max_steps``, ``--max_tokens_per_batch``, ``--integrated_gradient_steps`` and
    ``--precision``: the options of :func:`sequential_rationales.rationalize` every
    rationalizing program takes."""
    parser.add_argument("--max_steps", type=positive_int, default=max_steps,
                        help=max_steps_help)
    parser.add_argument("--max_tokens_per_batch", type=positive_int, default=None,
                        help="tokens per forward pass of candidate subsets (default: 2048 on "
                             "CPU, 32768 on CUDA); results do not depend on it")
    parser.add_argument("--integrated_gradient_steps", type=positive_int, default=None,
                        help="path steps of integrated gradients (default: the framework's, "
                             "as the paper's code: 100 for Hugging Face, 50 for fairseq)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default: bf16-exact where bfloat16 is fast, else fp32), "
                             "fp32 (the model's own), bf16-exact (greedy and exhaustive "
                             "search screened in bfloat16, decided in full precision: the "
                             "same rationales) or bf16 (all in bfloat16: not exact)")


def missing_data_error(path: Path, data_dir: Path) -> SystemExit:
    """The error for a data file that is not there, with the command that gets it."""
    return SystemExit(
        f"error: {path.name} not found in {data_dir}; get the data with `python "
        "scripts/download_data.py` (or from a local copy: `python scripts/download_data.py "
        "--source ../shared/data`), or point --data_dir at a folder that has it")


def check_writable_dir(path: str | Path, flag: str = "--out") -> Path:
    """Create ``path`` and prove a file can be written there, so a read-only or misplaced
    output folder fails before hours of training rather than at the first save."""
    import tempfile

    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise SystemExit(f"error: cannot write to the output folder {path} ({flag}): "
                         f"{error.strerror or error}") from None
    return path
