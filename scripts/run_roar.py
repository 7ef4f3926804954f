"""ROAR and recursive ROAR (remove and retrain) of every attribution method on Majority Class.

For each method (greedy, the six gradient and attention baselines, occlusion, random, and lrp
and iba where registered), the k % most important of the 17 bits of every training and test
sentence are replaced by a mask token, a tiny GPT-2 is retrained with word dropout on the
masked training set, and its label accuracy on the masked test set is reported against k.
Recursive ROAR recomputes the ranking at each k with the model retrained at the previous k, on
the data masked at the previous k. Writes ``OUT/table.csv``, ``OUT/table.md`` (methods x k
accuracy, both modes), ``OUT/roar.json`` and the figure ``OUT/roar.png`` / ``.pdf``. Every step
is saved as it finishes and skipped by a rerun with the same settings.

    python scripts/run_roar.py --quick --out outputs/roar_quick        # minutes on a CPU
    python scripts/run_roar.py --out outputs/roar --device cuda        # the full schedule
    python scripts/run_roar.py --quick --methods greedy integrated_gradient random --k 25 50
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.run_roar import main

if __name__ == "__main__":
    run_program(main)
