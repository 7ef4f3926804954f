"""One table of every rationalization method on the Majority Class model and the synthetic
translation model(s).

The program behind ``analysis/compare_methods.py`` (usage there); the measurements and rows
live in :mod:`sequential_rationales_experiments.compare_methods`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from sequential_rationales import list_methods, lm_problem
from sequential_rationales.methods import TRAINED_METHODS
from sequential_rationales_experiments import fairseq_tools
from sequential_rationales_experiments.amortized import top_k_for
from sequential_rationales_experiments.cli import (
    HelpFormatter,
    ProgramParser,
    check_writable_dir,
    non_negative_int,
    positive_int,
)
from sequential_rationales_experiments.compare_methods import (
    SearchOptions,
    majority_class_row,
    markdown,
    measure,
    measure_majority_class,
    read_records,
    translation_row,
    write_tables,
)
from sequential_rationales_experiments.runner import run_examples
from sequential_rationales_experiments.synthetic_translation import VARIANTS

MAJORITY_CLASS_CHECKPOINT = Path("checkpoints") / "compatible_majority_class" / "checkpoint_best.pt"
TRANSLATION_CHECKPOINT = Path("checkpoints") / "compatible_iwslt" / "checkpoint_best.pt"
# Exhaustive search enumerates subsets of a context of up to ~40 tokens per target word:
# feasible for the Majority Class label only.
TRANSLATION_SKIPS = ("exhaustive",)


# Rows of the learned extractor (trained here, per model, on greedy's rationales of training
# examples): ordered, and its one-pass top-k mode (k: greedy's mean rationale length there,
# rounded up).
AMORTIZED_ROWS = ("amortized", "amortized_top_k")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    methods = [m for m in list_methods() if m not in TRAINED_METHODS] + list(AMORTIZED_ROWS)
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=HelpFormatter)
    p.add_argument("--out", default="outputs/compare_methods",
                   help="output folder: comparison.{md,csv,json}, results/ (one JSON per model, "
                        "method and example; a rerun skips them) and, with --quick, the "
                        "models' pipeline folders")
    p.add_argument("--majority-class", default=None, metavar="DIR",
                   help="output folder of scripts/run_majority_class.py (default with --quick: "
                        "OUT/majority_class)")
    p.add_argument("--translation", action="append", default=None, metavar="DIR",
                   help="output folder of scripts/run_translation_benchmark.py, once per "
                        "--translation-variant (default with --quick: OUT/translation, "
                        "OUT/translation_hard)")
    p.add_argument("--translation-variant", nargs="+", choices=VARIANTS, default=["standard"],
                   help="the synthetic task each --translation model was trained on")
    p.add_argument("--quick", action="store_true",
                   help="first run the missing models' pipelines in quick mode (resumable: "
                        "finished steps are skipped)")
    p.add_argument("--majority-class-updates", type=positive_int, default=None,
                   help="with --quick: the updates of each Majority Class model (default: the "
                        "pipeline's quick 1,500)")
    p.add_argument("--translation-updates", type=positive_int, nargs=2, default=None,
                   metavar=("STANDARD", "COMPATIBLE"),
                   help="with --quick: the updates of the standard translation model and of "
                        "its compatible fine-tune (default: the pipeline's quick 1,200 and 800)")
    p.add_argument("--no-majority-class", action="store_true",
                   help="leave the Majority Class model out")
    p.add_argument("--no-translation", action="store_true",
                   help="leave the translation model(s) out")
    p.add_argument("--methods", nargs="+", choices=methods, default=methods,
                   help="methods to compare (default: every registered one; exhaustive is "
                        "skipped for translation)")
    p.add_argument("--majority-class-examples", type=positive_int, default=50,
                   help="Majority Class test sentences (their labels are rationalized)")
    p.add_argument("--translation-examples", type=positive_int, default=20,
                   help="translation test pairs (every target token is rationalized)")
    p.add_argument("--teacher-examples", type=positive_int, default=1000,
                   help="amortized rows: training sentences (Majority Class) or pairs "
                        "(translation, half as many) whose greedy rationales the extractor "
                        "learns")
    p.add_argument("--extractor-steps", type=positive_int, default=2000,
                   help="amortized rows: the extractor's training steps")
    p.add_argument("--max-steps", type=positive_int, default=1024,
                   help="largest rationale size searched")
    p.add_argument("--exhaustive-max-steps", type=positive_int, default=4,
                   help="largest rationale size exhaustive search tries")
    p.add_argument("--max-tokens-per-batch", type=positive_int, default=None,
                   help="tokens per forward pass (default: 2048 on CPU); no effect on results")
    p.add_argument("--integrated-gradient-steps", type=positive_int, default=None,
                   help="path steps of integrated gradients (default: fairseq's 50)")
    p.add_argument("--seed", type=non_negative_int, default=0,
                   help="seed of the random method")
    args = p.parse_args(argv)
    if args.translation and len(args.translation) != len(args.translation_variant):
        p.error(f"{len(args.translation)} --translation folders for "
                f"{len(args.translation_variant)} --translation-variant values: give one "
                "folder per variant")
    if not (args.quick or args.majority_class or args.no_majority_class):
        p.error("pass --majority-class DIR (or --quick, or --no-majority-class)")
    if not (args.quick or args.translation or args.no_translation):
        p.error("pass --translation DIR (or --quick, or --no-translation)")
    return args


def model_folders(args: argparse.Namespace, out: Path) -> dict[str, tuple[str, Path]]:
    """``{table name: (kind, folder)}`` of the models to compare."""
    models: dict[str, tuple[str, Path]] = {}
    if not args.no_majority_class:
        models["majority_class"] = ("majority_class",
                                    Path(args.majority_class or out / "majority_class"))
    if not args.no_translation:
        for i, variant in enumerate(args.translation_variant):
            name = "translation" + ("" if variant == "standard" else f"_{variant}")
            folder = Path(args.translation[i]) if args.translation else out / name
            models[name] = (variant, folder)
    return models


def run_pipelines(models: dict[str, tuple[str, Path]], args: argparse.Namespace) -> None:
    """Quick mode: train what is missing with the existing (resumable) pipelines."""
    from sequential_rationales_experiments.commands import (
        run_majority_class,
        run_translation_benchmark,
    )

    for name, (kind, folder) in models.items():
        if kind == "majority_class" and not args.majority_class:
            print(f"== {name}: run_majority_class --quick ({folder})")
            updates = ["--max-update", str(args.majority_class_updates)] if (
                args.majority_class_updates) else []
            run_majority_class.main(["--out", str(folder), "--quick", *updates])
        elif kind != "majority_class" and not args.translation:
            print(f"== {name}: run_translation_benchmark --quick --variant {kind} ({folder})")
            # Its own tables need only a token run: this command rationalizes the examples.
            updates = [] if args.translation_updates is None else [
                "--standard-updates", str(args.translation_updates[0]),
                "--compatible-updates", str(args.translation_updates[1])]
            run_translation_benchmark.main(["--out", str(folder), "--quick", "--variant", kind,
                                            "--rationalize", "2", "--methods", "greedy",
                                            *updates])


def check_model_folder(kind: str, folder: Path) -> Path:
    """The compatible checkpoint of a pipeline folder, or an error naming the command that
    makes it."""
    if kind == "majority_class":
        checkpoint, needed = folder / MAJORITY_CLASS_CHECKPOINT, ["data-bin", "text/test.tok"]
        command = f"python scripts/run_majority_class.py --out {folder} --quick"
    else:
        checkpoint = folder / TRANSLATION_CHECKPOINT
        needed = ["data-bin/synthetic.de-en", "text/test_alignments.jsonl"]
        command = (f"python scripts/run_translation_benchmark.py --out {folder} --quick"
                   + ("" if kind == "standard" else f" --variant {kind}"))
    missing = [str(folder / n) for n in [checkpoint.relative_to(folder), *needed]
               if not (folder / n).exists()]
    if missing:
        raise SystemExit(f"error: {folder} is not a finished "
                         f"{'Majority Class' if kind == 'majority_class' else 'translation'} "
                         f"pipeline folder (missing {', '.join(missing)}); make it with `{command}`"
                         " (or pass --quick)")
    return checkpoint


def majority_class_examples(folder: Path, checkpoint: Path, n: int):
    """The model's adapter and ``(name, (ids, bit_is_label))`` of the first ``n`` test lines."""
    from sequential_rationales.adapters.fairseq import FairseqLanguageModel
    from sequential_rationales_integrations.fairseq import load_hub_model

    fairseq_tools.quiet_fairseq_logging()  # importing fairseq turned its logging back on
    hub = load_hub_model(checkpoint.parent, checkpoint.name, str(folder / "data-bin")).eval()
    adapter = FairseqLanguageModel(hub)
    dictionary = adapter.decoder.dictionary
    examples = []
    for i, line in enumerate((folder / "text" / "test.tok").read_text().splitlines()[:n]):
        words = line.split()  # bits, "=", label
        ids = fairseq_tools.encode_lm_line(dictionary, line)
        examples.append((str(i), (ids, [b == words[-1] for b in words[:-2]])))
    return adapter, examples


