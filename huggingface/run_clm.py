"""Train or evaluate a Hugging Face causal language model, optionally with word dropout.

Follows the conventions of Hugging Face's ``run_clm.py`` example (``HfArgumentParser`` over
argument dataclasses, ``Trainer``, ``*_results.json`` metrics) with two additions:

* word dropout for compatibility training (Vafa et al., 2021, Sec. 5) on training batches
  only (``--word_dropout_mixture``, ``--word_dropout_type``, ``--word_dropout_per_head``,
  ``--word_dropout_attention``); evaluation always uses the full context;
* a small built-in data pipeline (no ``datasets`` library): ``--train_file`` /
  ``--validation_file`` are ``.txt`` (one document per line) or ``.json`` / ``.jsonl``
  (records with a ``text`` field); documents are tokenized, joined (with the tokenizer's EOS
  token in between) and cut into ``--block_size`` blocks.

Word dropout reaches the model in one of two ways (``--word_dropout_attention``):

* ``mask``: a boolean 4-D ``attention_mask``, which Hugging Face causal LMs honour with the
  ``sdpa`` and ``eager`` attention implementations (checked for GPT-2 and Llama); Flash
  Attention is refused. Works everywhere, but the dense mask turns off fused attention kernels.
* ``flex``: a compact ``[B, (H,) T]`` keep mask, consumed by the ``word_dropout_flex``
  attention implementation (PyTorch flex attention, compiled on CUDA), which keeps attention
  fused. Needs attention dropout 0 (``--attention_dropout 0``, pretrained models included);
  Llama-style configs have none by default.
* ``auto`` (default): ``flex`` when training on CUDA with flex attention available, no
  ``--attn_implementation`` and no attention dropout; ``mask`` otherwise (the log says why).

Examples (run from the repository root)::

    # Train a small GPT-2 from scratch offline (local word-level tokenizer, no hub access).
    python huggingface/run_clm.py --model_type gpt2 \\
        --config_overrides "n_layer=4,n_embd=256,n_head=4,n_positions=256" \\
        --tokenizer_name path/to/tokenizer_dir \\
        --train_file train.txt --validation_file valid.txt --block_size 256 \\
        --word_dropout_mixture 0.5 --word_dropout_type uniform_length \\
        --do_train --do_eval --max_steps 2000 --per_device_train_batch_size 16 \\
        --report_to tensorboard --logging_dir outputs/tiny-gpt2/tb --logging_steps 50 \\
        --output_dir outputs/tiny-gpt2

    # Compatibility fine-tuning of GPT-2 Medium as in the paper.
    python huggingface/run_clm.py --model_name_or_path gpt2-medium \\
        --train_file openwebtext_train.txt --validation_file openwebtext_valid.txt \\
        --word_dropout_mixture 0.5 --block_size 512 --learning_rate 1e-5 \\
        --lr_scheduler_type constant --max_steps 45000 \\
        --do_train --do_eval --output_dir outputs/gpt2-medium-compatible

    # Evaluation only: perplexity of a saved model (written to OUTPUT_DIR/eval_results.json).
    python huggingface/run_clm.py --model_name_or_path outputs/gpt2-medium-compatible \\
        --validation_file valid.txt --block_size 512 --do_eval --output_dir outputs/eval

    # Multi-process training: the same arguments under a launcher.
    accelerate launch huggingface/run_clm.py --model_name_or_path gpt2-medium ...
    torchrun --nproc_per_node 2 huggingface/run_clm.py --model_name_or_path gpt2-medium ...

Arguments can also be given as a single ``.json`` file: ``python huggingface/run_clm.py
args.json``. Boolean options with a ``None`` default take a value
(``--word_dropout_per_head true``).
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.run_clm import main

if __name__ == "__main__":
    run_program(main)
