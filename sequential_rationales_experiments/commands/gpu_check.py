"""The GPU check (``make gpu-check``): on a machine with CUDA, the tests marked ``cuda`` (greedy
on GPT-2 and Llama equal to the CPU's in float32, bfloat16 runs, the fused flex word-dropout
kernel against the dense mask forward and backward, a real out-of-memory survived, a sharded
run), then the speed benchmark's CUDA configurations, shrunk to fit the time a lent GPU allows
(about 5 minutes on one H100), and one table of both.

    python scripts/gpu_check.py --out outputs/gpu-check
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import torch

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.cli import ProgramParser, positive_int

ROOT = Path(__file__).resolve().parents[2]
BENCHMARK_CONFIGS = ("gpt2-small-100", "ig-gpt2-small-40", "exhaustive-gpt2-small-40")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="outputs/gpu-check",
                   help="folder for the test report (cuda-tests.xml) and benchmark.json")
    p.add_argument("--configs", nargs="+", default=list(BENCHMARK_CONFIGS),
                   help="benchmark configurations (scripts/benchmark_rationalization.py "
                        "--help lists them)")
    p.add_argument("--sequences", type=positive_int, default=2,
                   help="generated sequences per benchmark configuration")
    p.add_argument("--skip-benchmark", action="store_true", help="run the tests only")
    p.add_argument("--test-timeout", type=positive_int, default=360, metavar="SECONDS",
                   help="stop the tests after this long")
    return p.parse_args(argv)


def run_tests(out: Path, timeout: int) -> list[dict[str, Any]]:
    """``pytest -m cuda``; one row per test: name, outcome, seconds, message."""
    report = out / "cuda-tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider",
               f"--junitxml={report}", str(ROOT / "tests")]
    try:
        done = subprocess.run(command, cwd=ROOT, timeout=timeout, capture_output=True,
                              text=True)
    except subprocess.TimeoutExpired:
        return [{"name": "pytest -m cuda", "outcome": "timeout", "seconds": float(timeout),
                 "message": f"stopped after {timeout} s"}]
    if not report.is_file():
        return [{"name": "pytest -m cuda", "outcome": "error", "seconds": 0.0,
                 "message": (done.stderr or done.stdout).strip().splitlines()[-1:]}]
    return test_rows(report)


def test_rows(report: Path) -> list[dict[str, Any]]:
    """The test cases of a JUnit XML report."""
    rows = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            found = case.find(tag)
            if found is not None:
                outcome = {"failure": "FAILED", "error": "ERROR"}.get(tag, tag)
                message = (found.get("message") or "").split("\n")[0][:90]
                break
        rows.append({"name": f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}",
                     "outcome": outcome, "seconds": float(case.get("time") or 0.0),
                     "message": message})
    return rows


def table(tests: list[dict[str, Any]], benchmark: list[dict[str, Any]], device: str,
          seconds: float) -> str:
    lines = [f"GPU check on {device} (torch {torch.__version__}), {seconds:.0f} s", "",
             f"{'test':<72} {'outcome':>8} {'s':>6}"]
    for row in tests:
        lines.append(f"{row['name'][:72]:<72} {row['outcome']:>8} {row['seconds']:>6.1f}"
                     + (f"  {row['message']}" if row["message"] else ""))
    if benchmark:
        lines += ["", f"{'benchmark':<26} {'dtype':<9} {'targets':>7} {'paper s':>8} "
                      f"{'ours s':>7} {'ratio':>6} {'identical':>10}"]
        for row in benchmark:
            lines.append(f"{row['config']:<26} {row['dtype']:<9} {row['targets']:>7} "
                         f"{row['paper_s']:>8.1f} {row['ours_s']:>7.1f} {row['ratio']:>6.2f} "
                         f"{row['identical_of']:>10}")
    passed = sum(row["outcome"] == "passed" for row in tests)
    lines += ["", f"{passed}/{len(tests)} tests passed"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if not torch.cuda.is_available():
        raise InputError("the GPU check needs a CUDA device; this machine has none (the "
                         "CUDA tests are skipped in make test)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tests = run_tests(out, args.test_timeout)
    benchmark: list[dict[str, Any]] = []
    if not args.skip_benchmark:
        from sequential_rationales_experiments.commands import benchmark_rationalization

        benchmark = benchmark_rationalization.main([
            "--device", "cuda", "--configs", *args.configs, "--sequences",
            str(args.sequences), "--precision", "fp32", "bf16-exact", "bf16",
            "--json", str(out / "benchmark.json")])
    text = table(tests, benchmark, torch.cuda.get_device_name(),
                 time.perf_counter() - started)
    (out / "gpu-check.txt").write_text(text + "\n")
    print("\n" + text)
    return {"tests": tests, "benchmark": benchmark}
