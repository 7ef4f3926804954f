"""Figure 3: are Majority Class models calibrated on incomplete inputs?

For test sentences, each of the 17 bits is kept with probability 0.5 (``</s>`` and ``=`` are
always kept); the model's p(label = 1 | kept tokens) is plotted against the true probability
(the hidden bits must supply the rest of the 9 ones). A compatible model lies on the diagonal.
Prints and returns the mean absolute error of each model; writes PNG and PDF.

    python analysis/plot_majority_class_compatibility.py --checkpoint_dir $CHECKPOINT_DIR \
        --data data-bin/majority_class --text majority_class/test.tok
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.plot_majority_class_compatibility import main

if __name__ == "__main__":
    run_program(main)
