"""The learned rationale extractor against greedy search and the other methods: how much of
greedy's agreement, minimality and faithfulness it keeps, at what fraction of the forward
passes.

Settings (``--settings``):

* ``majority_class``: a compatible GPT-2 on Majority Class (17 bits, contexts of 18 tokens);
* ``translation`` and ``translation_hard``: the compatible fairseq models of the synthetic
  translation tasks (``scripts/run_translation_benchmark.py --quick``, trained here when
  ``--translation`` / ``--translation-hard`` name no finished folder), every target of each
  test pair;
* ``long_context``: a compatible GPT-2 that continues 64 random words (of 16) by their
  repetition; every word of the repetition is a target (contexts of 64 to 127 tokens, 95.5
  on average), as when a generated text is rationalized token by token;
* ``held_out``: a compatible GPT-2 trained on Majority Class after 0 to 64 random filler words
  (``a b c d``); the label after 64 of them (contexts of 82 tokens), rationalized with an
  extractor trained only on sentences of at most 16 filler words: longer contexts than it
  ever saw.

Per setting an extractor is trained on greedy's rationales of training examples (its teacher,
never the test examples), then every method rationalizes the test examples. Per method: mean
rationale length, ``f1_vs_greedy`` / ``exact_vs_greedy`` (the rationale's context codes against
greedy's), ``argmax_reached``, faithfulness (sufficiency, comprehensiveness: lower and higher
are better), the gold metrics (Majority Class: ``label_bit_precision``, the share of added bits
equal to the label; translation: AER and F1 against the gold alignments), seconds and forward
tokens per target (the tokens the model's body runs through), both as ratios to greedy, and
UNIREX's normalized relative gain (NRG, Chan et al., 2022): each metric min-max normalized over
the methods of the setting (1: the best), averaged per desideratum (faithfulness: sufficiency
and comprehensiveness; plausibility: the gold metrics), then over the two. The task desideratum
is left out: every method explains the same frozen model, so its task performance is the
same. ``amortized_top_k`` is the one-pass mode: the first k tokens of the extractor's order,
k the teacher's mean rationale length rounded up. ``greedy_paper`` is greedy search as the
paper's code runs it, every candidate subset from scratch (no reuse of the rationale prefix's
keys and values): the same rationales, more forward tokens.

Writes OUT/SETTING/ (extractor, records.json, results.json), OUT/summary.json (the figures
per setting), OUT/amortized.md (the table) and OUT/amortized.png (speed-up against agreement
with greedy). Finished models and extractors are reused by a rerun. Example::

    python analysis/evaluate_amortized.py --quick --out outputs/amortized
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapter import ModelAdapter
from sequential_rationales.extractor import Objectives, RationaleExtractor
from sequential_rationales.metrics import (
    METHOD_LABELS,
    alignment_table_row,
    faithfulness,
    faithfulness_table_row,
    mean,
)
from sequential_rationales_experiments.amortized import (
    ForwardTokens,
    cached_extractor,
    copy_problem,
    copy_sentences,
    counted_modules,
    label_problem,
    label_sentences,
    top_k_for,
    train_copy_model,
    train_label_model,
    translation_pairs,
)
from sequential_rationales_experiments.cli import ProgramParser

SETTINGS = ("majority_class", "translation", "translation_hard", "long_context", "held_out")
PAPER_BASELINES = ("gradient_norm", "signed_gradient", "integrated_gradient",
                   "attention_rollout", "last_attention", "all_attention")
METHODS = ("greedy", "greedy_paper", "amortized", "amortized_top_k", *PAPER_BASELINES, "lrp",
           "iba", "random")
LONG_FILLER = 64
HELD_OUT_FILLER = 16  # the held-out extractor's teacher sentences have at most this many
COPY_HALF = 64  # long_context: words before their repetition
# Model training steps; teacher and test examples (sentences, pairs or copy sequences);
# extractor steps.
QUICK = {"lm_steps": {"majority_class": 2000, "long": 4000, "copy": 1500},
         "teacher": 1000, "test": 40, "translation_teacher": 150, "translation_test": 15,
         "copy_teacher": 20, "copy_test": 4, "extractor_steps": 2000}
FULL = {"lm_steps": {"majority_class": 3000, "long": 6000, "copy": 3000},
        "teacher": 2000, "test": 200, "translation_teacher": 500, "translation_test": 60,
        "copy_teacher": 50, "copy_test": 16, "extractor_steps": 3000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/amortized", help="output folder")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS),
                   help="which settings to run")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods compared (greedy always runs: it is the reference)")
    p.add_argument("--translation", default=None, metavar="DIR",
                   help="a finished run_translation_benchmark folder of the standard task "
                        "(default: OUT/translation, trained when missing)")
    p.add_argument("--translation-hard", default=None, metavar="DIR",
                   help="the same for the hard task (default: OUT/translation_hard)")
    p.add_argument("--lambda-sufficiency", type=float, default=0.0, metavar="W",
                   help="the extractors' sufficiency weight (the teacher's order weighs 1)")
    p.add_argument("--lambda-comprehensiveness", type=float, default=0.0, metavar="W",
                   help="the extractors' comprehensiveness weight")
    p.add_argument("--quick", action="store_true",
                   help="CPU-sized: fewer training steps, teacher and test examples")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and draws")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    if "greedy" not in args.methods:
        args.methods = ["greedy", *args.methods]
    args.objectives = Objectives(sufficiency=args.lambda_sufficiency,
                                 comprehensiveness=args.lambda_comprehensiveness)
    return args


# -- one method on the test examples -----------------------------------------------------------
def run_method(method: str, examples: Sequence[tuple[ModelAdapter, RationalizationProblem]],
               counter_modules: list[torch.nn.Module], extractor: RationaleExtractor,
               top_k: int) -> tuple[list[Any], float, int]:
    """Every example's result, the seconds the method took and the forward tokens it ran."""
    name, options = {"amortized_top_k": ("amortized", {"top_k": top_k}),
                     "greedy_paper": ("greedy", {"reuse_prefix": False})}.get(method,
                                                                              (method, {}))
    counter = ForwardTokens(counter_modules)
    start = time.perf_counter()
    try:
        results = [rationalize(adapter, problem, name, progress=False, precision="fp32",
                               extractor=extractor, **options)
                   for adapter, problem in examples]
    finally:
        counter.close()
    return results, time.perf_counter() - start, counter.tokens


