"""Fine-tune or evaluate a Hugging Face encoder-decoder translation model, optionally with
word dropout.

The program behind ``huggingface/run_translation.py`` (user documentation: that file's
docstring): the argument dataclasses and ``main``. The reusable pieces (the seq2seq
word-dropout collator and Trainer, the translation file reader) live in
:mod:`sequential_rationales_integrations.huggingface.seq2seq_word_dropout`.
"""

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import transformers
from torch.utils.data import Dataset
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    HfArgumentParser,
    Seq2SeqTrainingArguments,
    set_seed,
)

from sequential_rationales.validation import InputError
from sequential_rationales_experiments.commands.run_clm import ClmTrainingArguments
from sequential_rationales_integrations.huggingface.config import HubArguments
from sequential_rationales_integrations.huggingface.locations import (
    check_loaded_tokenizer,
    check_model_location,
    check_tokenizer_location,
    check_writable_directory,
    from_pretrained,
)
from sequential_rationales_integrations.huggingface.lora import (
    LoraArguments,
    adapter_base,
    with_adapters,
)
from sequential_rationales_integrations.huggingface.seq2seq_word_dropout import (
    TRANSLATION_SUFFIXES,
    Seq2SeqWordDropoutCollator,
    Seq2SeqWordDropoutTrainer,
    read_translation_pairs,
)
from sequential_rationales_integrations.huggingface.training import (
    MASK_4D_ATTENTION,
    WordDropoutFlags,
    environment_variable,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments(LoraArguments, HubArguments):
    """Which pretrained encoder-decoder model, config and tokenizer to fine-tune, and LoRA
    (:class:`LoraArguments`)."""

    model_name_or_path: str = field(
        metadata={"help": "Pretrained encoder-decoder model (AutoModelForSeq2SeqLM: Marian, "
                          "BART, T5, ...): a local directory or a hub name, e.g. "
                          "Helsinki-NLP/opus-mt-de-en."})
    config_name: str | None = field(
        default=None,
        metadata={"help": "Config (local directory or hub name) if not the same as "
                          "--model_name_or_path."})
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer (local directory or hub name) if not the same as "
                          "--model_name_or_path."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention implementation (e.g. sdpa, eager). Word dropout needs "
                          f"one of {', '.join(MASK_4D_ATTENTION)} (4-D decoder masks)."})


@dataclass
class DataTrainingArguments:
    """Which translation pairs to train and evaluate on, and how to tokenize them."""

    source_lang: str = field(
        metadata={"help": "Source language key of the translation records, e.g. de."})
    target_lang: str = field(
        metadata={"help": "Target language key of the translation records, e.g. en."})
    train_file: str | None = field(
        default=None,
        metadata={"help": 'Training pairs: .json/.jsonl, one record {"translation": {"de": '
                          '"...", "en": "..."}} per line (or a JSON list of them).'})
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Evaluation pairs in the same format as --train_file."})
    max_source_length: int = field(
        default=1024,
        metadata={"help": "Maximum source length in tokens (its final </s> included); longer "
                          "sources are truncated."})
    max_target_length: int = field(
        default=128,
        metadata={"help": "Maximum target length in tokens for training; longer targets are "
                          "truncated."})
    val_max_target_length: int | None = field(
        default=None,
        metadata={"help": "Maximum target length for evaluation (and generation with "
                          "--predict_with_generate). Default: --max_target_length."})
    num_beams: int | None = field(
        default=None,
        metadata={"help": "Beams for generation with --predict_with_generate. Default: "
                          "--generation_num_beams, else the model's generation config."})
    ignore_pad_token_for_loss: bool = field(
        default=True,
        metadata={"help": "Leave padded label positions out of the loss."})
    source_prefix: str | None = field(
        default=None,
        metadata={"help": "Text put before every source (T5: e.g. 'translate German to "
                          "English: ')."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use at most this many training pairs (for debugging or quick "
                          "runs)."})
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Use at most this many evaluation pairs (for debugging or quick "
                          "runs)."})

    def __post_init__(self) -> None:
        if self.source_lang == self.target_lang:
            raise InputError(f"--source_lang and --target_lang are both {self.source_lang!r}")
        for flag, path in (("--train_file", self.train_file),
                           ("--validation_file", self.validation_file)):
            if path is None:
                continue
            if Path(path).suffix.lower() not in TRANSLATION_SUFFIXES:
                raise InputError(f"{flag} must be a {' or '.join(TRANSLATION_SUFFIXES)} file of "
                                 f'{{"translation": {{...}}}} records, got {path}')
            if not Path(path).is_file():
                raise FileNotFoundError(f"{flag} {path} does not exist")
        for flag, value in (("--max_source_length", self.max_source_length),
                            ("--max_target_length", self.max_target_length),
                            ("--val_max_target_length", self.val_max_target_length),
                            ("--num_beams", self.num_beams),
                            ("--max_train_samples", self.max_train_samples),
                            ("--max_eval_samples", self.max_eval_samples)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be >= 1, got {value}")
        if self.max_source_length < 2:
            raise InputError("--max_source_length must leave room for a token and the final "
                             f"</s>, got {self.max_source_length}")


@dataclass
class TranslationWordDropoutArguments(WordDropoutFlags):
    """Word dropout applied to training batches (compatibility training); the paper's
    translation setting is --word_dropout_mixture 0.5 with inverse_length."""

    word_dropout_type: str = field(
        default="inverse_length",
        metadata={"help": "How many tokens a dropped example keeps on each side: "
                          "inverse_length (each token kept with probability 1/T; the paper's "
                          "choice for translation) or uniform_length (count uniform on 0..T). "
                          "The source's final </s> is always kept."})


@dataclass
class TranslationTrainingArguments(ClmTrainingArguments, Seq2SeqTrainingArguments):
    """``Seq2SeqTrainingArguments`` plus ``--logging_dir``, which transformers 5 no longer
    has."""


class TranslationDataset(Dataset):
    """Tokenized pairs: ``input_ids``, ``attention_mask`` and ``labels`` lists per example."""

    def __init__(self, examples: list[dict[str, list[int]]]) -> None:
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.examples[index]


def parse_args(argv: list[str] | None = None) -> tuple[
        ModelArguments, DataTrainingArguments, TranslationWordDropoutArguments,
        TranslationTrainingArguments]:
    parser = HfArgumentParser((ModelArguments, DataTrainingArguments,
                               TranslationWordDropoutArguments, TranslationTrainingArguments))
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(args[0]))
    return parser.parse_args_into_dataclasses(args=args)


