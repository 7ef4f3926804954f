"""The learned rationale extractor against greedy search and the other methods, on Majority
Class, the two synthetic translation tasks, long contexts (82 tokens) and a held-out setting
(longer contexts than the extractor was trained on): agreement with greedy, rationale length,
the argmax condition, faithfulness, the gold metrics, NRG, time and forward tokens per target,
and a figure of speed against agreement.

    python analysis/evaluate_amortized.py --quick --out outputs/amortized
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_amortized import main

if __name__ == "__main__":
    run_program(main)
