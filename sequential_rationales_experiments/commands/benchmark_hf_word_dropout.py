"""Training-step time of Hugging Face causal LMs with and without word dropout.

The program behind ``scripts/benchmark_hf_word_dropout.py``; its user documentation is that
file's docstring.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM, default_data_collator

from sequential_rationales.word_dropout import WordDropout
from sequential_rationales_experiments.cli import ProgramParser
from sequential_rationales_experiments.timing import synchronize
from sequential_rationales_integrations.huggingface.word_dropout import (
    WordDropoutCollator,
    flex_attention_unavailable,
    num_attention_heads,
    use_word_dropout_flex,
)

# Config overrides per --model (model type, overrides); attention dropout is set to 0 below.
MODELS = {
    "gpt2-small": ("gpt2", "n_layer=12,n_embd=768,n_head=12,n_positions=1024,vocab_size=50257"),
    "gpt2-tiny": ("gpt2", "n_layer=2,n_embd=64,n_head=4,n_positions=1024,vocab_size=1000"),
    "llama-small": ("llama", "num_hidden_layers=12,hidden_size=768,num_attention_heads=12,"
                             "num_key_value_heads=4,intermediate_size=2048,"
                             "max_position_embeddings=2048,vocab_size=32000"),
    "llama-tiny": ("llama", "num_hidden_layers=2,hidden_size=64,num_attention_heads=4,"
                            "num_key_value_heads=2,intermediate_size=128,"
                            "max_position_embeddings=2048,vocab_size=1000"),
}
ATTENTION_DROPOUT = {"gpt2": "attn_pdrop", "llama": "attention_dropout"}
# name: (word-dropout type or None, per-head, attention mode)
CONFIGURATIONS = {
    "standard": (None, False, "mask"),
    "uniform_length mask": ("uniform_length", False, "mask"),
    "uniform_length flex": ("uniform_length", False, "flex"),
    "inverse_length per-head mask": ("inverse_length", True, "mask"),
    "inverse_length per-head flex": ("inverse_length", True, "flex"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="float32, or bfloat16 autocast over float32 weights")
    p.add_argument("--model", choices=sorted(MODELS), default="gpt2-tiny",
                   help="randomly initialized model (gpt2-small: GPT-2 small's config)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per batch")
    p.add_argument("--seq-len", type=int, default=1024, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=30, help="measured steps per configuration")
    p.add_argument("--warmup", type=int, default=5,
                   help="steps per configuration before measuring (flex compiles in the first)")
    p.add_argument("--seed", type=int, default=0, help="weights, data and word-dropout seed")
    args = p.parse_args(argv)
    for name in ("batch_size", "seq_len", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    problem = flex_attention_unavailable(args.device)
    if problem is not None:
        p.error(f"the flex configurations cannot run: {problem}")
    return args


def build_models(args: argparse.Namespace) -> dict[str, torch.nn.Module]:
    model_type, overrides = MODELS[args.model]
    config = AutoConfig.for_model(model_type)
    config.update_from_string(f"{overrides},{ATTENTION_DROPOUT[model_type]}=0.0")
    if args.seq_len > config.max_position_embeddings:
        raise SystemExit(f"--seq-len {args.seq_len} exceeds {args.model}'s "
                         f"{config.max_position_embeddings} positions")
    torch.manual_seed(args.seed)
    base = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    base.loss_type = "ForCausalLM"  # GPT2LMHeadModel's class name names no loss type
    models = {}
    for name, (_, _, mode) in CONFIGURATIONS.items():
        model = copy.deepcopy(base)  # deep copy: its own config, so switching is local
        if mode == "flex":
            use_word_dropout_flex(model)
        models[name] = model.to(args.device).train()
    return models


def build_collators(args: argparse.Namespace, heads: int) -> dict[str, WordDropoutCollator]:
    collators = {}
    for name, (kind, per_head, mode) in CONFIGURATIONS.items():
        if kind is None:
            collators[name] = default_data_collator
        else:
            # Same seed for both modes of a type: identical keep masks.
            collators[name] = WordDropoutCollator(
                default_data_collator, WordDropout(1.0, kind, per_head),
                heads if per_head else 1, seed=args.seed, attention=mode)
    return collators


def train_step(model, optimizer, collator, examples, args) -> tuple[float, float]:
    """One training step; returns (seconds, loss)."""
    synchronize(args.device)
    start = time.perf_counter()
    batch = {k: v.to(args.device, non_blocking=True) for k, v in collator(examples).items()}
    autocast = (torch.autocast(args.device, dtype=torch.bfloat16)
                if args.dtype == "bfloat16" else contextlib.nullcontext())
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    synchronize(args.device)
    return time.perf_counter() - start, loss.item()


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    models = build_models(args)
    heads = num_attention_heads(models["standard"].config)
    vocab = models["standard"].config.vocab_size
    collators = build_collators(args, heads)
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    names = list(CONFIGURATIONS)
    times: dict[str, list[float]] = {name: [] for name in names}
    first_loss: dict[str, float] = {}
    data = torch.Generator().manual_seed(args.seed)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"{args.model} on {device_name}, {args.dtype}, batch {args.batch_size} x "
          f"{args.seq_len} tokens, {args.warmup} warm-up + {args.steps} measured steps, "
          f"torch {torch.__version__}", flush=True)
    for step in range(args.warmup + args.steps):
        ids = torch.randint(vocab, (args.batch_size, args.seq_len), generator=data)
        examples = [{"input_ids": row, "labels": row} for row in ids]
        shift = step % len(names)
        for name in names[shift:] + names[:shift]:
            torch.manual_seed(args.seed + step)  # same hidden-state dropout for every model
            seconds, loss = train_step(models[name], optimizers[name], collators[name],
                                       examples, args)
            first_loss.setdefault(name, loss)
            if step >= args.warmup:
                times[name].append(seconds)

    standard = statistics.median(times["standard"])
    print(f"\n{'configuration':<30} {'ms/step':>9} {'x standard':>11} {'first loss':>11}")
    ratios = {}
    for name in names:
        median = statistics.median(times[name])
        ratios[name] = median / standard
        print(f"{name:<30} {1000 * median:9.1f} {ratios[name]:11.3f} {first_loss[name]:11.4f}")
    # Same weights, batch and keep masks at step 1: each flex loss should match its mask loss.
    print("\nfirst-step loss, flex minus mask: " + ", ".join(
        f"{kind} {first_loss[f'{kind} flex'] - first_loss[f'{kind} mask']:+.2e}"
        for kind in ("uniform_length", "inverse_length per-head")))
    return ratios