def tokenize_pairs(pairs: list[tuple[str, str]], tokenizer: Any, prefix: str,
                   max_source_length: int, max_target_length: int, path: str
                   ) -> TranslationDataset:
    """Sources (with ``prefix``) and targets tokenized and truncated; every source must end
    with the tokenizer's ``</s>``, which word dropout and rationalization always keep."""
    sources = [prefix + source for source, _ in pairs]
    encoded = tokenizer(sources, max_length=max_source_length, truncation=True)
    labels = tokenizer(text_target=[target for _, target in pairs],
                       max_length=max_target_length, truncation=True)["input_ids"]
    eos = tokenizer.eos_token_id
    examples = []
    for n, (ids, mask, target) in enumerate(zip(encoded["input_ids"], encoded["attention_mask"],
                                                labels), 1):
        if not ids or ids[-1] != eos:
            raise InputError(f"{path}: pair {n}: the tokenizer did not end the source with its "
                             f"end-of-sequence token ({tokenizer.eos_token!r}); word dropout "
                             "and rationalization keep that final token visible, so use a "
                             "tokenizer that appends it (Marian, BART and T5 tokenizers do)")
        if not target:
            raise InputError(f"{path}: pair {n}: the target tokenizes to nothing")
        examples.append({"input_ids": ids, "attention_mask": mask, "labels": target})
    return TranslationDataset(examples)


