"""Rationalization speed: this package against the paper's own algorithm, on the same inputs.

"paper" is the algorithm of the paper's code, written plainly in
``sequential_rationales_experiments.commands.benchmark_rationalization``; "ours" is
``sequential_rationales.rationalize``. ``--help`` describes both algorithms, the inputs and
every column.

    python scripts/benchmark_rationalization.py                      # CPU, 2 threads
    python scripts/benchmark_rationalization.py --device cuda --json gpu.json
    python scripts/benchmark_rationalization.py --quick              # smoke run, seconds
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.benchmark_rationalization import main

if __name__ == "__main__":
    run_program(main)
