"""Figure 1: a sequence with every token's greedy rationale, drawn as a grid.

Row ``t`` is the rationale of the token at position ``t``: the cells of its rationale's
context positions are filled (one row highlighted with ``--highlight``). The rationales come
either from a ``rationalize_lm`` log (``--log``: a JSON file, or a JSON-lines file with
``--index``), or from running greedy rationalization on ``--prompt`` with a model
(``--checkpoint_dir`` / ``--model_name_or_path``). Writes PNG and PDF.

    python analysis/plot_gpt2_rationalization.py --checkpoint_dir $CHECKPOINT_DIR
    python analysis/plot_gpt2_rationalization.py --log rationales.jsonl --index 3
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.plot_gpt2_rationalization import main

if __name__ == "__main__":
    run_program(main)
