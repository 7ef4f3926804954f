"""Fine-tune or evaluate a Hugging Face encoder-decoder translation model (Marian, BART, T5),
optionally with word dropout.

Follows the conventions of Hugging Face's ``examples/pytorch/translation/run_translation.py``
(``HfArgumentParser`` over ``ModelArguments``, ``DataTrainingArguments`` and
``Seq2SeqTrainingArguments``; ``Seq2SeqTrainer``; ``*_results.json`` metrics, BLEU with
``--predict_with_generate``) with two differences:

* word dropout for compatibility training (Vafa et al., 2021, Sec. 5) on training batches only
  (``--word_dropout_mixture``, ``--word_dropout_type``; the paper used 0.5 and
  ``inverse_length``, this script's default type). A dropped batch hides source tokens through
  the encoder ``attention_mask`` (the final ``</s>`` always kept) and target tokens through a
  4-D decoder mask (causal, each query sees itself), the way rationalization feeds subsets
  (``HuggingFaceSeq2Seq``); evaluation always uses the full context;
* no ``datasets`` library: ``--train_file`` / ``--validation_file`` are ``.json``/``.jsonl``
  files of records ``{"translation": {"de": "...", "en": "..."}}``.

Examples (run from the repository root)::

    # Compatibility fine-tuning of a Marian model, as the paper fine-tuned its IWSLT model.
    python huggingface/run_translation.py --model_name_or_path Helsinki-NLP/opus-mt-de-en \\
        --source_lang de --target_lang en --train_file train.jsonl \\
        --validation_file valid.jsonl --word_dropout_mixture 0.5 \\
        --word_dropout_type inverse_length --learning_rate 1e-5 --max_steps 20000 \\
        --per_device_train_batch_size 32 --do_train --do_eval --predict_with_generate \\
        --output_dir outputs/opus-mt-de-en-compatible

    # T5 needs a task prefix.
    python huggingface/run_translation.py --model_name_or_path t5-small \\
        --source_prefix "translate German to English: " --source_lang de --target_lang en ...

Arguments can also be given as a single ``.json`` file: ``python huggingface/run_translation.py
args.json``.
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.run_translation import main

if __name__ == "__main__":
    run_program(main)
