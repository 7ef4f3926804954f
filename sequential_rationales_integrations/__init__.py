"""Integrations of sequential-rationales with the frameworks it trains and loads models in.

Unlike the core (``sequential_rationales``, torch only), each subpackage imports its framework:

* :mod:`.fairseq` -- the fairseq plugin: compatible (word-dropout) architectures, modules that
  take original positions and keep masks, and safe checkpoint loading. The fairseq
  command-line tools reach it with ``--user-dir fairseq/sequential_rationales_plugin``.
* :mod:`.huggingface` -- word-dropout collator and Trainer, the flex-attention word-dropout
  kernel, the causal-LM fine-tuning program behind ``huggingface/run_clm.py`` and a word-level
  tokenizer for synthetic data.

Importing this package imports neither framework; import the subpackage you need.
"""
