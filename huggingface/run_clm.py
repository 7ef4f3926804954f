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

import contextlib
import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (``python huggingface/run_clm.py``): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import transformers  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    HfArgumentParser,
    PreTrainedTokenizerBase,
    TrainingArguments,
    default_data_collator,
    set_seed,
)

from huggingface.word_dropout import (  # noqa: E402
    WORD_DROPOUT_ATTENTION_MODES,
    WordDropoutCollator,
    WordDropoutTrainer,
    choose_word_dropout_attention,
    num_attention_heads,
    use_word_dropout_flex,
)
from sequential_rationales.word_dropout import WORD_DROPOUT_TYPES, WordDropout  # noqa: E402

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".txt", ".json", ".jsonl")
DTYPES = ("auto", "bfloat16", "float16", "float32")
# Attention implementations known to use a given 4-D attention mask as is.
MASK_4D_ATTENTION = ("sdpa", "eager")


@dataclass
class ModelArguments:
    """Which model, config and tokenizer to use (pretrained or trained from scratch)."""

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
    cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where to store models, configs and tokenizers downloaded from the "
                          "hub."})
    use_fast_tokenizer: bool = field(
        default=True,
        metadata={"help": "Use a fast (tokenizers-backed) tokenizer when one is available."})
    model_revision: str = field(
        default="main",
        metadata={"help": "Model version on the hub: a branch name, tag or commit id."})
    token: str | None = field(
        default=None,
        metadata={"help": "Hub access token for private models (defaults to the cached "
                          "login)."})
    trust_remote_code: bool = field(
        default=False,
        metadata={"help": "Allow models whose code lives in their hub repository. Only enable "
                          "for repositories you trust: their code runs on your machine."})
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
        if self.attention_dropout is not None and not 0.0 <= self.attention_dropout < 1.0:
            raise ValueError(f"--attention_dropout must be in [0, 1), got {self.attention_dropout}")
        if self.model_name_or_path is None and self.config_name is None and (
                self.model_type is None):
            raise ValueError("give --model_name_or_path (pretrained model) or, to train from "
                             "scratch, --model_type or --config_name")
        if self.config_overrides is not None and self.model_name_or_path is not None:
            raise ValueError("--config_overrides only applies when training from scratch; it "
                             "cannot be combined with --model_name_or_path")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")


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
                raise ValueError(f"{flag} must be a {', '.join(DATA_SUFFIXES)} file, got {path}")
            if not Path(path).is_file():
                raise FileNotFoundError(f"{flag} {path} does not exist")
        for flag, value in (("--block_size", self.block_size),
                            ("--max_train_samples", self.max_train_samples),
                            ("--max_eval_samples", self.max_eval_samples)):
            if value is not None and value < 1:
                raise ValueError(f"{flag} must be >= 1, got {value}")
        if not 0 < self.validation_split_percentage < 100:
            raise ValueError("--validation_split_percentage must be in 1..99, got "
                             f"{self.validation_split_percentage}")


@dataclass
class WordDropoutArguments:
    """Word dropout applied to training batches (compatibility training)."""

    word_dropout_mixture: float = field(
        default=0.0,
        metadata={"help": "Probability that a training batch is word-dropped, in [0, 1] "
                          "(0 = ordinary training; the paper used 0.5)."})
    word_dropout_type: str = field(
        default="uniform_length",
        metadata={"help": "How many tokens a dropped example keeps: uniform_length (count "
                          "uniform on 0..T, recommended for language models) or "
                          "inverse_length (each token kept with probability 1/T)."})
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
        if isinstance(self.word_dropout_mixture, bool) or not isinstance(
                self.word_dropout_mixture, (int, float)) or not (
                0.0 <= self.word_dropout_mixture <= 1.0):
            raise ValueError("--word_dropout_mixture must be a probability in [0, 1], got "
                             f"{self.word_dropout_mixture!r}")
        if self.word_dropout_type not in WORD_DROPOUT_TYPES:
            raise ValueError(f"--word_dropout_type must be one of {', '.join(WORD_DROPOUT_TYPES)}"
                             f", got {self.word_dropout_type!r}")
        if self.word_dropout_attention not in WORD_DROPOUT_ATTENTION_MODES:
            raise ValueError("--word_dropout_attention must be one of "
                             f"{', '.join(WORD_DROPOUT_ATTENTION_MODES)}, got "
                             f"{self.word_dropout_attention!r}")

    def build(self) -> WordDropout | None:
        """The configured :class:`WordDropout`, or ``None`` when the mixture is 0."""
        if self.word_dropout_mixture == 0.0:
            return None
        return WordDropout(self.word_dropout_mixture, self.word_dropout_type,
                           self.word_dropout_per_head)


@dataclass
class ClmTrainingArguments(TrainingArguments):
    """``TrainingArguments`` plus ``--logging_dir``, which transformers 5 no longer has."""

    logging_dir: str | None = field(
        default=None,
        metadata={"help": "TensorBoard log directory (with --report_to tensorboard). Default: "
                          "OUTPUT_DIR/runs/DATE_HOST, or $TENSORBOARD_LOGGING_DIR if set."})


