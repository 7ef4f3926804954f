"""The gold-rationale translation benchmark: Tables 3 and 4 on a task with known alignments.

IWSLT14 and the RWTH gold alignments cannot be downloaded here, so the paper's translation
experiments run on the synthetic German-like -> English-like task of
``sequential_rationales.synthetic_translation`` (reordering, one-to-many, many-to-one with a
long-distance particle, untranslated fillers; sure and possible links), with the real fairseq
CLIs and the project's plugin. Steps (each skipped when its output exists; ``--force`` redoes):

1. generate the corpus and the gold alignments of the test set;
2. ``fairseq-preprocess``; train the standard model (mixture 0), then fine-tune it for
   compatibility (mixture 0.5, ``inverse_length``), as the paper did;
3. BLEU of both on the test set (beam 5, sacrebleu);
4. distractors: translate the test set with the compatible model (beam 1), concatenate each
   example with a random other one, rationalize every target token with greedy search and the
   six baselines, and print Table 3;
5. alignments: rationalize the reference translations (with and without ``--top_1``) and
   print Table 4 against the gold links.

Writes ``OUT/summary.json`` with the BLEU scores and both tables.

    python scripts/run_translation_benchmark.py --out outputs/translation --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from scripts.command_line import PLUGIN, cli, run  # noqa: E402
from sequential_rationales import BASELINE_METHODS  # noqa: E402
from sequential_rationales.synthetic_translation import synthetic_translation_corpus  # noqa: E402
from sequential_rationales.translation_data import (  # noqa: E402
    make_distractor_dataset,
    read_fairseq_hypotheses,
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/translation", help="output directory")
    p.add_argument("--quick", action="store_true",
                   help="short training (about 10 minutes on two CPU cores)")
    p.add_argument("--train-pairs", type=int, default=30_000, help="training sentence pairs")
    p.add_argument("--test-pairs", type=int, default=300, help="test sentence pairs")
    p.add_argument("--rationalize", type=int, default=60,
                   help="test examples rationalized per method and task")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="rationalization methods")
    p.add_argument("--integrated-gradient-steps", type=int, default=50,
                   help="path steps of integrated gradients")
    p.add_argument("--standard-updates", type=int, default=None, help="override the updates")
    p.add_argument("--compatible-updates", type=int, default=None,
                   help="override the fine-tuning updates")
    p.add_argument("--seed", type=int, default=1, help="seed for data, training, distractors")
    p.add_argument("--force", action="store_true", help="redo steps whose outputs exist")
    return p.parse_args(argv)


def write_corpus(text: Path, args: argparse.Namespace) -> None:
    """Plain-text splits plus the test set's gold links in the format of
    ``fairseq/map_alignments_to_bpe.py`` (no BPE here: one piece per word)."""
    text.mkdir(parents=True, exist_ok=True)
    sizes = {"train": args.train_pairs, "valid": 500, "test": args.test_pairs}
    for offset, (split, n) in enumerate(sizes.items()):
        pairs = synthetic_translation_corpus(n, seed=args.seed * 1000 + offset)
        (text / f"{split}.de").write_text("\n".join(" ".join(p.source) for p in pairs) + "\n")
        (text / f"{split}.en").write_text("\n".join(" ".join(p.target) for p in pairs) + "\n")
        if split == "test":
            with open(text / "test_alignments.jsonl", "w") as f:
                for i, p in enumerate(pairs):
                    f.write(json.dumps({
                        "index": i, "source_word_index": list(range(len(p.source))),
                        "target_word_index": list(range(len(p.target))),
                        "sure": sorted(p.sure), "possible": sorted(p.possible)}) + "\n")


def preprocess(text: Path, dest: Path, log: Path, testpref: Path | None = None,
               dictionaries: Path | None = None) -> None:
    cmd = [cli("fairseq-preprocess"), "--source-lang", "de", "--target-lang", "en",
           "--destdir", str(dest), "--workers", "2"]
    if dictionaries is None:
        cmd += ["--trainpref", str(text / "train"), "--validpref", str(text / "valid"),
                "--testpref", str(testpref or text / "test")]
    else:
        cmd += ["--testpref", str(testpref), "--srcdict", str(dictionaries / "dict.de.txt"),
                "--tgtdict", str(dictionaries / "dict.en.txt")]
    shutil.rmtree(dest, ignore_errors=True)
    run(cmd, log)


def train(data_bin: Path, save_dir: Path, updates: int, mixture: float, lr: str,
          schedule: dict, args: argparse.Namespace, out: Path, restore: Path | None) -> Path:
    best = save_dir / "checkpoint_best.pt"
    if best.exists() and not args.force:
        print(f"  {best} exists: skipping training")
        return best
    shutil.rmtree(save_dir, ignore_errors=True)
    save_dir.mkdir(parents=True)
    cmd = [cli("fairseq-train"), str(data_bin), "--user-dir", str(PLUGIN), *MODEL_FLAGS,
           "--lr", lr, "--max-tokens", str(schedule["max_tokens"]),
           "--max-update", str(updates), "--save-dir", str(save_dir), "--seed", str(args.seed),
           "--word-dropout-mixture", str(mixture), "--word-dropout-type", "inverse_length",
           "--tensorboard-logdir", str(out / "tensorboard" / save_dir.name)]
    if restore is None:
        cmd += ["--lr-scheduler", "inverse_sqrt", "--warmup-updates", "300",
                "--warmup-init-lr", "1e-07"]
    else:  # the paper's compatibility fine-tune: start from the standard model
        shutil.copy(restore, save_dir / "checkpoint_last.pt")
        cmd += ["--reset-optimizer", "--reset-dataloader", "--reset-meters",
                "--reset-lr-scheduler"]
    if not torch.cuda.is_available():
        cmd.append("--cpu")
    start = time.perf_counter()
    run(cmd, out / f"train_{save_dir.name}.log")
    print(f"  trained {save_dir.name} in {time.perf_counter() - start:.0f}s")
    return best


def translate(checkpoint: Path, data_bin: Path, beam: int, log: Path) -> list[str]:
    output = run([cli("fairseq-generate"), str(data_bin), "--path", str(checkpoint),
                  "--user-dir", str(PLUGIN), "--batch-size", "128", "--beam", str(beam),
                  # Targets are at most about twice the source: bound runaway hypotheses.
                  "--max-len-a", "2", "--max-len-b", "5",
                  "--required-batch-size-multiple", "1", "--cpu"], log)
    return read_fairseq_hypotheses(output.splitlines())


def bleu(hypotheses: list[str], references: list[str]) -> float:
    import sacrebleu

    return float(sacrebleu.corpus_bleu(hypotheses, [references]).score)


def load_script(path: Path):
    """Import a script of the ``fairseq/`` folder, which is not a package (it must never
    shadow the installed fairseq)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rationalize_all(task: str, data: Path, checkpoint: Path, out: Path,
                    args: argparse.Namespace, top_1: bool) -> None:
    rationalize_iwslt = load_script(ROOT / "fairseq" / "rationalize_iwslt.py")
    for method in args.methods:
        argv = ["--checkpoint_dir", str(checkpoint.parent.parent), "--checkpoint_file",
                str(checkpoint), "--task", task, "--data", str(data), "--method", method,
                "--limit", str(args.rationalize), "--out", str(out / "rationales"),
                "--integrated_gradient_steps", str(args.integrated_gradient_steps), "--cpu"]
        rationalize_iwslt.main(argv + (["--top_1"] if top_1 else []))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    # fairseq sets the root logger to DEBUG on import; keep the output to progress and results.
    logging.getLogger().setLevel(logging.WARNING)
    schedule = dict(SCHEDULES["quick" if args.quick else "full"])
    for key in ("standard_updates", "compatible_updates"):
        if getattr(args, key):
            schedule[key] = getattr(args, key)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text, data_bin = out / "text", out / "data-bin" / "synthetic.de-en"
    start = time.perf_counter()
    print("[1/5] synthetic corpus with gold alignments")
    if args.force or not (text / "test_alignments.jsonl").exists():
        write_corpus(text, args)
    if args.force or not (data_bin / "dict.de.txt").exists():
        preprocess(text, data_bin, out / "preprocess.log")
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
                                  "rationalized_examples": args.rationalize}}
    for name, checkpoint in [("standard", standard), ("compatible", compatible)]:
        hyps = translate(checkpoint, data_bin, 5, out / f"generate_{name}.log")
        summary[f"bleu_{name}"] = bleu(hyps, references)
        print(f"  {name}: BLEU {summary[f'bleu_{name}']:.2f}")
    print("[4/5] distractors (Table 3)")
    distractor_dir = out / "distractors"
    distractor_bin = out / "data-bin" / "distractors.de-en"
    if args.force or not (distractor_dir / "distractors.jsonl").exists():
        distractor_dir.mkdir(parents=True, exist_ok=True)
        hyps = translate(compatible, data_bin, 1, out / "generate_beam1.log")
        sources = (text / "test.de").read_text().splitlines()
        examples = make_distractor_dataset(sources, hyps, seed=args.seed)
        (distractor_dir / "test.de").write_text("\n".join(e.source for e in examples) + "\n")
        (distractor_dir / "test.en").write_text("\n".join(e.target for e in examples) + "\n")
        with open(distractor_dir / "distractors.jsonl", "w") as f:
            for k, e in enumerate(examples):
                f.write(json.dumps({"index": k, "first_index": e.first_index,
                                    "second_index": e.second_index,
                                    "source_break": e.source_break,
                                    "target_break": e.target_break}) + "\n")
        preprocess(text, distractor_bin, out / "preprocess_distractors.log",
                   testpref=distractor_dir / "test", dictionaries=data_bin)
    rationalize_all("distractors", distractor_bin, compatible, out, args, top_1=False)
    from analysis import evaluate_alignment_rationales, evaluate_distractor_rationales

    results = out / "rationales"
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"BLEU standard {summary['bleu_standard']:.2f}, compatible "
          f"{summary['bleu_compatible']:.2f}; summary in {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
