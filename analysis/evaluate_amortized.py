"""The learned rationale extractor against greedy search and the baselines on Majority Class
(17 bits, and 81 bits for long contexts): agreement with greedy, rationale length, the argmax
condition, label bits, time and forward tokens per target, and a figure of speed against
agreement.

    python analysis/evaluate_amortized.py --quick --out outputs/amortized
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_amortized import main

if __name__ == "__main__":
    run_program(main)