def translation_examples(folder: Path, checkpoint: Path, n: int):
    """A function making each example's adapter, and ``(index, (source, target))`` of the
    first ``n`` test pairs (decoder input: ``</s>`` then the reference without its ``</s>``)."""
    import torch

    from sequential_rationales.adapters.fairseq import FairseqTranslationModel
    from sequential_rationales_integrations.fairseq import load_hub_model

    fairseq_tools.quiet_fairseq_logging()
    hub = load_hub_model(checkpoint.parent, checkpoint.name,
                         str(folder / "data-bin" / "synthetic.de-en")).eval()
    hub.task.load_dataset("test")
    dataset = hub.task.dataset("test")
    eos = hub.task.target_dictionary.eos()
    examples = []
    for i in range(min(n, len(dataset))):
        example = dataset[i]
        target = torch.cat([torch.tensor([eos]), example["target"][:-1]])
        examples.append((str(i), (example["source"], target)))
    return (lambda source: FairseqTranslationModel(hub, source_length=len(source))), examples


def compare_model(name: str, kind: str, folder: Path, results: Path, args: argparse.Namespace,
                  options: SearchOptions, errors: dict[str, str]) -> dict[str, dict[str, float]]:
    """Every method on one model's examples; rows of the methods that ran."""
    from sequential_rationales import conditional_problem
    from sequential_rationales_experiments.commands.evaluate_alignment_rationales import (
        read_alignments,
    )

    checkpoint = check_model_folder(kind, folder)
    model_dir = results / name
    # Records of another checkpoint or other search options must not be resumed.
    fairseq_tools.restart_if_changed(model_dir, fairseq_tools.settings_of(
        fairseq_tools.read_marker(checkpoint.parent), options))
    majority = kind == "majority_class"
    if majority:
        adapter, examples = majority_class_examples(folder, checkpoint,
                                                    args.majority_class_examples)
    else:
        make_adapter, examples = translation_examples(folder, checkpoint,
                                                      args.translation_examples)
        gold = read_alignments(folder / "text" / "test_alignments.jsonl")
    methods = [m for m in args.methods if majority or m not in TRANSLATION_SKIPS]
    if len(methods) < len(args.methods):
        print(f"{name}: skipping {', '.join(sorted(set(args.methods) - set(methods)))} "
              "(exhaustive search is infeasible for whole translations)")
    names = [n for n, _ in examples]
    rows = {}
    for method in methods:
        run_as, more = method, {}
        if method in AMORTIZED_ROWS:
            extractor, teacher = model_extractor(kind, folder, checkpoint, model_dir, args)
            run_as, more = "amortized", {"extractor": extractor}
            if method == "amortized_top_k":
                more["top_k"] = top_k_for(teacher)

        def process(example: Any, run_as: str = run_as, more: dict = more) -> dict[str, Any]:
            if majority:
                ids, bit_is_label = example
                return measure_majority_class(adapter, ids, bit_is_label, run_as, options,
                                              **more)
            source, target = example
            adapter_ = make_adapter(source)
            return measure(adapter_, conditional_problem(adapter_, source, target), run_as,
                           options, top_1=True, **more)

        start = time.perf_counter()
        try:
            counts = run_examples(examples, model_dir / method, process,
                                  desc=f"{name}: {method}", unit="example", total=len(examples))
        except Exception as error:  # a method that fails on this model is reported, not fatal
            errors[f"{name}/{method}"] = f"{type(error).__name__}: {error}"
            print(f"{name}: {method} failed: {errors[f'{name}/{method}']}")
            continue
        records = read_records(model_dir / method, names)
        rows[method] = majority_class_row(records) if majority else translation_row(records, gold)
        print(f"{name}: {method} done ({counts['written']} new, {counts['existing']} resumed, "
              f"{time.perf_counter() - start:.1f} s)")
    if majority and "exhaustive" in rows:  # Minimal needs every method's and exhaustive's sizes
        exhaustive = read_records(model_dir / "exhaustive", names)
        rows = {method: majority_class_row(read_records(model_dir / method, names), exhaustive)
                for method in rows}
    return rows


