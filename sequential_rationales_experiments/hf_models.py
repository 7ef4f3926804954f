"""What the GPT-2 experiment programs share: the model flags and loading, the run flags of the
dataset runners, and rationalizing one tokenized example with a method named on the command
line.

Default folders (``data/``, ``rationalization_results/``) are relative to the current folder:
the programs are run from the repository root.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import (
    BASELINE_METHODS,
    format_rationales,
    list_methods,
    rationalize_sequence,
)
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.methods import default_max_steps
from sequential_rationales.search import DEFAULT_MAX_SUBSETS
from sequential_rationales.validation import InputError, check_tokenizer
from sequential_rationales_experiments.cli import (
    ProgramParser,
    add_search_arguments,
    first_line,
    method_options,
    method_provenance,
    positive_int,
)
from sequential_rationales_integrations import provenance
from sequential_rationales_integrations.huggingface.locations import (
    check_loaded_tokenizer,
    check_model_location,
    from_pretrained,
)
from sequential_rationales_integrations.sharding import resolve_device

DEFAULT_DATA_DIR = Path("data")
DEFAULT_RESULTS_DIR = Path("rationalization_results")


# -- models ---------------------------------------------------------------------------------
def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint_dir`` | ``--model_name_or_path``, ``--tokenizer``, ``--device``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint_dir",
                       help="checkpoint folder as in the seed: the model is loaded from "
                            "CHECKPOINT_DIR/compatible_gpt2 if that exists, else from "
                            "CHECKPOINT_DIR itself (a Hugging Face model directory)")
    group.add_argument("--model_name_or_path",
                       help="a Hugging Face model directory (or hub name, which needs network)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory or name (default: the model's own folder)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")


def resolve_model_path(checkpoint_dir: str | None, model_name_or_path: str | None) -> str:
    """``model_name_or_path`` as given, or the seed's model folder inside ``checkpoint_dir``."""
    if model_name_or_path:
        return model_name_or_path
    root = Path(checkpoint_dir or "")
    if not root.is_dir():
        raise SystemExit(f"error: --checkpoint_dir {root} is not a directory")
    nested = root / "compatible_gpt2"
    return str(nested if (nested / "config.json").is_file() else root)


def load_causal_lm(path: str, device: str) -> Any:
    """``AutoModelForCausalLM`` from ``path``, on ``device``, in eval mode."""
    from transformers import AutoModelForCausalLM

    try:
        check_model_location(path)
    except OSError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        model = from_pretrained(AutoModelForCausalLM, path)
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: could not load a causal LM from {path!r}: {first_line(e)}; "
                         "pass a local model folder (no model hub is reachable offline)"
                         ) from None
    return model.to(device).eval()


def load_tokenizer(path: str) -> Any:
    """``AutoTokenizer`` from ``path``; a failure names the ``--tokenizer`` flag."""
    from sequential_rationales_integrations.huggingface.text import load_tokenizer as load

    try:
        tokenizer = load(path)
        check_loaded_tokenizer(tokenizer, path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: could not load a tokenizer from {path!r}: {first_line(e)}; "
                         "pass --tokenizer DIR (e.g. the folder of the base model)") from None
    return tokenizer


def load_model_and_tokenizer(args: argparse.Namespace, need_offsets: bool = False
                             ) -> tuple[Any, Any]:
    """The model and tokenizer that :func:`add_model_arguments`' flags name (eval mode, on
    ``args.device``)."""
    path = resolve_model_path(args.checkpoint_dir, args.model_name_or_path)
    model = load_causal_lm(path, resolve_device(args.device))
    tokenizer = load_tokenizer(args.tokenizer or path)
    if need_offsets and not getattr(tokenizer, "is_fast", False):
        raise SystemExit("error: this script needs a fast tokenizer (character offsets); "
                         f"{type(tokenizer).__name__} is not one")
    return model, tokenizer


