"""The main job, end to end on CPU with no downloads (``make demo``). Three parts:

``hf`` -- Hugging Face: generates Majority Class (17 random bits, ``=``, the majority bit) and
a word-level tokenizer; trains a small GPT-2 from scratch with ``huggingface/run_clm.py``, once
with word dropout (mixture 1.0, ``uniform_length``, the paper's setting) and, unless
``--skip-standard``, once without; measures calibration on partial inputs and greedily
rationalizes the label of test sentences. For a compatible model the minimal rationale of the
label is ``=`` plus at most one bit equal to the label.

``majority`` -- the paper's Majority Class experiment with the real fairseq CLIs
(``scripts/run_majority_class.py --quick``): perplexities, Figure 3, label rationales.

``translation`` -- the gold-rationale translation benchmark
(``scripts/run_translation_benchmark.py --quick``): BLEU, Tables 3 and 4, and a rendered
rationale grid of one translation (Figure 6).

Everything goes to ``--out`` (one folder per part, each with its ``summary.json``).

    python scripts/demo.py --out outputs/demo                  # all three parts
    python scripts/demo.py --out outputs/demo --parts hf       # the Hugging Face part only
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.demo import main

if __name__ == "__main__":
    run_program(main)
