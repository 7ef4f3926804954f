"""Hugging Face integration (imports ``transformers``): word-dropout training for causal LMs.

* :mod:`.word_dropout` -- the word-dropout collator and Trainer, and the flex-attention kernel;
* :mod:`.training` -- block datasets from text files, and how word-dropout masks reach a model;
* :mod:`.config` -- model configs: loading, fitting to a tokenizer, context size;
* :mod:`.locations` -- model, tokenizer and output folders checked before anything loads;
* :mod:`.word_level_tokenizer` -- a word-level tokenizer for synthetic data.
"""
