"""LoRA compatibility fine-tuning on Majority Class: does word dropout through low-rank adapters
make a model compatible, as full fine-tuning does?

A tiny Llama is trained from scratch without word dropout (the "standard" base), then
fine-tuned from it for the same number of steps in three ways: every weight with word dropout,
LoRA adapters with word dropout, and LoRA adapters without it (the control). Compatibility is
the calibration of the label on partial inputs (the paper's Figure 3 as one number: the mean
|p_model - p_true| of p(label = 1) when each bit is kept with probability 1/2); lower is better.
Everything runs on CPU through ``huggingface/run_clm.py``; the adapters are rationalized from
their folders like any model. Example::

    python scripts/lora_compatibility.py --out outputs/lora
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import sequential_rationales as sr
from sequential_rationales_experiments.cli import ProgramParser, positive_int
from sequential_rationales_experiments.commands import run_clm
from sequential_rationales_experiments.commands.demo import write_data
from sequential_rationales_experiments.majority_class import majority_class_calibration

RUNS = (  # name, word-dropout mixture, LoRA
    ("full + word dropout", 0.5, False),
    ("LoRA + word dropout", 0.5, True),
    ("LoRA, no word dropout", 0.0, True),
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/lora_compatibility", help="output folder")
    p.add_argument("--bits", type=positive_int, default=9, help="bits per sentence (odd)")
    p.add_argument("--train-sentences", type=positive_int, default=20_000,
                   help="training sentences")
    p.add_argument("--rationalize", type=positive_int, default=200,
                   help="test sentences scored for calibration")
    p.add_argument("--base-steps", type=positive_int, default=1500,
                   help="training steps of the standard base model")
    p.add_argument("--steps", type=positive_int, default=600,
                   help="fine-tuning steps of each run")
    p.add_argument("--batch-size", type=positive_int, default=64, help="sentences per step")
    p.add_argument("--dim", type=positive_int, default=64, help="model width")
    p.add_argument("--layers", type=positive_int, default=2, help="transformer layers")
    p.add_argument("--lora-r", type=positive_int, default=8, help="LoRA rank")
    p.add_argument("--lora-target-modules", nargs="+", default=["all-linear"],
                   help="modules with adapters ('all-linear', or names such as q_proj v_proj)")
    p.add_argument("--learning-rate", type=float, default=2e-3, help="base model learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of data and training")
    args = p.parse_args(argv)
    if args.bits % 2 == 0:
        p.error(f"--bits must be odd (so a majority exists), got {args.bits}")
    return args


def _train(out: Path, name: str, argv: list[str], args: argparse.Namespace, steps: int,
           learning_rate: float) -> float:
    block = args.bits + 3  # bits, "=", label, "</s>": one sentence per block
    data = out / "data"
    start = time.perf_counter()
    run_clm.main([
        *argv, "--train_file", str(data / "train.txt"), "--block_size", str(block),
        "--do_train", "--max_steps", str(steps), "--per_device_train_batch_size",
        str(args.batch_size), "--learning_rate", str(learning_rate),
        "--lr_scheduler_type", "cosine", "--warmup_steps", str(min(100, steps // 10)),
        "--logging_steps", str(max(steps // 4, 1)), "--save_strategy", "no",
        "--report_to", "none", "--seed", str(args.seed), "--use_cpu",
        "--output_dir", str(out / name), "--disable_tqdm", "true", "--log_level", "warning"])
    return time.perf_counter() - start


def calibration(folder: Path, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Mean |p_model - p_true| on partial inputs, full-context accuracy of the label, and the
    mean size of the label's greedy rationale."""
    rationalizer = sr.load(folder, tokenizer=out / "tokenizer", device="cpu")
    model, tokenizer = rationalizer.text_model.model, rationalizer.text_model.tokenizer
    sentences = (out / "data" / "test.txt").read_text().split("\n")[:args.rationalize]
    sequences = [torch.tensor(tokenizer(s)["input_ids"]) for s in sentences if s]
    model_p, true_p = majority_class_calibration(
        rationalizer.text_model.adapter, sequences, args.bits,
        tokenizer.convert_tokens_to_ids("1"), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(torch.stack(sequences)).logits[:, args.bits]  # the prediction at "="
    labels = torch.stack(sequences)[:, args.bits + 1]
    rationales = rationalizer.rationalize([s for s in sentences[:20] if s],
                                          start_step=args.bits, progress=False)
    sizes = [len(r["rationalization"][0]["rationale"]) for r in rationales]
    return {"calibration_mae": sum(abs(m - t) for m, t in zip(model_p, true_p, strict=True))
            / len(model_p),
            "accuracy": float((logits.argmax(-1) == labels).float().mean()),
            "label_rationale_size": sum(sizes) / len(sizes)}


def trainable_parameters(folder: Path) -> int:
    """Weights a run trained: its adapter's, else the whole model's."""
    from safetensors import safe_open

    files = list(folder.glob("adapter_model.safetensors")) or list(folder.glob("*.safetensors"))
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(k).get_shape()) for k in weights.keys())  # noqa: SIM118
    return total


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    started = time.perf_counter()
    data_args = argparse.Namespace(seed=args.seed, train_sentences=args.train_sentences,
                                   rationalize=args.rationalize, bits=args.bits)
    write_data(out, data_args)
    block = args.bits + 3
    overrides = (f"num_hidden_layers={args.layers},hidden_size={args.dim},"
                 f"intermediate_size={2 * args.dim},num_attention_heads=2,"
                 f"num_key_value_heads=2,head_dim={args.dim // 2},"
                 f"max_position_embeddings={block}")
    print(f"[1/3] the standard base: a {args.layers}-layer Llama, {args.base_steps} steps")
    seconds = {"standard base": _train(
        out, "base", ["--model_type", "llama", "--config_overrides", overrides,
                      "--tokenizer_name", str(out / "tokenizer")],
        args, args.base_steps, args.learning_rate)}
    folders = {"standard base": out / "base"}
    print(f"[2/3] three fine-tunes of {args.steps} steps from it")
    for index, (name, mixture, lora) in enumerate(RUNS):
        folder = f"run{index}"
        argv = ["--model_name_or_path", str(out / "base"),
                "--word_dropout_mixture", str(mixture)]
        if lora:
            argv += ["--use_peft", "--lora_r", str(args.lora_r), "--lora_alpha",
                     str(2 * args.lora_r), "--lora_dropout", "0",
                     "--lora_target_modules", *args.lora_target_modules]
        # LoRA's adapters start at zero and learn at a higher rate than full fine-tuning.
        rate = args.learning_rate * (5 if lora else 0.5)
        seconds[name] = _train(out, folder, argv, args, args.steps, rate)
        folders[name] = out / folder
    print("[3/3] calibration on partial inputs")
    rows = {}
    for name, folder in folders.items():
        rows[name] = {**calibration(folder, out, args),
                      "trained_parameters": trainable_parameters(folder),
                      "train_seconds": round(seconds[name], 1)}
    summary = {"rows": rows, "seconds": round(time.perf_counter() - started, 1),
               "settings": {k: v for k, v in vars(args).items() if k != "verbose"}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\n{'model':<24} {'MAE':>6} {'acc':>6} {'rationale':>9} {'params':>8} {'train s':>8}")
    for name, row in rows.items():
        print(f"{name:<24} {row['calibration_mae']:>6.3f} {row['accuracy']:>6.3f} "
              f"{row['label_rationale_size']:>9.2f} {row['trained_parameters']:>8,} "
              f"{row['train_seconds']:>8.1f}")
    print("MAE: mean |p_model - p_true| of the label from half the bits (lower: more "
          "compatible); acc: full-context label accuracy; rationale: tokens in the label's "
          f"greedy rationale; params: weights trained. Summary in {out / 'summary.json'}")
    return summary
