"""Train or evaluate a Hugging Face causal language model, optionally with word dropout.

The program behind ``huggingface/run_clm.py`` and ``rationales-train-clm`` (user
documentation: that file's docstring): the argument dataclasses and ``main``. The reusable
pieces (block datasets, config loading, the word-dropout collator and Trainer) live in
:mod:`sequential_rationales_integrations.huggingface`.
"""

import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from sequential_rationales.adapters.huggingface import attention_windows, family_refusal
from sequential_rationales.validation import InputError
from sequential_rationales.word_dropout import WordDropout
from sequential_rationales_experiments.cli import VERBOSE_HELP
from sequential_rationales_integrations.huggingface.config import (
    HubArguments,
    fit_config_to_tokenizer,
    load_config,
    overridden_keys,
)
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
from sequential_rationales_integrations.huggingface.training import (
    DATA_SUFFIXES,
    MASK_4D_ATTENTION,
    BlockDataset,
    WordDropoutFlags,
    environment_variable,
    resolve_block_size,
    tokenize_file,
    word_dropout_attention_mode,
)
from sequential_rationales_integrations.huggingface.word_dropout import (
    WORD_DROPOUT_ATTENTION_MODES,
    WordDropoutCollator,
    WordDropoutTrainer,
    num_attention_heads,
    takes_position_ids,
    use_word_dropout_flex,
)

logger = logging.getLogger(__name__)

DTYPES = ("auto", "bfloat16", "float16", "float32")