def model_extractor(kind: str, folder: Path, checkpoint: Path, model_dir: Path,
                    args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model's extractor (``MODEL_DIR/extractor``, trained once on greedy's rationales of
    training examples: Majority Class labels, or every target of translation pairs)."""
    from sequential_rationales_experiments.amortized import cached_extractor

    if kind == "majority_class":
        adapter, _ = majority_class_examples(folder, checkpoint, 0)
        lines = (folder / "text" / "train.tok").read_text().splitlines()[:args.teacher_examples]
        dictionary = adapter.decoder.dictionary
        problems = [lm_problem(adapter, ids, start_step=len(ids) - 2) for ids in (
            fairseq_tools.encode_lm_line(dictionary, line) for line in lines)]

        def adapter_for(_problem: Any) -> Any:
            return adapter
    else:
        from sequential_rationales.adapters.fairseq import FairseqTranslationModel
        from sequential_rationales_experiments.amortized import translation_pairs
        from sequential_rationales_integrations.fairseq import load_hub_model

        hub = load_hub_model(checkpoint.parent, checkpoint.name,
                             str(folder / "data-bin" / "synthetic.de-en")).eval()
        problems = [p for _, p in translation_pairs(hub, "train",
                                                    max(1, args.teacher_examples // 2))]

        def adapter_for(problem: Any) -> Any:
            return FairseqTranslationModel(hub, source_length=problem.num_source + 1)
    print(f"training the extractor on {len(problems)} greedy teachers ({model_dir})")
    return cached_extractor(model_dir / "extractor", adapter_for, problems,
                            args.extractor_steps, args.seed)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    fairseq_tools.quiet_fairseq_logging()
    out = check_writable_dir(args.out)
    start = time.perf_counter()
    models = model_folders(args, out)
    if args.quick:
        run_pipelines(models, args)
    for kind, folder in models.values():  # every folder checked before hours of work
        check_model_folder(kind, folder)
    options = SearchOptions(args.max_steps, args.exhaustive_max_steps,
                            args.max_tokens_per_batch, args.integrated_gradient_steps,
                            args.seed)
    table, errors = {}, {}
    for name, (kind, folder) in models.items():
        print(f"== {name} ({folder})")
        table[name] = compare_model(name, kind, folder, out / "results", args, options, errors)
    paths = write_tables(table, out, errors)
    print(markdown(table))
    for key, message in errors.items():
        print(f"error: {key}: {message}")
    print(f"wrote {', '.join(map(str, paths))} ({time.perf_counter() - start:.0f} s)")
    return {"rows": table, "errors": errors}
