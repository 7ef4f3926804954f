"""Training speed with and without word dropout, through the real ``fairseq-train``.

Trains, in one run and on the same synthetic data:

* the Majority Class LM (``transformer_lm_majority_class``) with ``--word-dropout-mixture 0``
  and ``1.0`` (``uniform_length``, the paper's setting);
* a small ``compatible_transformer`` on a synthetic translation task with mixture ``0`` and
  mixture ``1.0`` ``inverse_length``, once per-head (the paper's default) and once
  ``--word-dropout-per-example``;

and prints fairseq's own training throughput (``wps``: target tokens per second, measured over
the training steps only) and its ratio to the configuration without word dropout. Mixture 1.0
makes every batch pay the masking cost (the worst case); at 0.5 half of them do.

Example::

    python scripts/benchmark_fairseq_word_dropout.py --updates 200
    python scripts/benchmark_fairseq_word_dropout.py --updates 300 --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "fairseq/sequential_rationales_plugin"  # relative to ROOT (the cwd of every run)

LM_CONFIGS = {
    "lm mixture 0": ["--word-dropout-mixture", "0"],
    "lm mixture 1.0 uniform_length": ["--word-dropout-mixture", "1.0", "--word-dropout-type",
                                      "uniform_length"],
}
MT_CONFIGS = {
    "mt mixture 0": ["--word-dropout-mixture", "0"],
    "mt mixture 1.0 inverse_length per-head": ["--word-dropout-mixture", "1.0",
                                               "--word-dropout-type", "inverse_length"],
    "mt mixture 1.0 inverse_length per-example": ["--word-dropout-mixture", "1.0",
                                                  "--word-dropout-type", "inverse_length",
                                                  "--word-dropout-per-example"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--updates", type=int, default=200, help="training updates per configuration")
    p.add_argument("--max-tokens", type=int, default=2048, help="fairseq --max-tokens per batch")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cpu passes --cpu to fairseq-train; cuda uses fairseq's default GPU")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per configuration, interleaved; the best wps is reported")
    p.add_argument("--only", choices=["lm", "mt", "both"], default="both",
                   help="which model family to benchmark")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--seed", type=int, default=1, help="data and training seed")
    args = p.parse_args(argv)
    for name in ("updates", "max_tokens", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _run(module: str, *args: object) -> str:
    """``python -m fairseq_cli.<module>`` from the repository root; returns its log."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", f"fairseq_cli.{module}", *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fairseq_cli.{module} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout + proc.stderr


def _lines_needed(updates: int, max_tokens: int, tokens_per_line: int) -> int:
    # One epoch must hold every update, so fairseq's epoch average covers exactly them.
    return int(1.3 * updates * max_tokens / tokens_per_line) + 100


def write_majority_class(directory: Path, lines: int, seed: int) -> None:
    import torch

    from sequential_rationales.data import majority_class_sentences

    generator = torch.Generator().manual_seed(seed)
    directory.mkdir(parents=True)
    for split, n in (("train", lines), ("valid", 100)):
        text = "\n".join(majority_class_sentences(n, generator=generator)) + "\n"
        (directory / f"{split}.tok").write_text(text)


def write_translation(directory: Path, lines: int, seed: int) -> None:
    """Source words ``s0..s99``, 8-24 per line; the target is the reversed lexicon mapping."""
    rng = random.Random(seed)
    directory.mkdir(parents=True)
    for split, n in (("train", lines), ("valid", 100)):
        sources, targets = [], []
        for _ in range(n):
            words = [rng.randrange(100) for _ in range(rng.randint(8, 24))]
            sources.append(" ".join(f"s{w}" for w in words))
            targets.append(" ".join(f"t{w}" for w in reversed(words)))
        (directory / f"{split}.src").write_text("\n".join(sources) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(targets) + "\n")


