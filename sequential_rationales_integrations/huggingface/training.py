"""Training pieces for Hugging Face causal LMs without the ``datasets`` library: documents read
from ``.txt``/``.json``/``.jsonl`` files, tokenized, joined and cut into fixed-size blocks, and
the choice of how word-dropout masks reach the model; the word-dropout flags the training
commands share (:class:`WordDropoutFlags`).

``sequential_rationales_experiments.commands.run_clm`` (``huggingface/run_clm.py``) assembles
them with :class:`~.word_dropout.WordDropoutTrainer`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import Dataset

from sequential_rationales.validation import InputError, read_utf8, utf8_lines
from sequential_rationales.word_dropout import WORD_DROPOUT_TYPES, WordDropout

from .config import model_max_positions
from .word_dropout import choose_word_dropout_attention

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DATA_SUFFIXES = (".txt", ".json", ".jsonl")
# Attention implementations known to use a given 4-D attention mask as is.
MASK_4D_ATTENTION = ("sdpa", "eager")


@dataclass
class WordDropoutFlags:
    """``--word_dropout_mixture`` and ``--word_dropout_type``, for ``HfArgumentParser``."""

    word_dropout_mixture: float = field(
        default=0.0,
        metadata={"help": "Probability that a training batch is word-dropped, in [0, 1] "
                          "(0 = ordinary training; the paper used 0.5)."})
    word_dropout_type: str = field(
        default="uniform_length",
        metadata={"help": "How many tokens a dropped example keeps: uniform_length (count "
                          "uniform on 0..T, recommended for language models) or "
                          "inverse_length (each token kept with probability 1/T)."})

    def __post_init__(self) -> None:
        if isinstance(self.word_dropout_mixture, bool) or not isinstance(
                self.word_dropout_mixture, (int, float)) or not (
                0.0 <= self.word_dropout_mixture <= 1.0):
            raise InputError("--word_dropout_mixture must be a probability in [0, 1], got "
                             f"{self.word_dropout_mixture!r}")
        if self.word_dropout_type not in WORD_DROPOUT_TYPES:
            raise InputError(f"--word_dropout_type must be one of {', '.join(WORD_DROPOUT_TYPES)}"
                             f", got {self.word_dropout_type!r}")

    def build(self, per_head: bool | None = None) -> WordDropout | None:
        """The configured :class:`WordDropout`, or ``None`` when the mixture is 0."""
        if self.word_dropout_mixture == 0.0:
            return None
        return WordDropout(self.word_dropout_mixture, self.word_dropout_type, per_head)


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

    def truncated(self, max_blocks: int | None) -> BlockDataset:
        if max_blocks is None or max_blocks >= self.num_blocks:
            return self
        return BlockDataset(self.token_ids[: max_blocks * self.block_size], self.block_size)


def read_documents(path: str, text_column: str = "text") -> Iterator[str]:
    """Yield the non-empty documents of a .txt (one per line), .json (a list of records or
    JSON Lines) or .jsonl file. Malformed JSON is an error naming the file and line."""
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        yield from (line for line in utf8_lines(path) if line.strip())
        return
    if suffix not in (".json", ".jsonl"):
        raise InputError(f"unsupported data file {path}; use {', '.join(DATA_SUFFIXES)}")
    lines = utf8_lines(path)
    head = next((line for line in lines if line.strip()), "")
    lines.close()
    if head.lstrip().startswith("["):
        try:
            records = ((path, record) for record in json.loads(read_utf8(path)))
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column "
                             f"{e.colno})") from None
    else:
        records = _json_lines(utf8_lines(path), path)
    for n, (where, record) in enumerate(records, 1):
        if not isinstance(record, dict) or not isinstance(record.get(text_column), str):
            raise InputError(f"{where}: record {n} has no string field {text_column!r} "
                             "(set --text_column_name)")
        if record[text_column].strip():
            yield record[text_column]


def _json_lines(lines: Iterator[str], path: str) -> Iterator[tuple[str, Any]]:
    """``("path:line", record)`` of each non-blank JSON line."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield f"{path}:{number}", json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{number}: invalid JSON line ({e.msg}, column "
                             f"{e.colno})") from None


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
        raise InputError(f"{path} contains no text")
    return torch.cat(chunks)


def resolve_block_size(requested: int | None, tokenizer: PreTrainedTokenizerBase,
                       config: Any) -> int:
    """``requested`` checked against the model's context, or the largest block the model and
    tokenizer allow, capped at 1024."""
    max_positions = model_max_positions(config)
    if requested is None:
        limits = [1024, tokenizer.model_max_length] + ([max_positions] if max_positions else [])
        return min(limits)
    if max_positions is not None and requested > max_positions:
        raise InputError(f"--block_size {requested} exceeds the model's {max_positions} "
                         "positions")
    if requested > tokenizer.model_max_length:
        logger.warning("--block_size %d is larger than the tokenizer's model_max_length %d",
                       requested, tokenizer.model_max_length)
    return requested


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
            raise InputError("--word_dropout_attention flex sets the attention implementation "
                             f"itself; drop --attn_implementation {attn_implementation}")
        logger.info("Word-dropout attention: mask (--attn_implementation %s was given)",
                    attn_implementation)
        return "mask"
    try:
        mode, reason = choose_word_dropout_attention(requested, device, config)
    except ValueError as e:
        raise InputError(f"--word_dropout_attention {requested}: {e}") from e
    # On a GPU, falling back to dense masks costs speed: say so loudly.
    slow = requested == "auto" and mode == "mask" and torch.device(device).type == "cuda"
    (logger.warning if slow else logger.info)("Word-dropout attention: %s (%s)", mode, reason)
    return mode
