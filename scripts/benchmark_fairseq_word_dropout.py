"""Training speed with and without word dropout, measured with fairseq's own ``Trainer``.

Builds, from ``fairseq-train`` command lines (same parser, plugin, task, criterion and
optimizer as the CLI), one trainer per configuration with identical initial weights, and feeds
them the same batches, interleaving their ``train_step`` calls (the order rotates every step).
Interleaving matters on a shared machine: a burst of load hits every configuration alike, so
the ratio stays meaningful even when absolute throughput wanders.

Configurations:

* the Majority Class LM (``transformer_lm_majority_class``) with ``--word-dropout-mixture 0``
  and ``1.0`` ``uniform_length`` (the paper's setting);
* a small ``compatible_transformer`` on a synthetic translation task with mixture 0 and
  mixture 1.0 ``inverse_length``, per-head (the paper's default) and
  ``--word-dropout-per-example``.

Mixture 1.0 makes every batch pay the masking cost (the worst case); at 0.5 half of them do.
Printed: the median of per-step target tokens per second (warm-up excluded) and the median,
over steps, of (mixture-0 step time / this configuration's step time) on the same batch.

Example::

    python scripts/benchmark_fairseq_word_dropout.py --updates 200
    python scripts/benchmark_fairseq_word_dropout.py --only mt --device cuda --json mt.json
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.benchmark_fairseq_word_dropout import main

if __name__ == "__main__":
    run_program(main)