def words_per_second(log: str) -> float:
    """fairseq's epoch-average training throughput (the last ``train | epoch`` line)."""
    found = re.findall(r"\| train \| epoch \d+ \|.*?\| wps ([\d.]+)", log)
    if not found:
        raise RuntimeError(f"no 'train | epoch ... | wps' line in the fairseq log:\n{log[-2000:]}")
    return float(found[-1])


def benchmark(args: argparse.Namespace) -> dict[str, float]:
    common = ["--user-dir", PLUGIN, "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)",
              "--lr", "0.0005", "--max-tokens", args.max_tokens, "--max-update", args.updates,
              "--seed", args.seed, "--no-save", "--disable-validation", "--no-progress-bar",
              "--log-interval", "1000000", "--num-workers", "0"]
    if args.device == "cpu":
        common.append("--cpu")
    runs: dict[str, list[str]] = {}
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="benchmark_word_dropout_") as tmp:
        tmp_path = Path(tmp)
        if args.only in ("lm", "both"):
            write_majority_class(tmp_path / "lm", _lines_needed(args.updates, args.max_tokens,
                                                                20), args.seed)
            _run("preprocess", "--only-source", "--trainpref", tmp_path / "lm/train.tok",
                 "--validpref", tmp_path / "lm/valid.tok", "--destdir", tmp_path / "lm-bin",
                 "--workers", "2")
            lm = [tmp_path / "lm-bin", "--task", "language_modeling", "--arch",
                  "transformer_lm_majority_class", "--tokens-per-sample", "512",
                  "--sample-break-mode", "eos", *common]
            runs.update({name: lm + flags for name, flags in LM_CONFIGS.items()})
        if args.only in ("mt", "both"):
            write_translation(tmp_path / "mt", _lines_needed(args.updates, args.max_tokens, 17),
                              args.seed)
            _run("preprocess", "--source-lang", "src", "--target-lang", "tgt", "--trainpref",
                 tmp_path / "mt/train", "--validpref", tmp_path / "mt/valid", "--destdir",
                 tmp_path / "mt-bin", "--workers", "2")
            mt = [tmp_path / "mt-bin", "--arch", "compatible_transformer", "--encoder-layers",
                  "3", "--decoder-layers", "3", "--encoder-embed-dim", "128",
                  "--decoder-embed-dim", "128", "--encoder-ffn-embed-dim", "512",
                  "--decoder-ffn-embed-dim", "512", "--encoder-attention-heads", "4",
                  "--decoder-attention-heads", "4", *common]
            runs.update({name: mt + flags for name, flags in MT_CONFIGS.items()})
        for _ in range(args.repeats):  # interleaved, so slow drifts hit every configuration
            for name, command in runs.items():
                wps = words_per_second(_run("train", *command))
                results[name] = max(results.get(name, 0.0), wps)
                print(f"  {name:<45} {wps:>10.0f} tokens/s", flush=True)
    return results


def report(results: dict[str, float]) -> list[dict[str, object]]:
    rows = []
    for name, wps in results.items():
        baseline = results.get(f"{name[:2]} mixture 0")
        rows.append({"configuration": name, "tokens_per_second": round(wps, 1),
                     "ratio_to_mixture_0": round(wps / baseline, 3) if baseline else None})
    print(f"\n{'configuration':<45} {'tokens/s':>10} {'ratio':>7}")
    for row in rows:
        ratio = row["ratio_to_mixture_0"]
        print(f"{row['configuration']:<45} {row['tokens_per_second']:>10.0f} "
              f"{'' if ratio is None else f'{ratio:.3f}':>7}")
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    args = parse_args(argv)
    print(f"fairseq-train, {args.updates} updates per configuration, --max-tokens "
          f"{args.max_tokens}, device {args.device}", flush=True)
    rows = report(benchmark(args))
    if args.json is not None:
        args.json.write_text(json.dumps({"settings": {k: str(v) for k, v in vars(args).items()},
                                         "results": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
