"""Rationalize texts with a local model: for every predicted token, the smallest set of context
tokens that alone make the model predict it.

The model is a Hugging Face directory (with its tokenizer): a causal LM, or an encoder-decoder
translation model (Marian, BART, T5, ...); or a fairseq translation checkpoint of this project's
plugin with --data, its binarized data directory. Inputs are --text values, or --input FILE:
plain text (one input per non-blank line) or JSONL with a "text" field (translation: "source",
and an optional "target"; without one the model's greedy translation is rationalized).

With --out FILE.jsonl every input becomes one line: the seed's log (as rationalize_lm /
rationalize_conditional_model write it) plus "input_index" and "text". Lines are written whole
and flushed; running the same command again skips the inputs already in the file and redoes a
torn last line. Without --out the rationales are printed.

Next to FILE.jsonl, FILE.provenance.json records what wrote it: the model (its resolved path
and a fingerprint of its config and weights files), the tokenizer, --method and every setting
the results depend on (--max-steps, --start-step, --generate, --integrated-gradient-steps).
A rerun that differs in any of them stops instead of appending; --overwrite starts afresh.

Launched by torchrun or accelerate launch, each rank takes every WORLD-th input, writes
OUT.part-RANK-of-WORLD.jsonl, and rank 0 merges the parts into OUT (one record per input, in
input order). Examples:

  rationalize --model path/to/gpt2 --text "The Supreme Court on Tuesday" --generate 10
  rationalize --model path/to/gpt2 --input prompts.txt --out rationales.jsonl --html page.html
  torchrun --nproc_per_node 2 -m sequential_rationales_integrations.rationalize_cli \\
      --model path/to/gpt2 --input prompts.txt --out rationales.jsonl
  rationalize --model path/to/marian --text "Ich sehe einen Hund." --out t.jsonl --html t.html
  rationalize --model checkpoints/compatible_iwslt --data data-bin/iwslt14.tokenized.de-en \\
      --input pairs.jsonl --out translations.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from sequential_rationales import list_methods
from sequential_rationales.extractor import RationaleExtractor
from sequential_rationales.methods import default_max_steps, get_method
from sequential_rationales.search import CPU_SCREEN_PARAMETERS, DEFAULT_MAX_SUBSETS, PRECISIONS
from sequential_rationales.text import Input, Job, Rationalizer, load
from sequential_rationales.validation import InputError, utf8_lines

from . import provenance, sharding
from .cli import HelpFormatter, ProgramParser, positive_int, program_status, run_program
from .huggingface.lora import adapter_base
from .models import fairseq_checkpoint, resolve_model
from .provenance import search_settings

DTYPES = ("float32", "bfloat16", "float16")


class _Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the examples of the description as written."""


