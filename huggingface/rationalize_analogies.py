"""Rationalize templated analogies with a causal LM (the paper's Table 1).

Word pairs come from Mikolov et al. (2013) (``questions-words.txt``: ``: category`` headers,
then ``a b c d`` lines, i.e. the pairs ``(a, b)`` and ``(c, d)``); the unique pairs of each
category, in first-seen order, whose two words are single tokens (``" " + word``) are placed
into the category's template (``analogy_templates.json``: ``[A]``/``[B]`` placeholders and a
parenthetical distractor clause). The placeholder that ends the template is the target word,
the other one its antecedent. An example is rationalized only if the model predicts the
target (argmax of the last token) both with and without the distractor clause (``--no_filter``
turns this off), and only the last token is rationalized (``start_step = len - 2``).

One JSON file per example, ``<category_index>_<pair_index>.json`` in ``--out``: the
rationalization log (``sequential_rationales.results.lm_log``) plus ``antecedent_positions``,
``distractor_positions`` (token positions), the seed's ``antecedent_index``,
``distractor_start``/``distractor_end`` (inclusive), ``checked_correct`` (whether the
correctness filter was applied), the words and the text. Existing files are skipped, so an
interrupted run resumes where it stopped (delete files to recompute them).

``--method exhaustive`` searches a random third of the examples, as the paper's code did
(``--exhaustive_fraction``); an exhaustive result that found no sufficient subset within
``--max_steps`` is written with ``reached_argmax: false`` and left out of the Ratio.

    python huggingface/rationalize_analogies.py --checkpoint_dir $CHECKPOINT_DIR --method greedy
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.rationalize_analogies import main

if __name__ == "__main__":
    run_program(main)
