"""The learned rationale extractor against greedy search: how much of greedy's agreement and
minimality it keeps, at what fraction of the forward passes.

Per setting, a compatible GPT-2 (word dropout) is trained on Majority Class with
``huggingface/run_clm.py``; greedy rationales of the label of training sentences are the
teacher of an extractor (``sequential_rationales.extractor``); then, on test sentences, every
method rationalizes the label. Settings: ``majority_class`` (17 bits, contexts of 18 tokens)
and ``long_context`` (the same 17 bits and label after 64 filler tokens drawn from their own
four words: contexts of 82 tokens, where greedy tries every filler token at every step).
81-bit Majority Class did not serve: the small model's label loss stayed at chance for 5,000
steps. Per method: the mean rationale length, ``f1_vs_greedy`` and ``exact_vs_greedy`` (the
rationale's positions against greedy's), ``argmax_reached``, ``label_bit_precision`` (the
share of the rationale's bits equal to the label; greedy's are all equal to it on a
compatible model), seconds and forward tokens per target, and both as ratios to greedy.
Writes OUT/SETTING/ (data, model, extractor, results.json), OUT/summary.json,
OUT/amortized.md and OUT/amortized.png (speed-up against agreement). Finished models and
extractors are reused by a rerun. Example::

    python analysis/evaluate_amortized.py --quick --out outputs/amortized
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.extractor import (
    ExtractorConfig,
    RationaleExtractor,
    TeacherSequence,
    mean_order_loss,
    train_extractor,
)
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.commands import demo

SETTINGS = {"majority_class": 0, "long_context": 64}  # filler tokens before the 17 bits
BITS = 17
FILLER_WORDS = ("a", "b", "c", "d")
METHODS = ("greedy", "amortized", "last_attention", "gradient_norm", "random")
# Training steps of the models per setting. The label is learned late (a sudden drop of its
# loss): 1,500 steps on 17 bits, and 2,000 after 64 filler tokens, left it at chance in one
# run of two.
LEARNING_RATE = {False: 1e-3, True: 3e-3}  # with filler: 1e-3 left the label at chance
QUICK = {"train_steps": {"majority_class": 3000, "long_context": 6000}, "teacher": 200,
         "test": 60, "extractor_steps": 300}
FULL = {"train_steps": {"majority_class": 5000, "long_context": 10000}, "teacher": 500,
        "test": 200, "extractor_steps": 1000}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/amortized", help="output folder")
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                   help="which settings to run")
    p.add_argument("--methods", nargs="+", default=list(METHODS),
                   help="methods compared (greedy is always run: it is the reference)")
    p.add_argument("--quick", action="store_true",
                   help="CPU-sized: fewer training steps, teacher and test sentences")
    p.add_argument("--seed", type=int, default=0, help="seed of data, training and draws")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    if "greedy" not in args.methods:
        args.methods = ["greedy", *args.methods]
    return args


class ForwardTokens:
    """Counts the tokens the model's body runs (cached prefixes are not run again)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.tokens = 0
        self.handle = model.base_model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        shape = ids.shape if ids is not None else embeds.shape[:2]
        self.tokens += int(shape[0] * shape[1])

    def close(self) -> None:
        self.handle.remove()


def write_data(folder: Path, filler: int, test: int, seed: int) -> Path:
    """Majority Class sentences (``BITS`` bits, ``=``, the label), each after ``filler`` random
    filler words, and a word-level tokenizer for them."""
    from sequential_rationales_experiments.majority_class import majority_class_sentences
    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    for split, n in {"train": 20_000, "valid": 1000, "test": test}.items():
        lines = majority_class_sentences(n, BITS, generator)
        words = torch.randint(len(FILLER_WORDS), (n, filler), generator=generator).tolist()
        lines = [" ".join([*(FILLER_WORDS[w] for w in row), line])
                 for row, line in zip(words, lines, strict=True)]
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    build_word_level_tokenizer([" ".join(["0 1 =", *FILLER_WORDS])]).save_pretrained(
        str(folder / "tokenizer"))
    return data