def build_parser() -> argparse.ArgumentParser:
    p = ProgramParser(prog="rationalize", description=__doc__, formatter_class=_Formatter,
                      verbose_help="print every input's rationales also when writing --out, "
                                   "and on an error the full traceback")
    p.add_argument("--model", required=True,
                   help="a Hugging Face causal-LM or encoder-decoder translation (Marian, "
                        "BART, T5, ...) directory (config.json, weights, tokenizer) or Hub "
                        "model id (e.g. gpt2; fetched into the Hugging Face cache once), "
                        "a PEFT adapter directory (adapter_config.json; see --base-model), "
                        "or a fairseq translation checkpoint: a .pt file or a folder with "
                        "checkpoint_best.pt / checkpoint_last.pt (needs --data)")
    p.add_argument("--base-model", default=None, metavar="DIR",
                   help="an adapter's base model (default: the one its adapter_config.json "
                        "names); the adapter is merged into its weights")
    p.add_argument("--data", default=None,
                   help="the fairseq checkpoint's binarized data directory (its dictionaries)")
    p.add_argument("--tokenizer", default=None,
                   help="Hugging Face tokenizer directory (default: the --model directory)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", nargs="+", default=None,
                        help="one or more inputs (translation: source sentences, translated "
                             "greedily)")
    source.add_argument("--input", default=None,
                        help="a text file, one input per non-blank line, or a JSONL file "
                             "(.jsonl, or lines starting with '{') whose lines have a 'text' "
                             "field (translation: 'source' and an optional 'target')")
    p.add_argument("--method", default="greedy", metavar="METHOD",
                   help=f"one of: {', '.join(list_methods())}")
    p.add_argument("--extractor", default=None, metavar="DIR",
                   help="--method amortized: a rationale extractor trained for this model "
                        "(rationales-train-rationalizer)")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K",
                   help="methods that rank the context (all but greedy and exhaustive): "
                        "return its first K tokens, with no search (fastest; a rationale then "
                        "need not reach the argmax, and the results say whether it does)")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="largest rationale size searched (default: 6 for exhaustive, 1024 "
                        "otherwise)")
    p.add_argument("--max-subsets", type=positive_int, default=DEFAULT_MAX_SUBSETS, metavar="N",
                   help="--method exhaustive: refuse to start a search that would score more "
                        f"subsets (counted before it runs; default: {DEFAULT_MAX_SUBSETS:,})")
    p.add_argument("--seed", type=int, default=0,
                   help="--method random and iba: the seed of the random orders and of IBA's "
                        "noise; the same seed gives the same rationales (default: 0)")
    p.add_argument("--start-step", type=int, default=None,
                   help="language models: rationalize the tokens after this position (default: "
                        "0, all but the first token; with --generate, the end of the prompt)")
    p.add_argument("--generate", type=positive_int, default=None, metavar="N",
                   help="language models: first continue each input greedily by up to N tokens "
                        "(stopping at end-of-sequence), then rationalize the continuation")
    p.add_argument("--chat", action="store_true",
                   help="chat models: put each input as the user turn into the tokenizer's "
                        "chat template, let the model answer (--generate N tokens at most) "
                        "and rationalize the answer's tokens only")
    p.add_argument("--system", default=None, metavar="TEXT",
                   help="--chat: a system turn before each input")
    p.add_argument("--device", default=None,
                   help="torch device, e.g. cpu, cuda, cuda:1 (default: cuda when available; "
                        "sharded runs on CUDA use cuda:LOCAL_RANK)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="fp32 (the model's own precision); bf16-exact (greedy and exhaustive "
                        "search: screen the subsets with a bfloat16 copy of the model, decide "
                        "in full precision: the same rationales, faster where bfloat16 is); "
                        "bf16 (all in bfloat16: faster, not exact); auto (the default: "
                        "bf16-exact on GPUs with bfloat16 and on CPUs with bfloat16 "
                        f"instructions for models of {CPU_SCREEN_PARAMETERS / 1e6:g}M "
                        "parameters or more, else fp32)")
    p.add_argument("--device-map", default=None, metavar="MAP",
                   help="spread a Hugging Face model too large for one device over several "
                        "with accelerate (auto, balanced, balanced_low_0, sequential); "
                        "instead of --device")
    p.add_argument("--dtype", choices=("auto", *DTYPES), default="auto",
                   help="model weights' dtype; auto keeps the checkpoint's")
    p.add_argument("--max-tokens-per-batch", type=positive_int, default=None,
                   help="tokens per forward pass of candidate subsets (default: 2048 on CPU, "
                        "32768 on CUDA); results do not depend on it")
    p.add_argument("--integrated-gradient-steps", type=positive_int, default=None,
                   help="path steps of the integrated-gradient methods (default: "
                        "integrated_gradient as the paper's code, 100 for Hugging Face and 50 "
                        "for fairseq; integrated_gradient_midpoint 100)")
    p.add_argument("--out", default=None, metavar="FILE.jsonl",
                   help="write one JSON record per input here; a rerun skips the inputs "
                        "already written (default: print the rationales, write nothing)")
    p.add_argument("--overwrite", action="store_true",
                   help="--out: delete the results already in the file (and its part files) "
                        "and start afresh, instead of resuming; needed when they were written "
                        "by another model, method or setting")
    p.add_argument("--html", default=None, metavar="PAGE",
                   help="also write an HTML page showing every rationale")
    p.add_argument("--barrier-timeout", type=positive_int, default=sharding.DEFAULT_TIMEOUT_S,
                   metavar="SECONDS",
                   help="sharded runs: how long a rank that has finished waits for the others")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.method not in list_methods():
        raise InputError(f"unknown --method {args.method!r}; choose one of: "
                         f"{', '.join(list_methods())}")
    if (args.method == "amortized") != (args.extractor is not None):
        raise InputError("--method amortized needs --extractor DIR (a trained rationale "
                         "extractor), and --extractor only serves --method amortized")
    if args.top_k is not None and not get_method(args.method).ranks:
        raise InputError(f"--top-k needs a method that ranks the context, not {args.method} "
                         "search (e.g. --method amortized)")
    if args.html is not None and importlib.util.find_spec("sequential_rationales.html") is None:
        raise InputError("--html needs sequential_rationales.html, which this installation lacks")
    if args.out is not None and not args.out.endswith(".jsonl"):
        raise InputError(f"--out {args.out} must end with .jsonl (one JSON record per line)")
    check_output_paths(args)
    return args


def read_inputs(texts: list[str] | None, path: str | None) -> list[Input]:
    """``--text`` values, or the lines of ``--input``: JSONL (``.jsonl`` or a first line that
    starts with ``{``) with ``text`` or ``source`` (and optional ``target``) fields, else plain
    text, one input per non-blank line."""
    if texts is not None:
        items = [Input(i, text) for i, text in enumerate(texts)]
    else:
        file = Path(path or "")
        if not file.is_file():
            raise InputError(f"--input {file} is not a file")
        lines = [(number, line) for number, line in enumerate(utf8_lines(file), 1)
                 if line.strip()]
        if file.suffix == ".jsonl" or (lines and lines[0][1].lstrip().startswith("{")):
            items = [_json_input(i, line, file, number)
                     for i, (number, line) in enumerate(lines)]
        else:
            items = [Input(i, line.strip()) for i, (_, line) in enumerate(lines)]
    empty = [item.index for item in items if not item.text.strip()]
    if not items:
        raise InputError("no input: pass --text TEXT or --input FILE with at least one "
                         "non-blank line")
    if empty:
        raise InputError(f"input {empty[0]} is empty")
    return items


def _json_input(index: int, line: str, file: Path, number: int) -> Input:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(f"{file}:{number} is not valid JSON ({e.msg})") from None
    text = row.get("text", row.get("source")) if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise InputError(f"{file}:{number} has no string field 'text' (or 'source')")
    target = row.get("target")
    if target is not None and not isinstance(target, str):
        raise InputError(f"{file}:{number}: 'target' must be a string")
    return Input(index, text, target)


def check_output_paths(args: argparse.Namespace) -> None:
    """``--out`` and ``--html`` must be regular files (or not exist yet) whose folder exists
    or can be made, and none of ``--input``, ``--out``, ``--html`` may be the same file."""
    named = [(flag, value) for flag, value in (("--out", args.out), ("--html", args.html))
             if value is not None]
    for flag, value in named:
        _check_output_path(flag, Path(value))
    if args.out is not None:
        sidecar = provenance_path(Path(args.out))
        if sidecar.exists() and not sidecar.is_file():
            raise InputError(f"--out {args.out}: its provenance file {sidecar} is not a "
                             "regular file")
    files = [("--input", args.input), *named]
    for i, (flag, value) in enumerate(files):
        for other, other_value in files[i + 1:]:
            if value is not None and other_value is not None and _same_file(value, other_value):
                raise InputError(f"{flag} and {other} name the same file {other_value}: the "
                                 f"{other.lstrip('-')} would overwrite the {flag.lstrip('-')}; "
                                 "pass another path")


def _check_output_path(flag: str, path: Path) -> None:
    if path.is_dir():
        raise InputError(f"{flag} {path} is a folder; pass a file path")
    if path.exists() or path.is_symlink():
        try:
            mode = path.stat().st_mode
        except OSError as error:
            raise InputError(f"{flag} {path} cannot be read ({error.strerror})") from None
        if not stat.S_ISREG(mode):
            raise InputError(f"{flag} {path} is not a regular file (a pipe, socket or device); "
                             "pass a file path")
        return
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {path}: {parent} is a file, not a folder")
            return


def _same_file(a: str, b: str) -> bool:
    first, second = Path(a), Path(b)
    if first.exists() and second.exists():
        try:
            return os.path.samefile(first, second)
        except OSError:
            pass
    return first.resolve() == second.resolve()


SEEDED_METHODS = ("random", "iba")  # the methods whose rationales depend on --seed


def search_options(args: argparse.Namespace, steps: StepReport) -> dict[str, Any]:
    return {"method": args.method,
            "max_steps": args.max_steps or default_max_steps(args.method),
            "max_tokens_per_batch": args.max_tokens_per_batch,
            "integrated_gradient_steps": args.integrated_gradient_steps,
            "max_subsets": args.max_subsets,
            "seed": args.seed,
            "progress": steps if args.method == "greedy" else False,
            "precision": args.precision,
            "top_k": args.top_k,
            # A small head: it scores on the host whatever device the model is on.
            "extractor": None if args.extractor is None else RationaleExtractor.load(
                args.extractor)}


def provenance_path(out: Path) -> Path:
    """``OUT.provenance.json`` next to ``OUT.jsonl``: the provenance of ``OUT`` and its parts.
    """
    return out.with_name(f"{out.stem}.provenance.json")


def run_provenance(args: argparse.Namespace) -> dict[str, Any]:
    """What the results of this run depend on (not --max-tokens-per-batch, --device, ...)."""
    model = Path(args.model)
    if not (model.is_dir() and (model / "config.json").is_file()):
        model = (fairseq_checkpoint(model) or model) if model.exists() else model
    settings = {**search_settings(args.method, args.max_steps, args.integrated_gradient_steps,
                                  args.precision),
                "start_step": args.start_step, "generate": args.generate, "dtype": args.dtype}
    if args.seed != 0 and args.method in SEEDED_METHODS:  # absent: seed 0, as before --seed
        settings["seed"] = args.seed
    if args.top_k is not None:  # absent otherwise, as --chat
        settings["top_k"] = args.top_k
    if args.chat:  # absent otherwise: files written before --chat existed still resume
        settings.update(chat=True, system=args.system)
    extra: dict[str, Any] = {"data": str(Path(args.data).resolve())} if args.data else {}
    if args.extractor is not None:  # its weights decide the amortized rationales
        extra["extractor"] = provenance.identity(args.extractor, ("extractor.json",))
    base = adapter_base(model, args.base_model) if model.is_dir() else None
    if base is not None:  # an adapter: its base's weights matter as much as its own
        extra["base_model"] = provenance.identity(base)
    return provenance.make("rationalize", args.method, model, args.tokenizer or args.model,
                           settings, **extra)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the command; returns the summary (on every rank of a sharded run)."""
    args = parse_args(argv)
    started = time.perf_counter()
    args.model = str(resolve_model(args.model))  # a Hub id: its snapshot in the local cache
    shard = sharding.current_shard()
    if shard.distributed and args.out is None:
        raise InputError("a sharded run (torchrun / accelerate launch) needs --out FILE.jsonl")
    device = sharding.resolve_device(args.device)  # this rank's GPU in a sharded CUDA run
    inputs = read_inputs(args.text, args.input)
    if args.out is None:
        model = load_rationalizer(args, device)
        steps = StepReport()
        jobs = model.jobs(inputs, start_step=args.start_step, generate=args.generate,
                          options=search_options(args, steps), chat=args.chat,
                          system=args.system)
        records = [record for _, record in _run_all(jobs, model, True, shard, steps)]
        write_page(records, args.html)
        return summarize(records, len(inputs), time.perf_counter() - started, shard, args)
    sharding.init(shard, device, args.barrier_timeout)
    out = Path(args.out)
    record = run_provenance(args)
    sidecar = provenance_path(out)
    old = None
    if args.overwrite:
        done: set[int] = set()
    else:
        done = finished_records(out, inputs, args.method)
        has_results = any(sharding.read_records(path) for path in [out, *sharding.part_paths(out)])
        old = provenance.read(sidecar)
        provenance.check_resume(old, record, str(out), has_results, _flag, "--out")
    sharding.barrier(shard)  # every rank has read the files before any rank writes
    if shard.is_main:
        if args.overwrite:
            for path in [out, *sharding.part_paths(out)]:
                path.unlink(missing_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        if provenance.needs_writing(old, record):
            provenance.write(record, sidecar)
    sharding.barrier(shard)  # the provenance is written before any result
    todo = [item for item in inputs if shard.owns(item.index) and item.index not in done]
    if todo:  # a rerun of a finished run loads no model
        model = load_rationalizer(args, device)
        steps = StepReport()
        jobs = model.jobs(todo, start_step=args.start_step, generate=args.generate,
                          options=search_options(args, steps), chat=args.chat,
                          system=args.system)
        own = sharding.part_path(out, shard.rank, shard.world) if shard.distributed else out
        with sharding.open_for_append(own) as f:
            for _, record in _run_all(jobs, model, args.verbose, shard, steps):
                sharding.append_record(f, record)
    sharding.barrier(shard)
    if shard.is_main:
        sharding.merge_records(out, key=lambda record: record["input_index"])
        write_page(sharding.read_records(out), args.html)
    sharding.barrier(shard)
    indices = {item.index for item in inputs}
    records = [r for r in sharding.read_records(out) if r.get("input_index") in indices]
    return summarize(records, len(inputs), time.perf_counter() - started, shard, args,
                     written=len(indices - done))


def write_page(records: list[dict[str, Any]], path: str | None) -> None:
    """``--html``: one page with every rationalized input (skipped ones left out)."""
    if path is not None:
        from sequential_rationales.html import write_html

        write_html([r for r in records if "skipped" not in r], path)


def finished_records(out: Path, inputs: list[Input], method: str) -> set[int]:
    """The inputs already in ``out`` or its part files; records of other inputs or another
    method mean ``out`` belongs to another run, which is an error, not something to mix in."""
    texts = {item.index: item.text for item in inputs}
    done = set()
    for path in [out, *sharding.part_paths(out)]:
        for record in sharding.read_records(path):
            index = record.get("input_index")
            if index in texts and record.get("text") != texts[index]:
                raise InputError(f"{path} holds a different input {index} "
                                 f"({record.get('text')!r}): it belongs to another run; pass a "
                                 "new --out or --overwrite")
            if "skipped" not in record and record.get("method") != method:
                raise InputError(f"{path} holds results of method {record.get('method')!r}, not "
                                 f"{method!r}; pass a new --out or --overwrite")
            done.add(index)
    return done


def load_rationalizer(args: argparse.Namespace, device: str) -> Rationalizer:
    return load(args.model, args.tokenizer, device=device,
                dtype=None if args.dtype == "auto" else args.dtype, data=args.data,
                base_model=args.base_model, device_map=args.device_map)


class StepReport:
    """Greedy search's ``(targets finished, targets)`` after every step, moved onto the
    command's progress bar (the targets done, the step of the current input, the rate)."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.done = self.steps = 0

    def start(self, bar: Any) -> None:
        self.bar, self.done, self.steps = bar, 0, 0

    def __call__(self, done: int, total: int) -> None:
        self.steps += 1
        if self.bar is not None:
            self.bar.update(done - self.done)
            self.bar.set_postfix_str(f"step {self.steps}")
        self.done = done


def _run_all(jobs: list[Job], model: Rationalizer, show: bool, shard: sharding.Shard,
             steps: StepReport):
    """Run ``jobs`` with a progress bar over targets when their number is known in advance
    (language models; greedy search moves it step by step), else over inputs."""
    from tqdm import tqdm

    by_target = all(job.targets is not None for job in jobs)
    total = sum(job.targets for job in jobs) if by_target else len(jobs)
    with tqdm(total=total, unit="target" if by_target else "input", disable=not shard.is_main,
              desc="rationalizing" + shard.label(), dynamic_ncols=True) as bar:
        for number, job in enumerate(jobs, 1):
            steps.start(bar if by_target else None)
            result, record = job.run()
            if show and result is not None:
                bar.write(f"[input {job.index}] {job.text}\n{model.describe(result)}")
            if by_target:
                bar.update(max(job.targets - steps.done, 0))  # a continuation may end early
                bar.set_postfix_str(f"input {number}/{len(jobs)}", refresh=False)
            else:
                targets = len(result.rationales) if result is not None else 0
                bar.update(1)
                bar.set_postfix_str(f"{targets} targets", refresh=False)
            yield result, record


def _targets(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record.get("rationalization") or record.get("rationalizations") or []


def _size(target: dict[str, Any]) -> int:
    if "rationale" in target:
        return len(target["rationale"])
    return len(target["source_rationale"]) + len(target["target_rationale"])


def summarize(records: list[dict[str, Any]], inputs: int, seconds: float, shard: sharding.Shard,
              args: argparse.Namespace, written: int | None = None) -> dict[str, Any]:
    """Counts over every record of the run (earlier runs' included); printed by rank 0."""
    targets = [t for record in records for t in _targets(record)]
    summary = {
        "inputs": inputs,
        "records": len(records),
        "written": len(records) if written is None else written,
        "skipped": sum("skipped" in r for r in records),
        "targets": len(targets),
        "mean_rationale_length": (sum(map(_size, targets)) / len(targets)) if targets else 0.0,
        "reached_argmax": (sum(t["reached_argmax"] for t in targets) / len(targets)
                           if targets else 0.0),
        "seconds": round(seconds, 3),
        "method": args.method,
        "out": args.out,
        "ranks": shard.world,
    }
    if shard.is_main:
        where = f"; results in {args.out}" if args.out else ""
        print(f"{summary['inputs']} inputs ({summary['written']} rationalized now, "
              f"{summary['skipped']} skipped), {summary['targets']} targets, mean rationale "
              f"length {summary['mean_rationale_length']:.2f}, "
              f"{100 * summary['reached_argmax']:.1f}% reached the argmax, "
              f"{summary['seconds']:.1f}s{where}", flush=True)
    return summary


def console() -> int:
    """The ``rationalize`` console command: ``main`` with an exit status."""
    return program_status(main)


if __name__ == "__main__":
    run_program(main)