def codes_of(problem: RationalizationProblem, rationale: Any) -> list[int]:
    return [c.position + (problem.num_source if c.stream == "target" else 0)
            for c in rationale.rationale]


def f1(a: Sequence[int], b: Sequence[int]) -> float:
    common = len(set(a) & set(b))
    return 2 * common / (len(set(a)) + len(set(b))) if a or b else 1.0


def evaluate(examples: Sequence[tuple[ModelAdapter, RationalizationProblem]],
             counter_modules: list[torch.nn.Module], methods: Sequence[str],
             extractor: RationaleExtractor, top_k: int,
             gold: Callable[[str, list[list[Any]]], dict[str, float]]
             ) -> dict[str, dict[str, float]]:
    """Per method, its metrics over every target of ``examples``; ``gold(method, results)``
    adds the setting's gold metrics."""
    rows: dict[str, dict[str, float]] = {}
    codes: dict[str, list[list[int]]] = {}
    for method in methods:
        results, seconds, tokens = run_method(method, examples, counter_modules, extractor,
                                              top_k)
        targets = [(problem, r) for (_, problem), result in zip(examples, results, strict=True)
                   for r in result.rationales]
        codes[method] = [codes_of(problem, r) for problem, r in targets]
        scores = [faithfulness(adapter, problem, result)
                  for (adapter, problem), result in zip(examples, results, strict=True)]
        faith = faithfulness_table_row(s for per in scores for s in per.values())
        rows[method] = {
            "mean_length": mean(len(c) for c in codes[method]),
            "argmax_reached": mean(float(r.reached_argmax) for _, r in targets),
            "sufficiency": faith["sufficiency"],
            "comprehensiveness": faith["comprehensiveness"],
            "seconds_per_target": seconds / len(targets),
            "forward_tokens_per_target": tokens / len(targets),
            "targets": float(len(targets)),
            **gold(method, [result.rationales for result in results])}
    reference = rows["greedy"]
    for method, row in rows.items():
        pairs = list(zip(codes[method], codes["greedy"], strict=True))
        row["f1_vs_greedy"] = mean(f1(a, b) for a, b in pairs)
        row["exact_vs_greedy"] = mean(float(sorted(a) == sorted(b)) for a, b in pairs)
        row["speedup"] = reference["seconds_per_target"] / row["seconds_per_target"]
        row["forward_tokens_ratio"] = (reference["forward_tokens_per_target"]
                                       / max(row["forward_tokens_per_target"], 1))
        row["length_ratio"] = row["mean_length"] / reference["mean_length"]
    add_nrg(rows)
    return rows