# -- dataset runs ---------------------------------------------------------------------------
def add_run_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    """``--method``, ``--out``, ``--max_examples``, ``--max_steps`` and batching options."""
    parser.add_argument("--method", default="greedy", choices=list_methods(),
                        help="rationalization method: greedy, exhaustive, a baseline ordering "
                             "or amortized (with --extractor)")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: rationalization_results/{task}/<method>, "
                             "relative to the current folder)")
    parser.add_argument("--max_examples", type=positive_int, default=None,
                        help="stop after this many examples (default: all)")
    add_search_arguments(parser, None, "largest rationale size searched (default: 6 for "
                                       "exhaustive, 1024 otherwise)")
    add_max_subsets_argument(parser)


def add_max_subsets_argument(parser: argparse.ArgumentParser) -> None:
    """``--max_subsets`` (also ``--max-subsets``, as the ``rationalize`` command spells it):
    the exhaustive search's refusal limit."""
    parser.add_argument("--max_subsets", "--max-subsets", type=positive_int,
                        default=DEFAULT_MAX_SUBSETS,
                        help="exhaustive search: refuse an example whose search would score "
                             "more subsets than this (raise it to run long searches anyway)")


def runner_parser(description: str, task: str, data_files: str) -> argparse.ArgumentParser:
    """The parser of a GPT-2 dataset runner: model and run flags, and ``--data_dir`` holding
    ``data_files``."""
    parser = ProgramParser(description=description, verbose_help="print every rationale as it "
                           "is found, and on an error the full traceback")
    add_model_arguments(parser)
    add_run_arguments(parser, task)
    parser.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR),
                        help=f"folder with {data_files} (default: data/, relative to the "
                             "current folder; see scripts/download_data.py)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete the results already in the output folder and start "
                             "afresh, instead of resuming; needed when they were written by "
                             "another model, method or setting")
    return parser


def runner_provenance(args: argparse.Namespace, experiment: str, program: str,
                      **settings: Any) -> dict[str, Any]:
    """The provenance record of a dataset run (:mod:`.provenance`): model, tokenizer, method,
    the search settings the results depend on, and the program's own ``settings``."""
    path = resolve_model_path(args.checkpoint_dir, args.model_name_or_path)
    search = provenance.search_settings(args.method, args.max_steps, args.integrated_gradient_steps,
                                        args.precision)
    return provenance.make(program, args.method, path, args.tokenizer or path,
                           {**search, **method_provenance(args), **settings},
                           experiment=experiment)


def output_dir(args: argparse.Namespace, task: str) -> Path:
    """``--out``, or ``rationalization_results/<task>/<method>``; created."""
    out = Path(args.out) if args.out else DEFAULT_RESULTS_DIR / task / args.method
    out.mkdir(parents=True, exist_ok=True)
    return out


def rationalize_tokens(model: Any, tokenizer: Any, ids: torch.Tensor, method: str = "greedy",
                       start_step: int = 0, *, verbose: bool = False, **options: Any
                       ) -> dict[str, Any]:
    """Rationalize every token of ``ids`` after ``start_step`` with ``method``; returns the
    seed's log (:func:`~sequential_rationales.results.lm_log`). ``options`` go to
    :func:`~sequential_rationales.methods.rationalize`; ``verbose`` prints the rationales."""
    check_tokenizer(tokenizer)

    def decode(token_id: int) -> str:
        return tokenizer.decode([token_id])

    options.setdefault("progress", False)  # the runner's bar counts examples
    result, log = rationalize_sequence(HuggingFaceCausalLM(model), ids, decode, method,
                                       start_step, **options)
    if verbose:
        print(format_rationales(result, decode))
    return log


def rationalize_lm_example(model: Any, tokenizer: Any, ids: torch.Tensor,
                           args: argparse.Namespace, start_step: int) -> dict[str, Any]:
    """Rationalize the targets after ``start_step`` as :func:`add_run_arguments`' flags say."""
    options: dict[str, Any] = method_options(args)
    if args.method in BASELINE_METHODS:
        options["integrated_gradient_steps"] = args.integrated_gradient_steps
    if args.method == "exhaustive":
        options["max_subsets"] = getattr(args, "max_subsets", DEFAULT_MAX_SUBSETS)
    return rationalize_tokens(
        model, tokenizer, ids, args.method, start_step, verbose=args.verbose,
        max_steps=args.max_steps or default_max_steps(args.method),
        max_tokens_per_batch=args.max_tokens_per_batch, precision=args.precision, **options)