def bleu_metric(tokenizer: Any) -> Any:
    """``compute_metrics`` for generated predictions: sacreBLEU and mean generated length."""
    try:
        import sacrebleu
    except ImportError:
        raise ImportError("--predict_with_generate computes BLEU with sacrebleu; install it "
                          "(pip install sacrebleu)") from None
    pad = tokenizer.pad_token_id

    def compute(eval_preds: Any) -> dict[str, float]:
        preds, labels = eval_preds
        preds = preds[0] if isinstance(preds, tuple) else preds
        preds = np.where(preds < 0, pad, preds)
        labels = np.where(labels < 0, pad, labels)
        hyps = [t.strip() for t in tokenizer.batch_decode(preds, skip_special_tokens=True)]
        refs = [t.strip() for t in tokenizer.batch_decode(labels, skip_special_tokens=True)]
        lengths = [int(np.count_nonzero(row != pad)) for row in preds]
        return {"bleu": sacrebleu.corpus_bleu(hyps, [refs]).score,
                "gen_len": float(np.mean(lengths))}

    return compute


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run training and/or evaluation as configured by ``argv`` (default ``sys.argv[1:]``).

    Returns the metrics that were also written to ``OUTPUT_DIR/all_results.json``.
    """
    model_args, data_args, wd_args, training_args = parse_args(argv)
    if not (training_args.do_train or training_args.do_eval):
        raise InputError("nothing to do: pass --do_train and/or --do_eval")
    if training_args.do_train and data_args.train_file is None:
        raise InputError("--do_train needs --train_file")
    if training_args.do_eval and data_args.validation_file is None:
        raise InputError("--do_eval needs --validation_file")
    # Transformers reads 0 (or any value <= 0) as "train for --num_train_epochs" instead.
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise InputError("--max_steps must be >= 1, or -1 (the default) to train for "
                         f"--num_train_epochs; got {training_args.max_steps}")
    check_model_location(model_args.model_name_or_path, "model")
    check_model_location(model_args.config_name, "config")
    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    check_tokenizer_location(tokenizer_name, "--tokenizer_name")
    check_writable_directory(training_args.output_dir, "--output_dir")

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    for name in (__name__, "sequential_rationales_integrations.huggingface"):
        logging.getLogger(name).setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info("Training arguments: %s", training_args)

    set_seed(training_args.seed)
    hub_kwargs = model_args.hub_kwargs()
    # An adapter folder: the base model is loaded, the adapter goes on after word dropout.
    adapter_of = adapter_base(model_args.model_name_or_path, model_args.base_model)
    pretrained = adapter_of or model_args.model_name_or_path
    config = AutoConfig.from_pretrained(model_args.config_name or pretrained, **hub_kwargs)
    if not getattr(config, "is_encoder_decoder", False):
        raise InputError(f"run_translation needs an encoder-decoder model (AutoModelForSeq2SeqLM:"
                         f" Marian, BART, T5, ...); {model_args.model_name_or_path} is a "
                         f"{config.model_type!r} model without an encoder: for causal language "
                         "models use run_clm.py")
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_name, use_fast=model_args.use_fast_tokenizer, **hub_kwargs)
    check_loaded_tokenizer(tokenizer, tokenizer_name)
    model_kwargs: dict[str, Any] = {}
    if model_args.attn_implementation is not None:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    model = from_pretrained(AutoModelForSeq2SeqLM, pretrained, config=config, **hub_kwargs,
                            **model_kwargs)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.decoder_start_token_id is None:
        raise InputError(f"{model_args.model_name_or_path}: config.decoder_start_token_id is "
                         "not set; the decoder needs a start token")
    prefix = data_args.source_prefix or ""
    if not prefix and model.config.model_type == "t5":
        logger.warning("T5 expects a task prefix, e.g. --source_prefix 'translate German to "
                       "English: '")

    languages = (data_args.source_lang, data_args.target_lang)
    train_dataset = eval_dataset = None
    if training_args.do_train:
        pairs = read_translation_pairs(data_args.train_file, *languages)
        pairs = pairs[:data_args.max_train_samples]
        train_dataset = tokenize_pairs(pairs, tokenizer, prefix, data_args.max_source_length,
                                       data_args.max_target_length, data_args.train_file)
    eval_max_length = data_args.val_max_target_length or data_args.max_target_length
    if training_args.do_eval:
        pairs = read_translation_pairs(data_args.validation_file, *languages)
        pairs = pairs[:data_args.max_eval_samples]
        eval_dataset = tokenize_pairs(pairs, tokenizer, prefix, data_args.max_source_length,
                                      eval_max_length, data_args.validation_file)

    label_pad = -100 if data_args.ignore_pad_token_for_loss else tokenizer.pad_token_id
    collator = DataCollatorForSeq2Seq(
        tokenizer, model=model, label_pad_token_id=label_pad,
        pad_to_multiple_of=8 if training_args.fp16 or training_args.bf16 else None)

    word_dropout = wd_args.build(per_head=False)
    train_collator = None
    if word_dropout is not None and training_args.do_train:
        attn = getattr(model.config, "_attn_implementation", None)
        if attn not in MASK_4D_ATTENTION:
            raise InputError(f"word dropout needs --attn_implementation "
                             f"{' or '.join(MASK_4D_ATTENTION)} (4-D decoder attention masks), "
                             f"the model uses {attn!r}")
        # Each process draws its own masks.
        train_collator = Seq2SeqWordDropoutCollator(
            collator, word_dropout, seed=training_args.seed + training_args.process_index,
            label_pad_token_id=label_pad)
        logger.info("Word dropout on training batches: %s", word_dropout)

    model = with_adapters(model, model_args, model_args.model_name_or_path, adapter_of,
                          "SEQ_2_SEQ_LM", trainable=training_args.do_train)

    # TrainingArguments lost --logging_dir in transformers 5; the TensorBoard callback (built in
    # Trainer.__init__) reads TENSORBOARD_LOGGING_DIR instead.
    with environment_variable("TENSORBOARD_LOGGING_DIR", training_args.logging_dir):
        trainer = Seq2SeqWordDropoutTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            data_collator=collator,
            train_data_collator=train_collator,
            compute_metrics=bleu_metric(tokenizer) if training_args.predict_with_generate
            else None,
        )

    results: dict[str, float] = {}
    if training_args.do_train:
        train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
        trainer.save_model()  # model and tokenizer, into --output_dir
        metrics = dict(train_result.metrics)
        metrics["train_samples"] = len(train_dataset)
        trainer.log_metrics("train", metrics)
        trainer.save_metrics("train", metrics)
        trainer.save_state()
        results.update(metrics)

    if training_args.do_eval:
        num_beams = data_args.num_beams or training_args.generation_num_beams
        metrics = trainer.evaluate(max_length=training_args.generation_max_length
                                   or eval_max_length, num_beams=num_beams,
                                   metric_key_prefix="eval")
        metrics["eval_samples"] = len(eval_dataset)
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)  # eval_results.json and all_results.json
        results.update(metrics)

    if training_args.push_to_hub and training_args.do_train:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path, tasks="translation")
    return results
