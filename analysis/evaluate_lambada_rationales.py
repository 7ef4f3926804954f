"""Table 2: evaluate the Lambada rationales written by
``huggingface/rationalize_annotated_lambada.py`` against the human rationales.

Reads ``<results_dir>/<method>/<row>.json``. The rationale of the last word is the union of
its pieces' rationales, positions after the first piece ignored. Per method:

- **Length**: mean size of the word rationale;
- **IOU**: mean per-passage |R ∩ H| / |R ∪ H| with the human token set H;
- **F1**: F1 of per-token indicators (is context token i in R? in H?) over the tokens before
  the last word, pooled across passages.

Methods are compared on the same passages: with ``--baseline METHOD`` (the seed's interface)
the rows are that baseline and greedy; with ``--all`` (the default when no baseline is named)
every method found. Writes the table as CSV and JSON (``--out``).

    python analysis/evaluate_lambada_rationales.py --baseline gradient_norm
    python analysis/evaluate_lambada_rationales.py --all
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_lambada_rationales import main

if __name__ == "__main__":
    run_program(main)
