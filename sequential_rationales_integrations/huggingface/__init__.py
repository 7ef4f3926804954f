"""Hugging Face integration (imports ``transformers``): word-dropout training for causal LMs
and encoder-decoders.

* :mod:`.word_dropout` -- the word-dropout collator and Trainer, and the flex-attention kernel;
* :mod:`.seq2seq_word_dropout` -- the same for encoder-decoders (Marian, BART, T5): source
  and target keep-sets, as the encoder-decoder adapter feeds subsets;
* :mod:`.training` -- block datasets from text files, and how word-dropout masks reach a model;
* :mod:`.config` -- model configs: loading, fitting to a tokenizer, context size;
* :mod:`.locations` -- model, tokenizer and output folders checked before anything loads;
* :mod:`.lora` -- LoRA fine-tuning flags, and PEFT adapter folders loaded on their base;
* :mod:`.text` -- the causal LM as a text model of :mod:`sequential_rationales.text`;
* :mod:`.word_level_tokenizer` -- a word-level tokenizer for synthetic data.
"""
