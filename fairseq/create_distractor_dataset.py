"""Build the distractor test set of the paper's Table 3 (IWSLT14, Section 8.2).

Each example is concatenated with another test example on both sides: the BPE'd German
source and the model's own (BPE'd, beam-1) English translation. Writes to ``--out-dir``:

* ``distractors.de`` / ``distractors.en`` — one concatenated example per line, the
  ``--testpref`` of ``fairseq-preprocess``;
* ``breaks.de`` / ``breaks.en`` — per line, the number of tokens of the first sentence
  (as the original ``create_distractor_iwslt_dataset.py`` writes them);
* ``distractors.jsonl`` — per line ``{"index", "first_index", "second_index",
  "source_break", "target_break"}`` (indices into the input files, 0-based).

Defaults reproduce the original protocol: 500 pairs of 1,000 distinct sentences drawn with
``numpy.random.RandomState(0)``; ``--num-pairs all`` instead pairs every example with a random
other one. Example::

    python fairseq/create_distractor_dataset.py \\
        --source data/iwslt14.tokenized.de-en/test.de \\
        --translations generated_translations/compatible_iwslt_tmp.txt \\
        --translations-format fairseq-generate --out-dir generated_translations
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.create_distractor_dataset import main

if __name__ == "__main__":
    run_program(main)