def train_model(folder: Path, filler: int, steps: int, seed: int) -> tuple[Any, Any, Path]:
    """Data and a compatible GPT-2 (reused when present)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    data = write_data(folder, filler, FULL["test"], seed)
    # demo.train sizes the model's positions by its bits: the filler counts as bits there.
    args = argparse.Namespace(bits=filler + BITS, seed=seed, layers=2, dim=64, steps=steps,
                              batch_size=64, learning_rate=LEARNING_RATE[filler > 0])
    if not (folder / "compatible" / "config.json").is_file():
        demo.train(folder, data, args, mixture=1.0)
    model = AutoModelForCausalLM.from_pretrained(folder / "compatible").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return model, tokenizer, data


def label_problem(tokenizer: Any, sentence: str) -> RationalizationProblem:
    """The label (the last word) is the target."""
    ids = torch.tensor(tokenizer(sentence)["input_ids"])
    return RationalizationProblem(ids, targets=[len(sentence.split()) - 1])


def f1(a: list[int], b: list[int]) -> float:
    common = len(set(a) & set(b))
    return 2 * common / (len(set(a)) + len(set(b))) if a or b else 1.0


def evaluate(adapter: HuggingFaceCausalLM, model: Any, problems: list[RationalizationProblem],
             sentences: list[str], methods: list[str],
             extractor: RationaleExtractor) -> dict[str, dict[str, float]]:
    """Per method, the label's rationale metrics averaged over the test sentences."""
    rationales: dict[str, list[list[int]]] = {}
    rows: dict[str, dict[str, float]] = {}
    for method in methods:
        counter = ForwardTokens(model)
        start = time.perf_counter()
        results = [rationalize(adapter, p, method, progress=False, precision="fp32",
                               extractor=extractor).rationales[0] for p in problems]
        seconds = time.perf_counter() - start
        counter.close()
        rationales[method] = [r.target_rationale for r in results]
        bit_shares = []
        for r, sentence in zip(results, sentences, strict=True):
            words = sentence.split()
            seen = [words[p] for p in r.target_rationale if words[p] in ("0", "1")]
            label = words[-1]
            if seen:
                bit_shares.append(sum(b == label for b in seen) / len(seen))
        rows[method] = {
            "mean_length": sum(len(r) for r in rationales[method]) / len(results),
            "argmax_reached": sum(r.reached_argmax for r in results) / len(results),
            "label_bit_precision": sum(bit_shares) / max(len(bit_shares), 1),
            "seconds_per_target": seconds / len(results),
            "forward_tokens_per_target": counter.tokens / len(results)}
    greedy = rows["greedy"]
    for method, row in rows.items():
        pairs = list(zip(rationales[method], rationales["greedy"], strict=True))
        row["f1_vs_greedy"] = sum(f1(a, b) for a, b in pairs) / len(pairs)
        row["exact_vs_greedy"] = sum(a == b for a, b in pairs) / len(pairs)
        row["speedup"] = greedy["seconds_per_target"] / row["seconds_per_target"]
        row["forward_tokens_ratio"] = (greedy["forward_tokens_per_target"]
                                       / max(row["forward_tokens_per_target"], 1))
        row["length_ratio"] = row["mean_length"] / greedy["mean_length"]
    return rows


def run_setting(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    filler = SETTINGS[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    model, tokenizer, data = train_model(folder, filler, args.train_steps[name], args.seed)
    label = filler + BITS + 1
    adapter = HuggingFaceCausalLM(model)
    train_lines = [s for s in (data / "train.txt").read_text().split("\n") if s]
    teacher = []
    for sentence in train_lines[:args.teacher]:
        problem = label_problem(tokenizer, sentence)
        result = rationalize(adapter, problem, "greedy", progress=False)
        teacher.append(TeacherSequence(problem, {label: result.rationales[0].target_rationale}))
    extractor_dir = folder / "extractor"
    if (extractor_dir / "extractor.json").is_file():
        extractor = RationaleExtractor.load(extractor_dir)
    else:
        extractor = train_extractor(adapter, teacher, ExtractorConfig(0, rank=16),
                                    steps=args.extractor_steps, lr=3e-3, seed=args.seed)
        extractor.save(extractor_dir)
    test_lines = [s for s in (data / "test.txt").read_text().split("\n") if s][:args.test]
    problems = [label_problem(tokenizer, s) for s in test_lines]
    rows = evaluate(adapter, model, problems, test_lines, args.methods, extractor)
    summary = {"filler": filler, "bits": BITS, "mean_context_tokens": label,
               "test_sentences": len(problems),
               "teacher_sentences": len(teacher),
               "extractor_loss": mean_order_loss(extractor, adapter, teacher),
               "methods": rows}
    (folder / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    columns = [("mean_length", "length", "{:.2f}"), ("f1_vs_greedy", "F1 vs greedy", "{:.2f}"),
               ("exact_vs_greedy", "exact", "{:.2f}"), ("argmax_reached", "argmax", "{:.2f}"),
               ("label_bit_precision", "label bits", "{:.2f}"),
               ("seconds_per_target", "ms/target", "{:.1f}"),
               ("forward_tokens_per_target", "fwd tokens/target", "{:.0f}"),
               ("speedup", "speed-up", "{:.1f}x"),
               ("forward_tokens_ratio", "fewer tokens", "{:.1f}x")]
    lines = ["| setting | method | " + " | ".join(c[1] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for setting, summary in summaries.items():
        for method, row in summary["methods"].items():
            cells = [fmt.format(row[key] * (1000 if key == "seconds_per_target" else 1))
                     for key, _, fmt in columns]
            lines.append(f"| {setting} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "os^Dv"
    methods = sorted({m for s in summaries.values() for m in s["methods"]})
    for k, (setting, summary) in enumerate(summaries.items()):
        for method, row in summary["methods"].items():
            ax.scatter(row["speedup"], row["f1_vs_greedy"], marker=markers[k % len(markers)],
                       color=f"C{methods.index(method)}", label=f"{setting}: {method}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}x"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: ""))
    ax.set_xlabel("speed-up over greedy search (wall time per target)")
    ax.set_ylabel("F1 against greedy's rationale")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    summaries = {}
    for name in args.settings:
        print(f"[{name}] ...", flush=True)
        summaries[name] = run_setting(name, args, out)
    (out / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    table = markdown(summaries)
    (out / "amortized.md").write_text(table + "\n")
    figure(summaries, out / "amortized.png")
    print(table)
    return summaries
