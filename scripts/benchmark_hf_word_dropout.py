"""Training-step time of Hugging Face causal LMs with and without word dropout.

Times one full training step (collate, copy to the device, forward, backward, AdamW step) for
five configurations of the same randomly initialized model (identical initial weights, one
model and optimizer each):

* ``standard``: no word dropout (SDPA, fused kernels with ``is_causal``);
* ``uniform_length mask`` / ``uniform_length flex``: every batch word-dropped with one keep-set
  per example, given to the model as a dense 4-D ``attention_mask`` (SDPA) or as a compact keep
  mask for the ``word_dropout_flex`` attention (flex attention, compiled on CUDA);
* ``inverse_length per-head mask`` / ``inverse_length per-head flex``: the same with one
  keep-set per attention head (the paper's setting for ``inverse_length``).

Every configuration sees the same token batches, and the two modes of a word-dropout type draw
the same keep masks (same collator seed). Steps are interleaved, the order rotating every step,
so a burst of load on a shared machine hits every configuration alike. Printed: the median
step time after warm-up and its ratio to the standard step's median. Word dropout is applied
to every batch (mixture 1.0), the worst case; at mixture 0.5 half the steps pay it.

Attention-probability dropout is 0 in every configuration, as flex attention cannot apply it;
the other dropouts keep the config's defaults, and the global RNG is reseeded before each
configuration's step so that all of them draw the same dropout masks. ``--dtype bfloat16``
trains with float32 weights under ``torch.autocast`` (like the Trainer's ``--bf16``). Models
are built from configs; nothing is downloaded.

Examples (from the repository root)::

    python scripts/benchmark_hf_word_dropout.py --device cuda --dtype bfloat16 \\
        --model gpt2-small --batch-size 8 --seq-len 1024 --steps 50
    python scripts/benchmark_hf_word_dropout.py --device cpu --model gpt2-tiny --seq-len 128
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.benchmark_hf_word_dropout import main

if __name__ == "__main__":
    run_program(main)
