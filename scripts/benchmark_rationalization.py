"""Rationalization speed: this package against the paper's own algorithm, on the same inputs.

"paper" is the algorithm of the paper's code, written plainly below:

* **greedy**: one target at a time. At each step, the candidate subsets (the rationale so far
  plus one context position not yet chosen; the first step's only candidate is the previous
  token) are fed sparsely, tokens sorted by position with their original position ids, in
  batches of at most 4,096 tokens, without padding or a subset mask (all rows of a step have
  the same length). The model computes the logits of every position; the log-softmax of the
  last one is taken. The candidate with the highest log p(target) wins (ties: the earliest
  position); the search stops when the argmax is the target, after ``max_steps`` tokens, or
  when the context is exhausted.
* **integrated gradients**: per target, one forward and one backward pass per path point
  (midpoint rule from all-zero token embeddings, positions kept); positions are then added in
  the order of their scores (the previous token first) until the argmax is the target.
* **exhaustive**: per target, all subsets containing the previous token of size 1, 2, ...,
  ``max_steps``, batched as for greedy; the smallest sufficient size wins and, within it, the
  subset with the highest p(target) (ties: the first enumerated).

"ours" is ``sequential_rationales.rationalize`` with ``HuggingFaceCausalLM``, called once per
sequence for all its targets. Both run on the same random-init GPT-2 (seeded, dropout off,
output layer untied) and on sequences that model generated greedily from four random prompt
tokens, as users rationalize generated text; the generated tokens are the targets. Each
configuration is warmed up once (both implementations, two targets) before it is timed; then,
sequence by sequence, both run back to back (alternating which goes first).

Columns: ``size`` the mean rationale length (ours); ``paper s`` and ``ours s`` the seconds
summed over the sequences; ``ratio`` their quotient (paper / ours); ``med ratio`` the median
over sequences of the per-sequence quotient, which a burst of load on a shared machine barely
moves; ``identical`` the targets whose rationales (positions, in the order added) are the
same; ``fwd share`` the share of our time spent inside the model's forward passes (for
integrated gradients, backward passes are outside it). That share comes from a second,
instrumented run of ours, so the CUDA synchronizations the timer needs do not slow down the
timed run.

    python scripts/benchmark_rationalization.py                      # CPU, 2 threads
    python scripts/benchmark_rationalization.py --device cuda --json gpu.json
    python scripts/benchmark_rationalization.py --quick              # smoke run, seconds
"""

from sequential_rationales_experiments.commands.benchmark_rationalization import main

if __name__ == "__main__":
    main()
