"""One table of every rationalization method on the Majority Class language model and the
synthetic translation model(s): per model and method, the mean rationale length, faithfulness
(sufficiency, comprehensiveness and their AOPC), plausibility against the gold rationales
(Majority Class: the share of the label rationale's bits equal to the label, and whether the
rationale is as small as the exhaustive one; translation: AER, F1 and Top1 against the gold
sure/possible links) and the search time per target.

    python analysis/compare_methods.py --quick --out outputs/compare_methods \
        --translation-variant standard hard

runs the Majority Class and translation pipelines in quick mode first (resumable; finished
steps are skipped); or pass their folders: --majority-class DIR --translation DIR. Writes
OUT/comparison.{md,csv,json}; every (model, method, example) record is kept in OUT/results/,
so a killed run continues where it stopped. --methods picks methods (default: every registered
one; exhaustive search, limited to --exhaustive-max-steps, runs on Majority Class only).
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.compare_methods import main

if __name__ == "__main__":
    run_program(main)