@dataclass
class ModelArguments(LoraArguments, HubArguments):
    """Which model, config and tokenizer to use (pretrained or trained from scratch), and
    LoRA (:class:`LoraArguments`)."""

    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Pretrained model: a local directory or a hub name (e.g. gpt2-medium). "
                          "Leave unset to train from scratch with --model_type/--config_name."})
    model_type: str | None = field(
        default=None,
        metadata={"help": "Model type for training from scratch without a config file "
                          "(e.g. gpt2, llama); built with AutoConfig.for_model."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated config overrides when training from scratch, e.g. "
                          "'n_layer=2,n_embd=64,n_head=2'. vocab_size defaults to the "
                          "tokenizer's size."})
    config_name: str | None = field(
        default=None,
        metadata={"help": "Config (local directory or hub name) if not the same as "
                          "--model_name_or_path; without --model_name_or_path the model is "
                          "trained from scratch with this config."})
    tokenizer_name: str | None = field(
        default=None,
        metadata={"help": "Tokenizer (local directory or hub name) if not the same as "
                          "--model_name_or_path; required when training from scratch."})
    dtype: str | None = field(
        default=None,
        metadata={"help": f"Load the model in this dtype; one of {', '.join(DTYPES)}. 'auto' "
                          "takes the dtype of a pretrained model's weights."})
    attn_implementation: str | None = field(
        default=None,
        metadata={"help": "Attention implementation (e.g. sdpa, eager). Dense-mask word "
                          f"dropout needs one of {', '.join(MASK_4D_ATTENTION)} (sdpa is the "
                          "default); flex word dropout sets its own, so leave this unset."})

    attention_dropout: float | None = field(
        default=None,
        metadata={"help": "Set the model's attention-probability dropout (GPT-2: attn_pdrop, "
                          "Llama: attention_dropout), pretrained models included. 0 lets "
                          "--word_dropout_attention auto take the fused flex path on GPUs, "
                          "which cannot drop attention probabilities. Default: the config's."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise InputError(f"--attention_dropout must be in [0, 1), got {self.attention_dropout}")
        if self.model_name_or_path is None and self.config_name is None and (
                self.model_type is None):
            raise InputError("give --model_name_or_path (pretrained model) or, to train from "
                             "scratch, --model_type or --config_name")
        if self.config_overrides is not None and self.model_name_or_path is not None:
            raise InputError("--config_overrides only applies when training from scratch; it "
                             "cannot be combined with --model_name_or_path")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise InputError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


@dataclass
class DataTrainingArguments:
    """Which text to train and evaluate on, and how to cut it into blocks."""

    train_file: str | None = field(
        default=None,
        metadata={"help": "Training text: .txt (one document per line) or .json/.jsonl "
                          "(records with a --text_column_name field)."})
    validation_file: str | None = field(
        default=None,
        metadata={"help": "Evaluation text in the same formats as --train_file. Without it, "
                          "--do_eval uses the last --validation_split_percentage of the "
                          "training blocks."})
    text_column_name: str = field(
        default="text",
        metadata={"help": "Field that holds the document text in .json/.jsonl files."})
    validation_split_percentage: int = field(
        default=5,
        metadata={"help": "Percentage of training blocks held out for evaluation when "
                          "--validation_file is not given."})
    block_size: int | None = field(
        default=None,
        metadata={"help": "Tokens per training/evaluation block. Defaults to the model's "
                          "maximum length, capped at 1024."})
    separate_documents_with_eos: bool = field(
        default=True,
        metadata={"help": "Append the tokenizer's EOS token to each document before joining "
                          "documents into blocks."})
    max_train_samples: int | None = field(
        default=None,
        metadata={"help": "Use at most this many training blocks (for debugging or quick "
                          "runs)."})
    max_eval_samples: int | None = field(
        default=None,
        metadata={"help": "Use at most this many evaluation blocks (for debugging or quick "
                          "runs)."})

    def __post_init__(self) -> None:
        for flag, path in (("--train_file", self.train_file),
                           ("--validation_file", self.validation_file)):
            if path is None:
                continue
            if Path(path).suffix.lower() not in DATA_SUFFIXES:
                raise InputError(f"{flag} must be a {', '.join(DATA_SUFFIXES)} file, got {path}")
            if not Path(path).is_file():
                raise FileNotFoundError(f"{flag} {path} does not exist")
        for flag, value in (("--block_size", self.block_size),
                            ("--max_train_samples", self.max_train_samples),
                            ("--max_eval_samples", self.max_eval_samples)):
            if value is not None and value < 1:
                raise InputError(f"{flag} must be >= 1, got {value}")
        if not 0 < self.validation_split_percentage < 100:
            raise InputError("--validation_split_percentage must be in 1..99, got "
                             f"{self.validation_split_percentage}")


@dataclass
class WordDropoutArguments(WordDropoutFlags):
    """Word dropout applied to training batches (compatibility training)."""

    word_dropout_per_head: bool | None = field(
        default=None,
        metadata={"help": "Draw a separate keep-set per attention head (true/false). Default: "
                          "true for inverse_length, false for uniform_length."})
    word_dropout_attention: str = field(
        default="auto",
        metadata={"metavar": "{" + ",".join(WORD_DROPOUT_ATTENTION_MODES) + "}",
                  "help": "How word-dropout masks reach the model (same training either way). "
                          "mask: a dense boolean 4-D attention_mask (any sdpa/eager model; "
                          "disables fused attention kernels, slower on GPUs). flex: a compact "
                          "keep mask for the registered 'word_dropout_flex' attention, fused "
                          "flex attention compiled on CUDA (needs torch flex attention, Triton "
                          "on CUDA and attention dropout 0 in the model config; runs on CPU "
                          "but is not faster there). auto: flex when training on CUDA with "
                          "flex attention available, no --attn_implementation and no attention "
                          "dropout, else mask."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.word_dropout_attention not in WORD_DROPOUT_ATTENTION_MODES:
            raise InputError("--word_dropout_attention must be one of "
                             f"{', '.join(WORD_DROPOUT_ATTENTION_MODES)}, got "
                             f"{self.word_dropout_attention!r}")

    def build(self) -> WordDropout | None:
        """The configured :class:`WordDropout`, or ``None`` when the mixture is 0."""
        return super().build(self.word_dropout_per_head)


@dataclass
class ClmTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``--logging_dir``, which transformers 5 no longer has, and
    ``--verbose``, which every program of this project takes."""

    logging_dir: str | None = field(
        default=None,
        metadata={"help": "TensorBoard log directory (with --report_to tensorboard). Default: "
                          "OUTPUT_DIR/runs/DATE_HOST, or $TENSORBOARD_LOGGING_DIR if set."})
    verbose: bool = field(default=False, metadata={"help": VERBOSE_HELP})


def parse_args(argv: list[str] | None = None) -> tuple[
        ModelArguments, DataTrainingArguments, WordDropoutArguments, ClmTrainingArguments]:
    parser = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, WordDropoutArguments, ClmTrainingArguments))
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 1 and args[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(args[0]))
    return parser.parse_args_into_dataclasses(args=args)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """Run training and/or evaluation as configured by ``argv`` (default ``sys.argv[1:]``).

    Returns the metrics that were also written to ``OUTPUT_DIR/all_results.json``.
    """
    model_args, data_args, wd_args, training_args = parse_args(argv)
    if not (training_args.do_train or training_args.do_eval):
        raise InputError("nothing to do: pass --do_train and/or --do_eval")
    if training_args.do_train and data_args.train_file is None:
        raise InputError("--do_train needs --train_file")
    if training_args.do_eval and data_args.validation_file is None and (
            data_args.train_file is None):
        raise InputError("--do_eval needs --validation_file (or a --train_file to split)")
    # Transformers reads 0 (or any value <= 0) as "train for --num_train_epochs" instead.
    if training_args.max_steps == 0 or training_args.max_steps < -1:
        raise InputError("--max_steps must be >= 1, or -1 (the default) to train for "
                         f"--num_train_epochs; got {training_args.max_steps}")
    # Before anything is loaded: a missing local folder would surface as a hub error.
    check_model_location(model_args.model_name_or_path, "model")
    check_model_location(model_args.config_name, "config")
    check_tokenizer_location(model_args.tokenizer_name or model_args.model_name_or_path,
                             "--tokenizer_name")
    check_writable_directory(training_args.output_dir, "--output_dir")

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    # The training helpers log under the integration's package.
    for name in (__name__, "sequential_rationales_integrations.huggingface"):
        logging.getLogger(name).setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info("Training arguments: %s", training_args)

    set_seed(training_args.seed)
    hub_kwargs = model_args.hub_kwargs()
    # An adapter folder: the base model is loaded, the adapter goes on after word dropout.
    adapter_of = (adapter_base(model_args.model_name_or_path, model_args.base_model)
                  if model_args.model_name_or_path else None)
    pretrained = adapter_of or model_args.model_name_or_path
    config = load_config(config_name=model_args.config_name,
                         model_name_or_path=pretrained,
                         model_type=model_args.model_type,
                         config_overrides=model_args.config_overrides,
                         attention_dropout=model_args.attention_dropout, hub_kwargs=hub_kwargs)

    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_name is None:
        raise InputError("training from scratch needs --tokenizer_name (a local tokenizer "
                         "directory or hub name); this script does not train tokenizers")
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_name, use_fast=model_args.use_fast_tokenizer, **hub_kwargs)
    check_loaded_tokenizer(tokenizer, tokenizer_name)

    model_kwargs: dict[str, Any] = {}
    if model_args.attn_implementation is not None:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.dtype is not None:
        model_kwargs["dtype"] = (model_args.dtype if model_args.dtype == "auto"
                                 else getattr(torch, model_args.dtype))
    if pretrained:
        model = from_pretrained(AutoModelForCausalLM, pretrained, config=config, **hub_kwargs,
                                **model_kwargs)
    else:
        fit_config_to_tokenizer(config, tokenizer, overridden_keys(model_args.config_overrides))
        if model_kwargs.get("dtype") == "auto":
            del model_kwargs["dtype"]  # nothing to infer it from
        model = AutoModelForCausalLM.from_config(
            config, trust_remote_code=model_args.trust_remote_code, **model_kwargs)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("Training a new model from scratch: %.2fM parameters", n_params / 1e6)

    # transformers 5 infers the loss type from the class name, and e.g. "GPT2LMHeadModel" matches
    # none: the model falls back to the causal-LM loss, but the Trainer then counts label
    # position 0 as a target and divides by one token too many per row (eval_loss too low).
    if getattr(model, "loss_type", None) is None:
        model.loss_type = "ForCausalLM"

    # Tokenizers with added tokens need a larger embedding matrix.
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))

    block_size = resolve_block_size(data_args.block_size, tokenizer, model.config)
    train_dataset = eval_dataset = None
    if data_args.train_file is not None and (
            training_args.do_train or data_args.validation_file is None):
        train_ids = tokenize_file(data_args.train_file, tokenizer, data_args.text_column_name,
                                  data_args.separate_documents_with_eos)
        train_dataset = BlockDataset(train_ids, block_size)
        if len(train_dataset) == 0:
            raise InputError(f"--train_file {data_args.train_file} has {train_ids.numel()} "
                             f"tokens, fewer than one block of --block_size {block_size}")
    if training_args.do_eval:
        if data_args.validation_file is not None:
            eval_ids = tokenize_file(data_args.validation_file, tokenizer,
                                     data_args.text_column_name,
                                     data_args.separate_documents_with_eos)
            eval_dataset = BlockDataset(eval_ids, block_size)
            if len(eval_dataset) == 0:
                raise InputError(f"--validation_file {data_args.validation_file} has "
                                 f"{eval_ids.numel()} tokens, fewer than one block of "
                                 f"--block_size {block_size}")
        else:
            # Hold out the last blocks of the training text.
            n_blocks = len(train_dataset)
            n_eval = max(1, n_blocks * data_args.validation_split_percentage // 100)
            if n_blocks - n_eval < 1:
                raise InputError(f"--train_file has only {n_blocks} block(s) of --block_size "
                                 f"{block_size}; too few to hold out an evaluation split")
            split = (n_blocks - n_eval) * block_size
            eval_dataset = BlockDataset(train_dataset.token_ids[split:], block_size)
            train_dataset = BlockDataset(train_dataset.token_ids[:split], block_size)
        eval_dataset = eval_dataset.truncated(data_args.max_eval_samples)
    if training_args.do_train:
        train_dataset = train_dataset.truncated(data_args.max_train_samples)
    else:
        train_dataset = None

    word_dropout = wd_args.build()
    train_collator = None
    if word_dropout is not None and training_args.do_train:
        # A family whose masks cannot hide dropped tokens would train for nothing.
        problem = family_refusal(model)
        if problem is not None:
            raise InputError(problem)
        mode = word_dropout_attention_mode(wd_args.word_dropout_attention,
                                           model_args.attn_implementation,
                                           training_args.device, model.config)
        if mode == "flex":
            use_word_dropout_flex(model)
        else:
            attn = getattr(model.config, "_attn_implementation", None)
            if attn not in MASK_4D_ATTENTION:
                raise InputError(f"word dropout needs --attn_implementation "
                                 f"{' or '.join(MASK_4D_ATTENTION)} (4-D attention masks), "
                                 f"the model uses {attn!r}")
        heads = num_attention_heads(model.config) if word_dropout.independent_heads else 1
        # Each process draws its own masks. Dense masks replace the model's own, so they carry
        # its sliding windows and, for models reading positions from the 2-D mask, positions.
        train_collator = WordDropoutCollator(default_data_collator, word_dropout, heads,
                                             seed=training_args.seed + training_args.process_index,
                                             attention=mode, windows=attention_windows(model),
                                             position_ids=takes_position_ids(model))
        logger.info("Word dropout on training batches: %s (per-head: %s, attention: %s)",
                    word_dropout, word_dropout.independent_heads, mode)

    model = with_adapters(model, model_args, model_args.model_name_or_path, adapter_of,
                          "CAUSAL_LM", trainable=training_args.do_train)

    # TrainingArguments lost --logging_dir in transformers 5; the TensorBoard callback (built in
    # Trainer.__init__) reads TENSORBOARD_LOGGING_DIR instead.
    with environment_variable("TENSORBOARD_LOGGING_DIR", training_args.logging_dir):
        trainer = WordDropoutTrainer(
            model=model,
            args=training_args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            data_collator=default_data_collator,
            train_data_collator=train_collator,
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
        metrics = trainer.evaluate()
        metrics["eval_samples"] = len(eval_dataset)
        try:
            metrics["perplexity"] = math.exp(metrics["eval_loss"])
        except OverflowError:
            metrics["perplexity"] = float("inf")
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)  # eval_results.json and all_results.json
        results.update(metrics)

    if training_args.push_to_hub and training_args.do_train:
        trainer.push_to_hub(finetuned_from=model_args.model_name_or_path,
                            tasks="text-generation")
    return results
