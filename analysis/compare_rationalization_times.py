"""Timing comparison: greedy with sparse batched subsets vs greedy on full masked inputs vs
exhaustive search, measured in one run on the same sequences and model.

- **greedy (sparse)**: every candidate subset is fed as only its tokens with their original
  position ids, all candidates of a step in shared batches (the fast form);
- **greedy (masked)**: the same search, but every candidate is the whole prefix with an
  attention mask hiding the tokens outside the subset
  (``HuggingFaceCausalLM(model, use_position_ids=False)``); same rationales, more compute;
- **exhaustive**: all subsets of size 1, 2, ... up to ``--exhaustive_max_steps``.

The last token of each sequence is rationalized (as in the paper's analogy timing). With a
model (``--checkpoint_dir`` / ``--model_name_or_path``) the sequences are the first analogy
sentences (``--data_dir``) or the lines of ``--prompts_file``; ``--tiny`` instead uses a small
random GPT-2 and random token sequences, a CPU demo that needs no download. Prints seconds per
method and the ratios to sparse greedy, checks that both greedy forms found the same
rationales, and writes everything as JSON (``--out``).

    python analysis/compare_rationalization_times.py --checkpoint_dir $CHECKPOINT_DIR
    python analysis/compare_rationalization_times.py --tiny
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.compare_rationalization_times import main

if __name__ == "__main__":
    run_program(main)