class BlockDataset(Dataset):
    """Consecutive ``block_size`` slices of a token stream as causal-LM examples."""

    def __init__(self, token_ids: torch.Tensor, block_size: int) -> None:
        self.block_size = block_size
        self.num_blocks = token_ids.numel() // block_size
        self.token_ids = token_ids[: self.num_blocks * block_size]

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self.num_blocks:
            raise IndexError(f"block {index} out of range [0, {self.num_blocks})")
        block = self.token_ids[index * self.block_size: (index + 1) * self.block_size]
        # The model shifts labels itself; labels are a copy so in-place edits cannot alias.
        return {"input_ids": block.clone(), "labels": block.clone()}

    def truncated(self, max_blocks: int | None) -> "BlockDataset":
        if max_blocks is None or max_blocks >= self.num_blocks:
            return self
        return BlockDataset(self.token_ids[: max_blocks * self.block_size], self.block_size)


def read_documents(path: str, text_column: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of a .txt (one per line), .json (a list of records or
    JSON Lines) or .jsonl file."""
    suffix = Path(path).suffix.lower()
    with open(path, encoding="utf-8") as f:
        if suffix == ".txt":
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")
            return
        if suffix not in (".json", ".jsonl"):
            raise ValueError(f"unsupported data file {path}; use {', '.join(DATA_SUFFIXES)}")
        head = f.read(1)
        while head and head.isspace():
            head = f.read(1)
        f.seek(0)
        if head == "[":
            records = enumerate(json.load(f), 1)
        else:
            records = ((n, json.loads(line)) for n, line in enumerate(f, 1) if line.strip())
        for n, record in records:
            if not isinstance(record, dict) or not isinstance(record.get(text_column), str):
                raise ValueError(f"{path}: record {n} has no string field {text_column!r} "
                                 "(set --text_column_name)")
            if record[text_column].strip():
                yield record[text_column]


def tokenize_file(path: str, tokenizer: PreTrainedTokenizerBase, text_column: str,
                  add_eos: bool, batch_size: int = 1000) -> torch.Tensor:
    """All documents of ``path`` tokenized and joined into one 1-D ``LongTensor``."""
    eos = tokenizer.eos_token_id if add_eos else None
    chunks: list[torch.Tensor] = []

    def flush(batch: list[str]) -> None:
        # verbose=False: documents longer than the model are fine, they are cut into blocks.
        encoded = tokenizer(batch, verbose=False)["input_ids"]
        flat: list[int] = []
        for ids in encoded:
            flat.extend(ids)
            if eos is not None and (not ids or ids[-1] != eos):
                flat.append(eos)
        chunks.append(torch.tensor(flat, dtype=torch.long))

    batch: list[str] = []
    for document in read_documents(path, text_column):
        batch.append(document)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    if not chunks:
        raise ValueError(f"{path} contains no text")
    return torch.cat(chunks)


def model_max_positions(config: Any) -> int | None:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def resolve_block_size(requested: int | None, tokenizer: PreTrainedTokenizerBase,
                       config: Any) -> int:
    max_positions = model_max_positions(config)
    if requested is None:
        limits = [1024, tokenizer.model_max_length] + ([max_positions] if max_positions else [])
        return min(limits)
    if max_positions is not None and requested > max_positions:
        raise ValueError(f"--block_size {requested} exceeds the model's {max_positions} "
                         "positions")
    if requested > tokenizer.model_max_length:
        logger.warning("--block_size %d is larger than the tokenizer's model_max_length %d",
                       requested, tokenizer.model_max_length)
    return requested


def load_config(model_args: ModelArguments, hub_kwargs: dict[str, Any]) -> Any:
    if model_args.config_name:
        config = AutoConfig.from_pretrained(model_args.config_name, **hub_kwargs)
    elif model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path, **hub_kwargs)
    else:
        config = AutoConfig.for_model(model_args.model_type)
    if model_args.model_type is not None and config.model_type != model_args.model_type:
        raise ValueError(f"--model_type {model_args.model_type} does not match the config's "
                         f"model type {config.model_type}")
    if model_args.config_overrides:
        logger.info("Overriding config: %s", model_args.config_overrides)
        config.update_from_string(model_args.config_overrides)
    if model_args.attention_dropout is not None:
        names = [n for n in ("attn_pdrop", "attention_dropout") if hasattr(config, n)]
        if not names:
            raise ValueError(f"--attention_dropout: {type(config).__name__} has no attention "
                             "dropout setting (attn_pdrop or attention_dropout)")
        for name in names:
            setattr(config, name, model_args.attention_dropout)
    return config


def overridden_keys(config_overrides: str | None) -> set[str]:
    if not config_overrides:
        return set()
    return {item.split("=", 1)[0].strip() for item in config_overrides.split(",") if item}


def fit_config_to_tokenizer(config: Any, tokenizer: PreTrainedTokenizerBase,
                            keep: set[str]) -> None:
    """For a model trained from scratch: vocabulary size and special token ids from the
    tokenizer, unless set by --config_overrides."""
    if "vocab_size" not in keep:
        config.vocab_size = len(tokenizer)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if name not in keep and hasattr(config, name):
            setattr(config, name, getattr(tokenizer, name))


@contextlib.contextmanager
def environment_variable(name: str, value: str | None) -> Iterator[None]:
    """Temporarily set ``name`` (no-op for ``None``)."""
    if value is None:
        yield
        return
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def word_dropout_attention_mode(requested: str, attn_implementation: str | None,
                                device: torch.device, config: Any) -> str:
    """Resolve --word_dropout_attention to "flex" or "mask" (see the flag's help)."""
    if attn_implementation is not None and requested != "mask":
        if requested == "flex":
            raise ValueError("--word_dropout_attention flex sets the attention implementation "
                             f"itself; drop --attn_implementation {attn_implementation}")
        logger.info("Word-dropout attention: mask (--attn_implementation %s was given)",
                    attn_implementation)
        return "mask"
    try:
        mode, reason = choose_word_dropout_attention(requested, device, config)
    except ValueError as e:
        raise ValueError(f"--word_dropout_attention {requested}: {e}") from e
    # On a GPU, falling back to dense masks costs speed: say so loudly.
    slow = requested == "auto" and mode == "mask" and torch.device(device).type == "cuda"
    (logger.warning if slow else logger.info)("Word-dropout attention: %s (%s)", mode, reason)
    return mode


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
        raise ValueError("nothing to do: pass --do_train and/or --do_eval")
    if training_args.do_train and data_args.train_file is None:
        raise ValueError("--do_train needs --train_file")
    if training_args.do_eval and data_args.validation_file is None and (
            data_args.train_file is None):
        raise ValueError("--do_eval needs --validation_file (or a --train_file to split)")

    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
                        datefmt="%m/%d/%Y %H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    logger.info("Training arguments: %s", training_args)

    set_seed(training_args.seed)
    hub_kwargs = {"cache_dir": model_args.cache_dir, "revision": model_args.model_revision,
                  "token": model_args.token, "trust_remote_code": model_args.trust_remote_code}
    config = load_config(model_args, hub_kwargs)

    tokenizer_name = model_args.tokenizer_name or model_args.model_name_or_path
    if tokenizer_name is None:
        raise ValueError("training from scratch needs --tokenizer_name (a local tokenizer "
                         "directory or hub name); this script does not train tokenizers")
    tokenizer = AutoTokenizer.from_pretrained(
        tokenizer_name, use_fast=model_args.use_fast_tokenizer, **hub_kwargs)

    model_kwargs: dict[str, Any] = {}
    if model_args.attn_implementation is not None:
        model_kwargs["attn_implementation"] = model_args.attn_implementation
    if model_args.dtype is not None:
        model_kwargs["dtype"] = (model_args.dtype if model_args.dtype == "auto"
                                 else getattr(torch, model_args.dtype))
    if model_args.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(
            model_args.model_name_or_path, config=config, **hub_kwargs, **model_kwargs)
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
            raise ValueError(f"--train_file {data_args.train_file} has {train_ids.numel()} "
                             f"tokens, fewer than one block of --block_size {block_size}")
    if training_args.do_eval:
        if data_args.validation_file is not None:
            eval_ids = tokenize_file(data_args.validation_file, tokenizer,
                                     data_args.text_column_name,
                                     data_args.separate_documents_with_eos)
            eval_dataset = BlockDataset(eval_ids, block_size)
            if len(eval_dataset) == 0:
                raise ValueError(f"--validation_file {data_args.validation_file} has "
                                 f"{eval_ids.numel()} tokens, fewer than one block of "
                                 f"--block_size {block_size}")
        else:
            # Hold out the last blocks of the training text.
            n_blocks = len(train_dataset)
            n_eval = max(1, n_blocks * data_args.validation_split_percentage // 100)
            if n_blocks - n_eval < 1:
                raise ValueError(f"--train_file has only {n_blocks} block(s) of --block_size "
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
        mode = word_dropout_attention_mode(wd_args.word_dropout_attention,
                                           model_args.attn_implementation,
                                           training_args.device, model.config)
        if mode == "flex":
            use_word_dropout_flex(model)
        else:
            attn = getattr(model.config, "_attn_implementation", None)
            if attn not in MASK_4D_ATTENTION:
                raise ValueError(f"word dropout needs --attn_implementation "
                                 f"{' or '.join(MASK_4D_ATTENTION)} (4-D attention masks), "
                                 f"the model uses {attn!r}")
        heads = num_attention_heads(model.config) if word_dropout.independent_heads else 1
        # Each process draws its own masks.
        train_collator = WordDropoutCollator(default_data_collator, word_dropout, heads,
                                             seed=training_args.seed + training_args.process_index,
                                             attention=mode)
        logger.info("Word dropout on training batches: %s (per-head: %s, attention: %s)",
                    word_dropout, word_dropout.independent_heads, mode)

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


if __name__ == "__main__":
    main()
