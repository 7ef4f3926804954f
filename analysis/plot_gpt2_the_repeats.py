"""Figure 4: does a model repeat "the" when "the" is all it sees?

The paper's probe of compatibility (Fig. 4 and the code behind it): feed a model a context
made of the single token " the", placed at position id ``p``, and read the probability that
the next token is " the" again, for ``p = 0 .. num_positions - 1``. A model trained only on
full contexts has never seen such a lone token far from the start of a sequence and often
predicts "the the"; a model fine-tuned with word dropout (compatible) does not. The standard
and the compatible model are drawn as two series. Writes PNG, PDF and the values as JSON.

    python analysis/plot_gpt2_the_repeats.py --checkpoint_dir $CHECKPOINT_DIR
    python analysis/plot_gpt2_the_repeats.py --standard_model gpt2-medium \
        --compatible_model path/to/compatible --tokenizer gpt2-medium
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.plot_gpt2_the_repeats import main

if __name__ == "__main__":
    run_program(main)
