"""Majority Class end to end on CPU (Vafa et al., 2021, Sec. 8.1) with the real fairseq CLIs.

Steps (a step is finished when its folder's ``step.done`` records the same settings, so a rerun
skips it; an interrupted training resumes from fairseq's ``checkpoint_last.pt``; ``--force``
redoes everything):

1. generate the data: 17 fair bits, ``=``, the majority bit (50k / 5k / 5k lines, seeded);
2. ``fairseq-preprocess --only-source``;
3. ``fairseq-train`` the standard (mixture 0) and compatible (mixture 1.0, ``uniform_length``)
   ``transformer_lm_majority_class`` models;
4. ``fairseq-eval-lm --tokens-per-sample 20 --context-window 0`` for both (the paper: 1.80);
5. Figure 3 (PNG + PDF): model vs true p(label = 1) from random halves of the bits;
6. greedy rationales of the label of test sentences with the compatible model.

Writes ``OUT/summary.json`` with ``standard_ppl``, ``compatible_ppl``,
``calibration_mae_standard``, ``calibration_mae_compatible``, ``label_rationale_precision``
(share of the bits in the label's rationales equal to the label) and
``label_rationale_mean_size``. ``--quick`` trains 1,500 updates of 256 sentences per model
(about 15 minutes on two CPU cores); without it the paper's settings are used (20,000 updates
of up to 64,000 tokens, warm-up 4,000: hours on a CPU, minutes on a GPU).

    python scripts/run_majority_class.py --out outputs/majority_class --quick
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.run_majority_class import main

if __name__ == "__main__":
    run_program(main)
