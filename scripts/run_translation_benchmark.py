"""The gold-rationale translation benchmark: Tables 3 and 4 on a task with known alignments.

IWSLT14 and the RWTH gold alignments cannot be downloaded here, so the paper's translation
experiments run on the synthetic German-like -> English-like task of
``sequential_rationales_experiments.synthetic_translation`` (reordering, one-to-many,
many-to-one with a long-distance particle, untranslated fillers; sure and possible links),
with the real fairseq CLIs and the project's plugin. Steps (a step is finished when its folder's
``step.done`` records the same settings; an interrupted training resumes from fairseq's
``checkpoint_last.pt``; ``--force`` redoes everything):

1. generate the corpus and the gold alignments of the test set;
2. ``fairseq-preprocess``; train the standard model (mixture 0), then fine-tune it for
   compatibility (mixture 0.5, ``inverse_length``), as the paper did;
3. BLEU of both on the test set (beam 5, sacrebleu);
4. distractors: translate the test set with the compatible model (beam 1), concatenate each
   example with a random other one, rationalize every target token with greedy search and the
   six baselines, and print Table 3;
5. alignments: rationalize the reference translations (with and without ``--top_1``) and
   print Table 4 against the gold links.

Writes ``OUT/summary.json`` with the BLEU scores and both tables.

    python scripts/run_translation_benchmark.py --out outputs/translation --quick
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.run_translation_benchmark import main

if __name__ == "__main__":
    run_program(main)
