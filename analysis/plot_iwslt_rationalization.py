"""Figure 6: the greedy rationale of every target token of one translation, as a grid.

Rows are the target tokens being predicted; columns are the source tokens (left) and the
target tokens (right). A cell is filled when that context token is in the row's rationale,
darker for tokens added earlier. Reads one log of ``fairseq/rationalize_iwslt.py`` (or of
``rationalize_conditional_model``); writes PNG and PDF.

    python analysis/plot_iwslt_rationalization.py \
        --log rationalization_results/iwslt/alignments/greedy/0.json --out figure6
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.plot_iwslt_rationalization import main

if __name__ == "__main__":
    run_program(main)
