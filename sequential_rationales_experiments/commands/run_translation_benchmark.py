"""The gold-rationale translation benchmark: Tables 3 and 4 on a task with known alignments.

The program behind ``scripts/run_translation_benchmark.py`` (the steps are described there):
the synthetic task of :mod:`sequential_rationales_experiments.synthetic_translation`, the real
fairseq CLIs, then :mod:`.rationalize_iwslt` and the two table commands in this process.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sequential_rationales import BASELINE_METHODS
from sequential_rationales_experiments import fairseq_tools
from sequential_rationales_experiments.cli import (
    ProgramParser,
    check_writable_dir,
    non_negative_int,
    positive_int,
)
from sequential_rationales_experiments.commands import (
    evaluate_alignment_rationales,
    evaluate_distractor_rationales,
    rationalize_iwslt,
)
from sequential_rationales_experiments.distractors import (
    make_distractor_dataset,
    write_distractors_jsonl,
)
from sequential_rationales_experiments.fairseq_tools import cli, read_fairseq_hypotheses, run
from sequential_rationales_experiments.iwslt14 import write_lines
from sequential_rationales_experiments.synthetic_translation import (
    VARIANTS,
    synthetic_translation_corpus,
)

METHODS = ("greedy", *BASELINE_METHODS)
SCHEDULES = {  # updates of the standard model, then of the compatible fine-tune
    "quick": {"standard_updates": 1200, "compatible_updates": 800, "max_tokens": 2048},
    "full": {"standard_updates": 6000, "compatible_updates": 4000, "max_tokens": 4096},
}
MODEL_FLAGS = [
    "--arch", "compatible_transformer", "--share-decoder-input-output-embed",
    "--encoder-layers", "2", "--decoder-layers", "2", "--encoder-embed-dim", "128",
    "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "256",
    "--decoder-ffn-embed-dim", "256", "--encoder-attention-heads", "4",
    "--decoder-attention-heads", "4", "--dropout", "0.1",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--weight-decay", "0.0001", "--no-epoch-checkpoints", "--num-workers", "0",
    "--log-format", "simple", "--log-interval", "100", "--required-batch-size-multiple", "1",
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/translation", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="short training (about 10 minutes on two CPU cores)")
    p.add_argument("--train-pairs", type=positive_int, default=30_000,
                   help="training sentence pairs")
    p.add_argument("--test-pairs", type=positive_int, default=300, help="test sentence pairs")
    p.add_argument("--variant", choices=VARIANTS, default="standard",
                   help="the task: standard, or hard (agreement, word sense from context, "
                        "repeated words; see synthetic_translation.py)")
    p.add_argument("--rationalize", type=positive_int, default=60,
                   help="test examples rationalized per method and task")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="rationalization methods")
    p.add_argument("--integrated-gradient-steps", type=positive_int, default=50,
                   help="path steps of integrated gradients")
    p.add_argument("--standard-updates", type=positive_int, default=None,
                   help="override the updates")
    p.add_argument("--compatible-updates", type=positive_int, default=None,
                   help="override the fine-tuning updates")
    p.add_argument("--seed", type=non_negative_int, default=1,
                   help="seed for data, training, distractors")
    p.add_argument("--force", action="store_true", help="redo steps whose outputs exist")
    return p.parse_args(argv)


def write_corpus(text: Path, args: argparse.Namespace) -> None:
    """Plain-text splits plus the test set's gold links in the format of
    ``fairseq/map_alignments_to_bpe.py`` (no BPE here: one piece per word); skipped when
    ``TEXT/step.done`` records the same sizes, seed and variant."""
    # The standard variant keeps its original marker, so existing corpora stay finished.
    variant = [] if args.variant == "standard" else [args.variant]
    settings = fairseq_tools.settings_of(args.train_pairs, args.test_pairs, args.seed, *variant)
    if not args.force and fairseq_tools.is_done(text, settings):
        return
    with fairseq_tools.building_dir(text) as tmp:
        _write_corpus(tmp, args)
        fairseq_tools.mark_done(tmp, settings)


def _write_corpus(text: Path, args: argparse.Namespace) -> None:
    sizes = {"train": args.train_pairs, "valid": 500, "test": args.test_pairs}
    for offset, (split, n) in enumerate(sizes.items()):
        pairs = synthetic_translation_corpus(n, seed=args.seed * 1000 + offset,
                                             variant=args.variant)
        (text / f"{split}.de").write_text("\n".join(" ".join(p.source) for p in pairs) + "\n")
        (text / f"{split}.en").write_text("\n".join(" ".join(p.target) for p in pairs) + "\n")
        if split == "test":
            with open(text / "test_alignments.jsonl", "w") as f:
                for i, p in enumerate(pairs):
                    f.write(json.dumps({
                        "index": i, "source_word_index": list(range(len(p.source))),
                        "target_word_index": list(range(len(p.target))),
                        "sure": sorted(p.sure), "possible": sorted(p.possible)}) + "\n")


def preprocess(text: Path, dest: Path, log: Path, force: bool, testpref: Path | None = None,
               dictionaries: Path | None = None) -> None:
    """Binarize the corpus, or (with ``dictionaries``) only a test set with the corpus's
    dictionaries."""
    flags: list[object] = ["--source-lang", "de", "--target-lang", "en", "--workers", "2"]
    if dictionaries is None:
        flags += ["--trainpref", text / "train", "--validpref", text / "valid",
                  "--testpref", testpref or text / "test"]
    else:
        flags += ["--testpref", testpref, "--srcdict", dictionaries / "dict.de.txt",
                  "--tgtdict", dictionaries / "dict.en.txt"]
    depends = fairseq_tools.read_marker(text if testpref is None else testpref.parent)
    fairseq_tools.preprocess(dest, log, *flags, force=force, depends=depends)


def train(data_bin: Path, save_dir: Path, updates: int, mixture: float, lr: str,
          schedule: dict, args: argparse.Namespace, out: Path, restore: Path | None) -> Path:
    flags = [*MODEL_FLAGS, "--lr", lr, "--max-tokens", schedule["max_tokens"],
             "--max-update", updates, "--seed", args.seed,
             "--word-dropout-mixture", mixture, "--word-dropout-type", "inverse_length",
             "--tensorboard-logdir", out / "tensorboard" / save_dir.name]
    if restore is None:
        flags += ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "300",
                  "--warmup-init-lr", "1e-07"]
    # else the paper's compatibility fine-tune: fairseq_tools.train starts from the standard
    # model with --finetune-from-model (a fresh optimizer, scheduler, meters and data order).
    if not torch.cuda.is_available():
        flags.append("--cpu")
    return fairseq_tools.train(save_dir.name, data_bin, save_dir, flags,
                               out / f"train_{save_dir.name}.log", force=args.force,
                               start_from=restore)


def translate(checkpoint: Path, data_bin: Path, beam: int, log: Path) -> list[str]:
    output = run([cli("fairseq-generate"), data_bin, "--path", checkpoint,
                  "--user-dir", fairseq_tools.plugin_dir(), "--batch-size", "128",
                  "--beam", beam,
                  # Targets are at most about twice the source: bound runaway hypotheses.
                  "--max-len-a", "2", "--max-len-b", "5",
                  "--required-batch-size-multiple", "1", "--cpu"], log,
                 step=f"translating with {checkpoint} (beam {beam})")
    return read_fairseq_hypotheses(output.splitlines())


def bleu(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def rationalize_all(task: str, data: Path, checkpoint: Path, out: Path,
                    args: argparse.Namespace, top_1: bool) -> None:
    for method in args.methods:
        argv = ["--checkpoint_dir", str(checkpoint.parent.parent), "--checkpoint_file",
                str(checkpoint), "--task", task, "--data", str(data), "--method", method,
                "--limit", str(args.rationalize), "--out", str(out / "rationales"),
                "--integrated_gradient_steps", str(args.integrated_gradient_steps), "--cpu"]
        rationalize_iwslt.main(argv + (["--top_1"] if top_1 else []))


def make_distractors(compatible: Path, data_bin: Path, text: Path, distractor_dir: Path,
                     distractor_bin: Path, out: Path, args: argparse.Namespace) -> None:
    """Translate the test set (beam 1), pair every example with a random other one, and
    binarize the pairs with the corpus's dictionaries; skipped when done with this model."""
    settings = fairseq_tools.settings_of(fairseq_tools.read_marker(compatible.parent), args.seed)
    if args.force or not fairseq_tools.is_done(distractor_dir, settings):
        hyps = translate(compatible, data_bin, 1, out / "generate_beam1.log")
        sources = (text / "test.de").read_text().splitlines()
        if len(hyps) != len(sources):
            raise RuntimeError(f"fairseq-generate translated {len(hyps)} of the {len(sources)} "
                               f"test sentences; log: {out / 'generate_beam1.log'}")
        examples = make_distractor_dataset(sources, hyps, seed=args.seed)
        with fairseq_tools.building_dir(distractor_dir) as tmp:
            write_lines(tmp / "test.de", (e.source for e in examples))
            write_lines(tmp / "test.en", (e.target for e in examples))
            write_distractors_jsonl(examples, tmp / "distractors.jsonl")
            fairseq_tools.mark_done(tmp, settings)
    preprocess(text, distractor_bin, out / "preprocess_distractors.log", args.force,
               testpref=distractor_dir / "test", dictionaries=data_bin)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    fairseq_tools.quiet_fairseq_logging()
    schedule = dict(SCHEDULES["quick" if args.quick else "full"])
    for key in ("standard_updates", "compatible_updates"):
        if getattr(args, key):
            schedule[key] = getattr(args, key)
    out = check_writable_dir(args.out)
    text, data_bin = out / "text", out / "data-bin" / "synthetic.de-en"
    start = time.perf_counter()
    print("[1/5] synthetic corpus with gold alignments")
    write_corpus(text, args)
    preprocess(text, data_bin, out / "preprocess.log", args.force)
    print("[2/5] training: standard, then the compatible fine-tune")
    checkpoints = out / "checkpoints"
    standard = train(data_bin, checkpoints / "standard_iwslt", schedule["standard_updates"], 0.0,
                     "1e-3", schedule, args, out, None)
    compatible = train(data_bin, checkpoints / "compatible_iwslt",
                       schedule["compatible_updates"], 0.5, "3e-4", schedule, args, out,
                       standard)
    print("[3/5] BLEU (beam 5)")
    references = (text / "test.en").read_text().splitlines()
    summary: dict = {"settings": {**schedule, "train_pairs": args.train_pairs,
                                  "rationalized_examples": args.rationalize,
                                  "variant": args.variant}}
    for name, checkpoint in [("standard", standard), ("compatible", compatible)]:
        hyps = translate(checkpoint, data_bin, 5, out / f"generate_{name}.log")
        if len(hyps) != len(references):
            raise RuntimeError(f"fairseq-generate translated {len(hyps)} of the "
                               f"{len(references)} test sentences; log: "
                               f"{out / f'generate_{name}.log'}")
        summary[f"bleu_{name}"] = bleu(hyps, references)
        print(f"  {name}: BLEU {summary[f'bleu_{name}']:.2f}")
    print("[4/5] distractors (Table 3)")
    distractor_dir = out / "distractors"
    distractor_bin = out / "data-bin" / "distractors.de-en"
    make_distractors(compatible, data_bin, text, distractor_dir, distractor_bin, out, args)
    # Logs of another model or distractor set must not be resumed as if they were these.
    results = out / "rationales"
    fairseq_tools.restart_if_changed(results, fairseq_tools.settings_of(
        fairseq_tools.read_marker(compatible.parent), fairseq_tools.read_marker(distractor_dir)),
        args.force)
    rationalize_all("distractors", distractor_bin, compatible, out, args, top_1=False)
    summary["table3_distractors"] = evaluate_distractor_rationales.main(
        ["--results_dir", str(results / "distractors"),
         "--breaks", str(distractor_dir / "distractors.jsonl")])
    print("[5/5] alignments (Table 4)")
    for top_1 in (False, True):
        rationalize_all("alignments", data_bin, compatible, out, args, top_1=top_1)
    summary["table4_alignments"] = evaluate_alignment_rationales.main(
        ["--results_dir", str(results / "alignments"),
         "--alignments", str(text / "test_alignments.jsonl"), "--top_1"])
    summary["seconds"] = round(time.perf_counter() - start, 1)
    fairseq_tools.write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(f"BLEU standard {summary['bleu_standard']:.2f}, compatible "
          f"{summary['bleu_compatible']:.2f}; summary in {out / 'summary.json'}")
    return summary
