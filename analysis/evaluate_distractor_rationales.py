"""Table 3: how many rationale tokens come from the distractor sentence?

Reads the logs of ``fairseq/rationalize_iwslt.py --task distractors`` (one JSON per example,
``<results_dir>/<method>/<index>.json``) and the break positions written by
``fairseq/create_distractor_dataset.py`` (``distractors.jsonl``). Each example is two
sentences concatenated on both sides; for a target token, the other sentence is the
distractor. Per method:

- **Source Mean** / **Source Frac.**: mean number of source rationale tokens in the
  distractor half, and the fraction of rationales with at least one, over all targets;
- **Target Mean** / **Target Frac.**: the same on the target side, over the targets of the
  second sentence (only they can see target tokens of the other sentence).

Not counted: the source ``</s>``, the first target token (the decoder's ``</s>``) and the
forced previous token.

    python analysis/evaluate_distractor_rationales.py --baseline gradient_norm
    python analysis/evaluate_distractor_rationales.py --all \
        --breaks generated_translations/distractors.jsonl
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_distractor_rationales import main

if __name__ == "__main__":
    run_program(main)
