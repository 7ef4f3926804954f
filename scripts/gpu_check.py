"""The GPU check (also ``make gpu-check``): the CUDA tests, then the speed benchmark's CUDA
configurations, and one table of both. Needs a CUDA device; ``--help`` lists the options.

    python scripts/gpu_check.py --out outputs/gpu-check
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.gpu_check import main

if __name__ == "__main__":
    run_program(main)