# (metric, higher is better, desideratum)
NRG_METRICS = (("sufficiency", False, "faithfulness"), ("comprehensiveness", True,
                                                        "faithfulness"),
               ("label_bit_precision", True, "plausibility"), ("alignment_f1", True,
                                                               "plausibility"),
               ("aer", False, "plausibility"), ("copy_source_recall", True, "plausibility"))


def add_nrg(rows: dict[str, dict[str, float]]) -> None:
    """UNIREX's normalized relative gain, per method (see the module docstring)."""
    gains: dict[str, dict[str, list[float]]] = {m: {} for m in rows}
    for metric, higher, desideratum in NRG_METRICS:
        values = {m: r[metric] for m, r in rows.items() if metric in r and r[metric] == r[metric]}
        if len(values) < 2:
            continue
        low, high = min(values.values()), max(values.values())
        for method, value in values.items():
            gain = 1.0 if high == low else (value - low) / (high - low)
            gains[method].setdefault(desideratum, []).append(gain if higher else 1 - gain)
    for method, per in gains.items():
        for desideratum, values in per.items():
            rows[method][f"nrg_{desideratum}"] = mean(values)
        if per:
            rows[method]["nrg"] = mean(mean(v) for v in per.values())


# -- settings ----------------------------------------------------------------------------------
def label_bits(sentences: list[str]) -> Callable[[str, list[list[Any]]], dict[str, float]]:
    """Majority Class: the share of the label rationale's bits equal to the label."""
    def gold(_method: str, rationales: list[list[Any]]) -> dict[str, float]:
        shares = []
        for sentence, (r,) in zip(sentences, rationales, strict=True):
            words = sentence.split()
            bits = [words[p] for p in r.target_rationale if words[p] in ("0", "1")]
            if bits:
                shares.append(sum(b == words[-1] for b in bits) / len(bits))
        return {"label_bit_precision": mean(shares)}
    return gold


