"""Word dropout for Hugging Face encoder-decoder models (Marian, BART, T5): compatibility
fine-tuning of translation models, and the translation data it reads.

A word-dropped batch reaches the model the way
:class:`~sequential_rationales.adapters.huggingface_seq2seq.HuggingFaceSeq2Seq` feeds a subset at
rationalization time, so training sees the kind of input the search asks about:

* the source keep-set is the 2-D encoder ``attention_mask``, which hides the dropped source
  tokens from encoder self-attention and from cross-attention; the final source token (the
  ``</s>``) is always kept, so cross-attention always has a key;
* the target keep-set becomes a 4-D decoder mask ``[B, 1, T, T]``: causal, kept keys only, every
  query sees itself (so the previous token is always visible), padding never kept. The
  collator builds it boolean; :class:`Seq2SeqWordDropoutTrainer` makes it additive in the
  model's dtype before the forward pass, as the adapter does (eager attention, and T5's own,
  add a 4-D mask to the scores as it is).

Labels are untouched: every target position is still predicted. One keep-set is drawn per
example and side (not per head: the encoder mask is 2-D). Evaluation batches see full contexts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import Seq2SeqTrainer

from sequential_rationales.validation import InputError, read_utf8
from sequential_rationales.word_dropout import (
    WordDropout,
    self_attention_mask,
    word_dropout_keep_mask,
)

from .training import _json_lines
from .word_dropout import WordDropoutCollator, WordDropoutTrainer, additive_mask

__all__ = [
    "Seq2SeqWordDropoutCollator",
    "Seq2SeqWordDropoutTrainer",
    "last_token_mask",
    "read_translation_pairs",
]

TRANSLATION_SUFFIXES = (".json", ".jsonl")


def last_token_mask(valid: Tensor) -> Tensor:
    """``[B, L]`` bool: the last ``True`` of each row of ``valid`` (the source ``</s>``,
    whichever side is padded)."""
    index = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    last = index.masked_fill(~valid, -1).max(dim=1).values.clamp(min=0)
    return torch.nn.functional.one_hot(last, valid.shape[1]).bool() & valid


class Seq2SeqWordDropoutCollator(WordDropoutCollator):
    """Wrap a seq2seq data collator (e.g. ``DataCollatorForSeq2Seq``) so that, with
    probability ``word_dropout.mixture``, a batch is word-dropped on both sides.

    The base batch needs ``input_ids``, a 2-D ``attention_mask`` and ``labels`` (padded with
    ``label_pad_token_id``; decoder position ``i`` predicts ``labels[:, i]``). A dropped batch
    gets ``attention_mask`` = the source keep-set (same dtype, final source token kept) and a
    boolean ``decoder_attention_mask`` ``[B, 1, T, T]``; ``labels`` and ``decoder_input_ids``
    are left as they are. The generator, its seeding and its checkpointed state are those of
    :class:`WordDropoutCollator`.
    """

    def __init__(self, base_collator: Callable[[list[Any]], Mapping[str, Any]],
                 word_dropout: WordDropout, seed: int, label_pad_token_id: int = -100) -> None:
        super().__init__(base_collator, word_dropout, num_heads=1, seed=seed, attention="mask")
        self.label_pad_token_id = label_pad_token_id

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        batch = dict(self.base_collator(features))
        input_ids, mask, labels = (batch.get(k) for k in ("input_ids", "attention_mask",
                                                          "labels"))
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            raise InputError("seq2seq word dropout needs 2-D `input_ids` [batch, source_len]")
        if not isinstance(mask, Tensor) or mask.shape != input_ids.shape:
            raise InputError("seq2seq word dropout needs a 2-D `attention_mask` shaped like "
                             f"`input_ids` {list(input_ids.shape)}, got "
                             f"{getattr(mask, 'shape', type(mask).__name__)}")
        if not isinstance(labels, Tensor) or labels.dim() != 2:
            raise InputError("seq2seq word dropout needs 2-D `labels` [batch, target_len]")
        rng = self._batch_rng()
        if not self.word_dropout.apply_to_batch(rng):
            return batch
        kind = self.word_dropout.kind
        source = mask.to("cpu", torch.bool)
        source_keep = word_dropout_keep_mask(source, kind, rng,
                                             always_keep=last_token_mask(source))
        target_keep = word_dropout_keep_mask(labels.cpu() != self.label_pad_token_id, kind, rng)
        batch["attention_mask"] = source_keep.to(mask.dtype)
        batch["decoder_attention_mask"] = self_attention_mask(target_keep, causal=True)[:, None]
        return batch


class Seq2SeqWordDropoutTrainer(WordDropoutTrainer, Seq2SeqTrainer):
    """``Seq2SeqTrainer`` whose training batches come from ``train_data_collator`` (e.g. a
    :class:`Seq2SeqWordDropoutCollator`, its generator state saved with every checkpoint and
    restored on resume) while evaluation and generation keep ``data_collator``.

    A boolean 4-D ``decoder_attention_mask`` becomes additive in the model's dtype before the
    forward pass: eager attention (and T5's attention with its position bias) adds a 4-D mask
    to the scores as it is, and SDPA takes the additive form as well."""

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any
                     ) -> Any:
        mask = inputs.get("decoder_attention_mask")
        if isinstance(mask, Tensor) and mask.dim() == 4 and mask.dtype == torch.bool:
            inputs = {**inputs, "decoder_attention_mask": additive_mask(mask, model)}
        return super().compute_loss(model, inputs, *args, **kwargs)


def read_translation_pairs(path: str, source_lang: str, target_lang: str
                           ) -> list[tuple[str, str]]:
    """``(source, target)`` texts of a ``.json``/``.jsonl`` file of records
    ``{"translation": {source_lang: "...", target_lang: "..."}}`` (JSON lines, or one JSON
    list). Errors name the file, the line and what is missing."""
    if Path(path).suffix.lower() not in TRANSLATION_SUFFIXES:
        raise InputError(f"{path}: translation data must be a {' or '.join(TRANSLATION_SUFFIXES)} "
                         'file of records {"translation": {"<src>": "...", "<tgt>": "..."}}')
    text = read_utf8(path)
    if text.lstrip().startswith("["):
        try:
            records = [(f"{path}: record {n}", r) for n, r in enumerate(json.loads(text), 1)]
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})"
                             ) from None
    else:
        records = list(_json_lines(text.splitlines(), path))
    pairs = []
    for where, record in records:
        pair = record.get("translation") if isinstance(record, dict) else None
        if not isinstance(pair, dict):
            raise InputError(f'{where}: expected a record {{"translation": {{"{source_lang}": '
                             f'"...", "{target_lang}": "..."}}}}, got {str(record)[:80]}')
        for lang in (source_lang, target_lang):
            if not isinstance(pair.get(lang), str):
                raise InputError(f"{where}: the translation has no {lang!r} text (it has "
                                 f"{', '.join(map(repr, pair)) or 'no keys'}); check "
                                 "--source_lang and --target_lang")
        pairs.append((pair[source_lang], pair[target_lang]))
    if not pairs:
        raise InputError(f"{path} contains no translation pairs")
    return pairs
