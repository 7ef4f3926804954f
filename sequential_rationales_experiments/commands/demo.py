"""The main job, end to end on CPU with no downloads (``make demo``). Three parts:

``hf`` (Hugging Face: a compatible GPT-2 on Majority Class), ``majority`` and ``translation``
(fairseq). The program behind ``scripts/demo.py`` and ``rationales-demo``; its user
documentation is that file's docstring.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sequential_rationales import read_jsonl, write_jsonl
from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM
from sequential_rationales.render import highlight_rationale
from sequential_rationales_experiments.cli import ProgramParser, positive_int
from sequential_rationales_experiments.commands import run_clm
from sequential_rationales_experiments.hf_models import rationalize_tokens
from sequential_rationales_experiments.majority_class import (
    majority_class_calibration,
    majority_class_sentences,
)
from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
    build_word_level_tokenizer,
)

PARTS = ("hf", "majority", "translation")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="output directory")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="which parts to run")
    p.add_argument("--train-sentences", type=int, default=20_000, help="training sentences")
    p.add_argument("--steps", type=positive_int, default=3000, help="training steps per model")
    p.add_argument("--batch-size", type=int, default=128, help="sentences per training step")
    p.add_argument("--layers", type=int, default=2, help="transformer layers")
    p.add_argument("--dim", type=int, default=64, help="model width")
    p.add_argument("--rationalize", type=int, default=50,
                   help="test sentences whose label is rationalized")
    p.add_argument("--skip-standard", action="store_true",
                   help="train only the compatible model")
    p.add_argument("--bits", type=int, default=17, help="bits per sentence (odd)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed for data, training, dropout")
    return p.parse_args(argv)


def write_data(out: Path, args: argparse.Namespace) -> Path:
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    splits = {"train": args.train_sentences, "valid": 1000, "test": max(args.rationalize, 1)}
    for split, n in splits.items():
        lines = majority_class_sentences(n, args.bits, gen)
        (data / f"{split}.txt").write_text("\n".join(lines) + "\n")
    tokenizer = build_word_level_tokenizer(["0 1 ="])
    tokenizer.save_pretrained(str(out / "tokenizer"))
    return data


def train(out: Path, data: Path, args: argparse.Namespace, mixture: float) -> dict:
    name = "compatible" if mixture > 0 else "standard"
    block = args.bits + 3  # bits, "=", label, "</s>": one sentence per block
    argv = [
        "--model_type", "gpt2",
        "--config_overrides",
        f"n_layer={args.layers},n_embd={args.dim},n_head=2,n_positions={block},"
        "resid_pdrop=0,embd_pdrop=0,attn_pdrop=0",
        "--tokenizer_name", str(out / "tokenizer"),
        "--train_file", str(data / "train.txt"), "--validation_file", str(data / "valid.txt"),
        "--block_size", str(block),
        "--word_dropout_mixture", str(mixture), "--word_dropout_type", "uniform_length",
        "--do_train", "--do_eval", "--max_steps", str(args.steps),
        "--per_device_train_batch_size", str(args.batch_size),
        "--per_device_eval_batch_size", "256",
        "--learning_rate", str(args.learning_rate), "--lr_scheduler_type", "cosine",
        "--warmup_steps", "100",
        "--weight_decay", "0.01", "--logging_steps", "500", "--save_strategy", "no",
        "--report_to", "tensorboard", "--logging_dir", str(out / "tensorboard" / name),
        "--seed", str(args.seed), "--output_dir", str(out / name),
        "--disable_tqdm", "true",
    ]
    start = time.perf_counter()
    metrics = run_clm.main(argv)
    metrics["train_seconds"] = time.perf_counter() - start
    return metrics


def rationalize_labels(out: Path, data: Path, name: str, n: int, bits: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out / name).eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "tokenizer")
    sentences = (data / "test.txt").read_text().split("\n")[:n]
    logs, precisions, sizes, correct = [], [], [], 0
    for sentence in sentences:
        ids = torch.tensor(tokenizer(sentence)["input_ids"])
        log = rationalize_tokens(model, tokenizer, ids, start_step=bits)  # label: bits + 1
        rationales = log["all_rationales"]
        logs.append(log)
        label = sentence.split()[-1]
        entry = log["rationalization"][0]
        correct += entry["reached_argmax"]
        seen = [log["input_text"][p] for p in rationales[0] if p < bits]
        sizes.append(len(rationales[0]))
        if seen:
            precisions.append(sum(b == label for b in seen) / len(seen))
    write_jsonl(logs, out / f"{name}_label_rationales.jsonl")
    adapter = HuggingFaceCausalLM(model)
    sequences = [torch.tensor(tokenizer(s)["input_ids"]) for s in sentences]
    model_p, true_p = majority_class_calibration(
        adapter, sequences, bits, tokenizer.convert_tokens_to_ids("1"),
        generator=torch.Generator().manual_seed(0))
    return {
        "calibration_mae": sum(abs(m - t) for m, t in zip(model_p, true_p)) / len(model_p),
        "label_rationale_precision": sum(precisions) / max(len(precisions), 1),
        "label_rationale_mean_size": sum(sizes) / len(sizes),
        "label_reached_argmax": correct / len(sentences),
    }


def show_label_rationales(out: Path, name: str, count: int = 4) -> None:
    """Print the label rationales of the first test sentences, rationale tokens bracketed."""
    logs = list(read_jsonl(out / f"{name}_label_rationales.jsonl"))[:count]
    print(f"\n{name} model: rationale of the label (bracketed tokens suffice to predict it)")
    for log in logs:
        entry = log["rationalization"][0]
        print("  " + highlight_rationale(log["input_text"], entry["rationale"],
                                         entry["target_position"]))


def run_hf(args: argparse.Namespace, out: Path) -> dict:
    start = time.perf_counter()
    data = write_data(out, args)
    print(f"[1/3] Majority Class data and tokenizer written to {data}")
    summary: dict = {}
    names = [("compatible", 1.0)] + ([] if args.skip_standard else [("standard", 0.0)])
    for name, mixture in names:
        print(f"[2/3] training the {name} model (word dropout mixture {mixture}) ...")
        metrics = train(out, data, args, mixture)
        summary[name] = {"perplexity": metrics.get("perplexity"),
                         "train_seconds": round(metrics["train_seconds"], 1)}
    print("[3/3] rationalizing the labels of test sentences ...")
    for name, _ in names:
        summary[name].update(rationalize_labels(out, data, name, args.rationalize, args.bits))
    for name, _ in names:
        show_label_rationales(out, name)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\nSummary. ppl: perplexity (floor about 1.8). MAE: mean |p_model - p_true| of the "
          "label\nfrom a random half of the bits (compatibility: lower is better). precision: "
          "share of\nrationale bits equal to the label; size: tokens in the label's rationale "
          "(a calibrated\nmodel needs '=' and at most one bit).")
    print(f"{'model':<11} {'ppl':>6} {'MAE':>6} {'precision':>9} {'size':>5} {'train s':>8}")
    for name, _ in names:
        s = summary[name]
        print(f"{name:<11} {s['perplexity']:>6.3f} {s['calibration_mae']:>6.3f} "
              f"{s['label_rationale_precision']:>9.3f} {s['label_rationale_mean_size']:>5.2f} "
              f"{s['train_seconds']:>8.1f}")
    print(f"\nLogs and summary in {out}/ (total {summary['seconds']:.0f}s)")
    return summary


def run_translation(out: Path, seed: int) -> dict:
    from sequential_rationales_experiments.commands import (
        plot_iwslt_rationalization,
        run_translation_benchmark,
    )

    summary = run_translation_benchmark.main(["--out", str(out), "--quick",
                                              "--seed", str(seed)])
    example = out / "rationales" / "alignments" / "greedy" / "0.json"
    summary["figure6"] = str(plot_iwslt_rationalization.main(
        ["--log", str(example), "--out", str(out / "figure6_rationale_grid")]))
    return summary


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = Path(args.out)
    start = time.perf_counter()
    summary: dict = {}
    if "hf" in args.parts:
        print("=== Hugging Face: compatible GPT-2 on Majority Class ===")
        summary["hf"] = run_hf(args, out / "hf")
    if "majority" in args.parts:
        from sequential_rationales_experiments.commands import run_majority_class

        print("\n=== fairseq: Majority Class (quick) ===")
        summary["majority"] = run_majority_class.main(
            ["--out", str(out / "majority_class"), "--quick", "--seed", str(args.seed + 1)])
    if "translation" in args.parts:
        print("\n=== fairseq: gold-rationale translation benchmark (quick) ===")
        summary["translation"] = run_translation(out / "translation", args.seed + 1)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"\nDemo finished in {summary['seconds']:.0f}s; summaries in {out}/")
    return summary
