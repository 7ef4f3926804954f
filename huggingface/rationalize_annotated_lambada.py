"""Rationalize the final word of the annotated Lambada passages (the paper's Table 2).

``annotated_lambada.json`` (JSON lines: ``lambadaIndex``, ``text``, ``rationale`` = list of
``[start, end)`` character spans) holds 107 passages with human rationales for their last
word. The last word (the text after the last whitespace) is the target: all of its sub-word
tokens are rationalized (``start_step`` is the position before its first piece). The human
spans are mapped to token positions with the tokenizer's character offsets (a token belongs
if it overlaps a span), so a fast tokenizer is required.

One JSON file per passage, ``<row>.json`` in ``--out`` (``row`` = line number in the file,
from 0): the rationalization log plus ``human_subword_rationale`` (human token positions),
``target_positions`` (the last word's tokens), ``lambada_index`` and the text. Existing files
are skipped, so an interrupted run resumes where it stopped.

    python huggingface/rationalize_annotated_lambada.py --checkpoint_dir $CHECKPOINT_DIR \
        --method greedy
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.rationalize_lambada import main

if __name__ == "__main__":
    run_program(main)
