"""Table 1: evaluate the analogy rationales written by ``huggingface/rationalize_analogies.py``.

Reads ``<results_dir>/<method>/*.json`` (one file per example) and prints, per method,

- **Length**: mean size of the last token's rationale;
- **Ratio**: mean of length / exhaustive length, over the examples that also have an
  exhaustive rationale which reached the argmax (``<results_dir>/exhaustive``);
- **Ante**: fraction of rationales containing the antecedent word's token;
- **No D**: fraction of rationales containing no token of the distractor clause.

Methods are compared on the same examples: with ``--baseline METHOD`` (the seed's interface)
the rows are that baseline and greedy, over the examples both have; with ``--all`` (the
default when no baseline is named) every method found, over the examples all of them have.
Writes the table as CSV and JSON (``--out``).

    python analysis/evaluate_analogies_rationales.py --baseline gradient_norm
    python analysis/evaluate_analogies_rationales.py --all
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_analogies_rationales import main

if __name__ == "__main__":
    run_program(main)
