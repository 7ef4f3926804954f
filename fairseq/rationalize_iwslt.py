"""Rationalize every target token of a binarized translation test set, one JSON log per example.

As in the original project::

    python fairseq/rationalize_iwslt.py --checkpoint_dir $CHECKPOINT_DIR \
        --task distractors --method greedy

reads ``data-bin/iwslt14_distractors.tokenized.de-en`` (``--task alignments``:
``data-bin/iwslt14_alignments.tokenized.de-en``) and the compatible model
``$CHECKPOINT_DIR/compatible_iwslt/checkpoint_best.pt``, and writes
``rationalization_results/iwslt/<task>/<method>[_top_1]/<index>.json``. ``--data``,
``--checkpoint_file`` and ``--out`` point it at any other binarized data, model and folder.
Examples whose log already exists are skipped, so an interrupted run resumes where it stopped.
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.rationalize_iwslt import main

if __name__ == "__main__":
    run_program(main)