def majority_class_setting(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``majority_class`` (17 bits) and ``held_out`` (after filler words, the extractor
    trained on shorter contexts than it is tested on): the label of each test sentence."""
    held_out = name == "held_out"
    model_name = "long" if held_out else "majority_class"
    print(f"[{name}] model ({model_name})", flush=True)
    model, tokenizer = train_label_model(out / "models" / model_name,
                                         (0, LONG_FILLER) if held_out else (0, 0),
                                         args.lm_steps[model_name], args.seed)
    teacher_lines = label_sentences(args.teacher, (0, HELD_OUT_FILLER) if held_out else (0, 0),
                                    torch.Generator().manual_seed(args.seed + 1))
    test_lines = label_sentences(args.test, (LONG_FILLER,) * 2 if held_out else (0, 0),
                                 torch.Generator().manual_seed(args.seed + 2))
    return language_model_setting(name, model_name, model, tokenizer, label_problem,
                                  teacher_lines, test_lines, label_bits(test_lines), args, out)


def copy_setting(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """``long_context``: every word of the repetition of 64 random words."""
    print(f"[{name}] model (copy)", flush=True)
    model, tokenizer = train_copy_model(out / "models" / "copy", COPY_HALF,
                                        args.lm_steps["copy"], args.seed)
    teacher_lines = copy_sentences(args.copy_teacher, COPY_HALF,
                                   torch.Generator().manual_seed(args.seed + 1))
    test_lines = copy_sentences(args.copy_test, COPY_HALF,
                                torch.Generator().manual_seed(args.seed + 2))

    def copied(_method: str, rationales: list[list[Any]]) -> dict[str, float]:
        """The share of rationales holding the word the target copies."""
        return {"copy_source_recall": mean(
            float(r.target_position - COPY_HALF in r.target_rationale)
            for per in rationales for r in per)}

    return language_model_setting(name, "copy", model, tokenizer, copy_problem, teacher_lines,
                                  test_lines, copied, args, out)


def language_model_setting(name: str, model_name: str, model: Any, tokenizer: Any,
                           make_problem: Callable[[Any, str], RationalizationProblem],
                           teacher_lines: list[str], test_lines: list[str],
                           gold: Callable[[str, list[list[Any]]], dict[str, float]],
                           args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """An extractor taught by greedy on ``teacher_lines``, then every method on
    ``test_lines``."""
    from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

    adapter = HuggingFaceCausalLM(model)
    print(f"[{name}] extractor", flush=True)
    extractor, teacher = cached_extractor(
        out / name / "extractor", lambda _p: adapter,
        [make_problem(tokenizer, s) for s in teacher_lines], args.extractor_steps, args.seed,
        args.objectives)
    examples = [(adapter, make_problem(tokenizer, s)) for s in test_lines]
    targets = [(p, t) for _, p in examples for t in p.targets]
    print(f"[{name}] {len(examples)} test sequences ({len(targets)} targets) x "
          f"{len(args.methods)} methods", flush=True)
    rows = evaluate(examples, counted_modules(model), args.methods, extractor,
                    top_k_for(teacher), gold)
    return {"model": model_name, "teacher": teacher, "test_examples": len(examples),
            "mean_context_tokens": mean(p.context_size(t) for p, t in targets),
            "methods": rows}


def translation_folder(name: str, args: argparse.Namespace, out: Path) -> Path:
    """A finished pipeline folder, trained with the quick schedule of ``make methods`` when
    missing."""
    from sequential_rationales_experiments.commands import run_translation_benchmark
    from sequential_rationales_experiments.commands.compare_methods import check_model_folder

    given = args.translation if name == "translation" else args.translation_hard
    folder = Path(given) if given else out / name
    variant = "standard" if name == "translation" else "hard"
    if not given and not (folder / "summary.json").is_file():
        print(f"[{name}] training the {variant} translation model ({folder})", flush=True)
        run_translation_benchmark.main(["--out", str(folder), "--quick", "--variant", variant,
                                        "--rationalize", "2", "--methods", "greedy",
                                        "--standard-updates", "500",
                                        "--compatible-updates", "200"])
    check_model_folder(variant, folder)
    return folder


def translation_setting(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from sequential_rationales.adapters.fairseq import FairseqTranslationModel
    from sequential_rationales_experiments import fairseq_tools
    from sequential_rationales_experiments.commands.compare_methods import (
        TRANSLATION_CHECKPOINT,
    )
    from sequential_rationales_experiments.commands.evaluate_alignment_rationales import (
        read_alignments,
        word_items,
    )
    from sequential_rationales_integrations.fairseq import load_hub_model

    folder = translation_folder(name, args, out)
    checkpoint = folder / TRANSLATION_CHECKPOINT
    fairseq_tools.quiet_fairseq_logging()
    hub = load_hub_model(checkpoint.parent, checkpoint.name,
                         str(folder / "data-bin" / "synthetic.de-en")).eval()

    def adapter_for(problem: RationalizationProblem) -> ModelAdapter:
        return FairseqTranslationModel(hub, source_length=problem.num_source + 1)

    print(f"[{name}] extractor", flush=True)
    teacher_pairs = translation_pairs(hub, "train", args.translation_teacher)
    extractor, teacher = cached_extractor(out / name / "extractor", adapter_for,
                                          [p for _, p in teacher_pairs],
                                          args.extractor_steps, args.seed, args.objectives)
    test_pairs = translation_pairs(hub, "test", args.translation_test)
    alignments = read_alignments(folder / "text" / "test_alignments.jsonl")

    def gold(_method: str, rationales: list[list[Any]]) -> dict[str, float]:
        items = []
        for (index, problem), per_target in zip(test_pairs, rationales, strict=True):
            log = {"source_tokens": [0] * (problem.num_source + 1), "rationalizations": [
                {"target_position": r.target_position, "source_rationale": r.source_rationale}
                for r in per_target]}
            items += word_items(log, alignments[index], None)
        predicted, sure, possible, lengths, _ = (list(c) for c in zip(*items))
        row = alignment_table_row(predicted, sure, possible, lengths, None)
        return {"aer": row["AER"], "alignment_f1": row["F1"]}

    examples = [(adapter_for(p), p) for _, p in test_pairs]
    print(f"[{name}] {len(examples)} test pairs x {len(args.methods)} methods", flush=True)
    rows = evaluate(examples, counted_modules(hub), args.methods, extractor,
                    top_k_for(teacher), gold)
    targets = [(p, t) for _, p in examples for t in p.targets]
    return {"model": str(folder), "teacher": teacher, "test_examples": len(examples),
            "mean_context_tokens": mean(p.context_size(t) for p, t in targets),
            "methods": rows}


def summary_of(setting: str, result: dict[str, Any]) -> dict[str, Any]:
    """The figures the goals are stated in."""
    rows = result["methods"]
    ordered, greedy = rows.get("amortized", {}), rows["greedy"]
    out = {"mean_context_tokens": result["mean_context_tokens"],
           "test_examples": result["test_examples"],
           "f1_vs_greedy": ordered.get("f1_vs_greedy"),
           "forward_tokens_ratio": ordered.get("forward_tokens_ratio"),
           "speedup": ordered.get("speedup"),
           "length_ratio": ordered.get("length_ratio"),
           "argmax_reached": ordered.get("argmax_reached"),
           "greedy_argmax_reached": greedy["argmax_reached"]}
    if "label_bit_precision" in greedy:
        out["label_bit_precision"] = ordered.get("label_bit_precision")
        out["greedy_label_bit_precision"] = greedy["label_bit_precision"]
    if "greedy_paper" in rows and ordered:  # against the paper's algorithm
        out["forward_tokens_ratio_vs_paper"] = (rows["greedy_paper"]["forward_tokens_per_target"]
                                                / ordered["forward_tokens_per_target"])
        out["speedup_vs_paper"] = (rows["greedy_paper"]["seconds_per_target"]
                                   / ordered["seconds_per_target"])
    if "amortized_top_k" in rows:
        out["topk_speedup"] = rows["amortized_top_k"]["speedup"]
        out["topk_f1_vs_greedy"] = rows["amortized_top_k"]["f1_vs_greedy"]
    return out


# -- output ------------------------------------------------------------------------------------
COLUMNS = [("mean_length", "length", "{:.2f}"), ("f1_vs_greedy", "F1 vs greedy", "{:.2f}"),
           ("exact_vs_greedy", "exact", "{:.2f}"), ("argmax_reached", "argmax", "{:.2f}"),
           ("sufficiency", "suff.", "{:.3f}"), ("comprehensiveness", "comp.", "{:.3f}"),
           ("label_bit_precision", "label bits", "{:.2f}"), ("aer", "AER", "{:.2f}"),
           ("alignment_f1", "align. F1", "{:.2f}"), ("copy_source_recall", "copied", "{:.2f}"),
           ("nrg", "NRG", "{:.2f}"),
           ("seconds_per_target", "ms/target", "{:.2f}"),
           ("forward_tokens_per_target", "fwd tokens/target", "{:.0f}"),
           ("speedup", "speed-up", "{:.1f}x"), ("forward_tokens_ratio", "fewer tokens", "{:.1f}x")]


def markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| setting | method | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for setting, result in results.items():
        for method, row in result["methods"].items():
            cells = []
            for key, _, fmt in COLUMNS:
                value = row.get(key)
                if value is None or value != value:
                    cells.append("-")
                else:
                    cells.append(fmt.format(value * (1000 if key == "seconds_per_target"
                                                     else 1)))
            label = METHOD_LABELS.get(method, method)
            lines.append(f"| {setting} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Per setting, each method's speed-up over greedy against its F1 with greedy's
    rationales (the learned extractor's two modes as stars); the legend in the last panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    settings = list(results)
    columns = min(3, len(settings) + 1)
    rows = -(-(len(settings) + 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.3 * rows), squeeze=False)
    panels = axes.ravel()
    colors = plt.get_cmap("tab20")
    for ax, setting in zip(panels, settings, strict=False):
        for method, row in results[setting]["methods"].items():
            ours = method.startswith("amortized")
            ax.scatter(row["speedup"], row["f1_vs_greedy"], s=110 if ours else 30,
                       marker="*" if ours else "o", zorder=3 if ours else 2,
                       color=colors(METHODS.index(method) % 20 if method in METHODS else 19),
                       edgecolors="black" if ours else "none", linewidths=0.5,
                       label=METHOD_LABELS.get(method, method))
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0,)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{setting} ({results[setting]['mean_context_tokens']:.0f} tokens)",
                     fontsize=10)
        ax.set_xlabel("speed-up over greedy (wall time per target)", fontsize=8)
        ax.set_ylabel("F1 against greedy's rationale", fontsize=8)
        ax.grid(alpha=0.3)
    legend = panels[len(settings)]
    handles, labels = panels[0].get_legend_handles_labels()
    legend.legend(handles, labels, loc="center", fontsize=8, frameon=False)
    for ax in panels[len(settings):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    results = {}
    for name in args.settings:
        run = (translation_setting if name.startswith("translation") else
               copy_setting if name == "long_context" else majority_class_setting)
        results[name] = run(name, args, out)
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "results.json").write_text(json.dumps(results[name], indent=2) + "\n")
    summary = {name: summary_of(name, result) for name, result in results.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(results)
    (out / "amortized.md").write_text(table + "\n")
    figure(results, out / "amortized.png")
    print(table)
    return {"summary": summary, "results": results}
