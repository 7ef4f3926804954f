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
           "method_options", "method_provenance", "missing_data_error", "non_negative_int",
           "positive_int", "program_status", "run_program"]


def add_search_arguments(parser: argparse.ArgumentParser, max_steps: int | None,
                         max_steps_help: str = "largest rationale size searched") -> None:
    """``--max_steps``, ``--max_tokens_per_batch``, ``--integrated_gradient_steps``,
    ``--precision``, ``--extractor`` and ``--top_k``: the options of
    :func:`sequential_rationales.rationalize` every rationalizing program takes."""
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
    parser.add_argument("--extractor", default=None, metavar="DIR",
                        help="--method amortized: a rationale extractor trained for this model "
                             "(rationales-train-rationalizer)")
    parser.add_argument("--top_k", type=positive_int, default=None, metavar="K",
                        help="methods that rank the context: its first K tokens, with no "
                             "search (a rationale then need not reach the argmax)")


def method_options(args: argparse.Namespace) -> dict:
    """``extractor`` and ``top_k`` for :func:`sequential_rationales.rationalize` from
    :func:`add_search_arguments`' flags, checked (one line per mistake); the extractor is
    loaded once and kept on ``args``."""
    from sequential_rationales.extractor import RationaleExtractor
    from sequential_rationales.methods import TRAINED_METHODS, get_method

    if (args.method in TRAINED_METHODS) != (args.extractor is not None):
        raise SystemExit("error: --method amortized needs --extractor DIR, and --extractor "
                         "only serves --method amortized")
    if args.top_k is not None and not get_method(args.method).ranks:
        raise SystemExit(f"error: --top_k needs a method that ranks the context, not "
                         f"{args.method} search")
    if args.extractor is not None and getattr(args, "loaded_extractor", None) is None:
        args.loaded_extractor = RationaleExtractor.load(args.extractor)
    options = {"top_k": args.top_k} if args.top_k is not None else {}
    if args.extractor is not None:
        options["extractor"] = args.loaded_extractor
    return options


def method_provenance(args: argparse.Namespace) -> dict:
    """What ``--top_k`` and ``--extractor`` add to a run's provenance (nothing when unused,
    so results written before they existed still resume); checks them first, as a run's
    provenance is settled before its first example."""
    from sequential_rationales_integrations import provenance

    method_options(args)
    settings: dict = {}
    if args.top_k is not None:
        settings["top_k"] = args.top_k
    if args.extractor is not None:
        settings["extractor"] = provenance.identity(args.extractor, ("extractor.json",))
    return settings


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
