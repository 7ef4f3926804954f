"""Adapter for Hugging Face encoder-decoder models (Marian, BART, T5, ...), e.g. translation.

Only torch is imported here: the model is any `PreTrainedModel`-like encoder-decoder whose
`forward` takes `input_ids`, `attention_mask`, `decoder_input_ids`,
`decoder_attention_mask` and `encoder_outputs` (`get_encoder()`, `get_decoder()`).

Conventions (the same as the fairseq translation adapter):

* The source ends with the tokenizer's `</s>` (`config.eos_token_id`), which is always
  visible and never a candidate: the adapter puts it back, at its original position
  `source_length - 1`, into every subset.
* The target starts with `config.decoder_start_token_id` (Marian and T5: the pad id; BART:
  `</s>`), as `model.generate` returns it; that first token is `target_bos`.

Positions: these models compute absolute (Marian, BART) or relative (T5) positions from the
order of the sequence and take no `position_ids`. A subset is therefore fed as the **masked
full sequence**: the whole source with a 2-D `attention_mask` hiding the dropped source tokens
from the encoder and from cross-attention, and the target prefix up to the predicting token
with a 4-D additive decoder mask in which every query sees itself and the kept earlier tokens.
Each kept token then sits at its original position and sees only kept tokens: the prediction
equals that of the sparse subset at its original positions (tested against such a reference).
The 4-D mask is additive (0 / dtype minimum): transformers passes a 4-D mask through unchanged,
and the eager attention of these models adds it to the scores, so a boolean mask would be wrong
there; SDPA takes the additive mask as well.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from ..adapter import (
    AttentionMaps,
    Embeddings,
    SubsetBatch,
    dtype_twin,
    eval_mode,
    input_device,
    parameter_dtype,
)
from ..search import scores_from_logits
from ..validation import InputError
from .huggingface import block_list, causal_mask, eager_attention

# Encoder-decoders whose subsets this adapter cannot feed exactly: (applies?, why).
_SEQ2SEQ_REFUSALS = {
    "prophetnet": (lambda config: True, "its n-gram decoder streams build their own masks "
                   "and reject a 4-D decoder mask"),
    "fsmt": (lambda config: True, "its encoder exposes no input embeddings to substitute"),
    "t5gemma2": (lambda config: getattr(config, "_attn_implementation", "eager") != "eager",
                 "its merged self- and cross-attention does not apply a 4-D decoder mask "
                 "exactly except with attn_implementation='eager'"),
}


def check_seq2seq(model: object) -> None:
    """Refuse, in one sentence, what is not a Hugging Face encoder-decoder model.

    Args:
        model: The object given to the adapter.

    Raises:
        TypeError: When `model` is not a torch module, has no Hugging Face config or encoder,
            is not an encoder-decoder (a decoder-only LM, a speech or multimodal model), has no
            language-model head (loaded with `AutoModel`), or its config lacks `eos_token_id`,
            `pad_token_id` or `decoder_start_token_id`.
        InputError: For a family whose subsets cannot be fed exactly (ProphetNet, FSMT,
            T5Gemma 2 except with eager attention).
    """
    name = type(model).__name__
    need = "HuggingFaceSeq2Seq needs a Hugging Face encoder-decoder model " \
        "(AutoModelForSeq2SeqLM: Marian, BART, T5, ...)"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{need}, got a {name}, which is not a torch module")
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_encoder"):
        raise TypeError(f"{need}, got {name}, which has no Hugging Face config or encoder")
    if not getattr(config, "is_encoder_decoder", False):
        raise TypeError(f"{need}, got {name}, whose config is not an encoder-decoder's (a "
                        "decoder-only LM goes to sequential_rationales.adapters.huggingface."
                        "HuggingFaceCausalLM; speech and multimodal models are not supported)")
    if model.get_output_embeddings() is None:
        raise TypeError(f"{need}, got {name}, which has no language-model head; load it "
                        "with AutoModelForSeq2SeqLM rather than AutoModel")
    refusal = _SEQ2SEQ_REFUSALS.get(getattr(config, "model_type", None))
    if refusal is not None and refusal[0](config):
        raise InputError(f"{name} cannot be rationalized exactly: {refusal[1]}")
    for key in ("eos_token_id", "pad_token_id", "decoder_start_token_id"):
        if getattr(config, key, None) is None:
            raise TypeError(f"{need}; {name}'s config has no {key}")


@contextlib.contextmanager
def _hooked(module: nn.Module, hook: Callable, pre: bool = False) -> Iterator[None]:
    """Install a forward (pre-)hook for the duration of one call."""
    handle = (module.register_forward_pre_hook(hook) if pre
              else module.register_forward_hook(hook))
    try:
        yield
    finally:
        handle.remove()


def _replace_embeddings(module: nn.Module, embeddings: Tensor | None, placed: Tensor
                        ) -> contextlib.AbstractContextManager[None]:
    """While active, `module`'s output takes `embeddings` where `placed` is `True`.

    The gradient baselines substitute token embeddings this way rather than through
    `inputs_embeds`: models differ in where they scale embeddings (Marian 5.x multiplies
    `decoder_inputs_embeds` by `embed_scale` but not encoder `inputs_embeds`), while the
    output of `embed_tokens` means the same thing in every model.
    """
    if embeddings is None:
        return contextlib.nullcontext()

    def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
        return torch.where(placed[..., None], embeddings.to(output.dtype), output)

    return _hooked(module, hook)


def _last_positions_only(head: nn.Module, last: Tensor) -> contextlib.AbstractContextManager:
    """While active, the output head projects only the hidden state at column `last[i]` of
    row `i` (logits `[N, 1, V]`): rows of a batch predict at different columns, and the
    vocabulary projection of every other column would be wasted. Anything the model adds after
    the head (Marian's and BART's `final_logits_bias`) still applies."""
    def hook(_module: nn.Module, args: tuple) -> tuple:
        hidden = args[0]
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return (hidden[rows, last.to(hidden.device)][:, None], *args[1:])

    return _hooked(head, hook, pre=True)


def _scatter_layout(positions: Tensor, mask: Tensor, length: int) -> tuple[Tensor, Tensor]:
    """Sparse rows to full rows where column = original position: the index of each column's
    token in its sparse row, and which columns are kept."""
    n = positions.shape[0]
    index = torch.zeros(n, length, dtype=torch.long, device=positions.device)
    kept = torch.zeros(n, length, dtype=torch.bool, device=positions.device)
    rows = torch.arange(n, device=positions.device)[:, None].expand_as(positions)
    cols = torch.arange(positions.shape[1], device=positions.device).expand_as(rows)
    index[rows[mask], positions[mask]] = cols[mask]
    kept[rows[mask], positions[mask]] = True
    return index, kept


def _gather_layout(values: Tensor, index: Tensor, kept: Tensor, fill: int) -> Tensor:
    """Token ids of the full rows: kept columns from `values`, the others `fill`."""
    return torch.where(kept, values.gather(1, index), fill)


def _gather_embeddings(embeddings: Tensor | None, index: Tensor) -> Tensor | None:
    if embeddings is None:
        return None
    return embeddings.gather(1, index[..., None].expand(-1, -1, embeddings.shape[-1]))


def _max_positions(config: object) -> int | None:
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if value else None


class HuggingFaceSeq2Seq:
    """[`ModelAdapter`][sequential_rationales.adapter.ModelAdapter] for a Hugging Face
    encoder-decoder (Marian, BART, T5, ...), e.g. a translation model.

    These models take no `position_ids`, so a subset is fed as the masked full sequence: the
    whole source with a 2-D `attention_mask` hiding the dropped source tokens (from the encoder
    and from cross-attention), and the target prefix up to the predicting token with an additive
    4-D decoder mask in which every query sees itself and the kept earlier tokens. Each kept token
    sits at its original position and sees only kept tokens.

    The source ends with the tokenizer's `</s>` (`config.eos_token_id`), which is always visible
    and never a candidate: the adapter puts it back, at position `source_length - 1`, into every
    subset. The target starts with `config.decoder_start_token_id`, as `model.generate` returns
    it. Token embeddings are substituted at the output of the encoder's and decoder's
    `embed_tokens`, which means the same thing in every model. An adapter serves one source
    length: build one per sentence (they share any dtype copies of the model).

    Args:
        model: An encoder-decoder with a language-model head, e.g.
            `AutoModelForSeq2SeqLM.from_pretrained(...)` (Marian, BART, T5).
        source_length: Length of the full source *including* its final `</s>`.

    Raises:
        TypeError: When `model` is not a Hugging Face encoder-decoder with a language-model head
            (see `check_seq2seq`).
        InputError: For a family whose subsets cannot be fed exactly.

    Attributes:
        model: The wrapped model.
        source_length: Length of the full source, final `</s>` included.
        source_eos: The `</s>` id that ends every source (`config.eos_token_id`).
        source_pad: The pad id, which a source must not contain.
        target_bos: The decoder's start id (`config.decoder_start_token_id`; Marian and T5: the
            pad id; BART: `</s>`).
        pad: The id a target must not contain: the pad id, or -1 where the decoder starts with
            the pad id itself (Marian, T5), so that no target id is refused as padding.
        vocab_size: The output vocabulary size.
        source_vocab_size: The encoder's embedding table size.
        max_positions: The config's `max_position_embeddings`, else `None`.
        max_source_positions: The same, for sources.
        device: Where inputs go (under `device_map`, the input embedding's execution device).
        dtype: The dtype of the model's floating-point parameters.
        is_conditional: Always `True`.
        hidden_time_major: Always `False`: the blocks' hidden states are `[N, L, D]`.
        hidden_target_by_position: Always `True`: the decoder runs the full target prefix, column
            = position, dropped tokens masked.
    """

    is_conditional = True

    def __init__(self, model: nn.Module, source_length: int) -> None:
        check_seq2seq(model)
        self.model = model
        config = model.config
        self.source_length = int(source_length)
        self.source_eos = int(config.eos_token_id)
        self.source_pad = int(config.pad_token_id)
        # What dropped columns hold (masked, so never seen): not the pad id, from which
        # M2M100, NLLB and SeamlessM4T count positions, shifting every later token.
        self.filler = self.source_eos
        self.target_bos = int(config.decoder_start_token_id)
        # ``pad`` is the id a target must not contain. Marian and T5 begin the decoder with
        # the pad id itself, so for them no target id can be refused as padding (-1).
        self.pad = -1 if config.pad_token_id == self.target_bos else int(config.pad_token_id)
        self.encoder_embeddings = model.get_encoder().get_input_embeddings()
        self.decoder_embeddings = model.get_decoder().get_input_embeddings()
        head = model.get_output_embeddings()
        self.vocab_size = int(getattr(head, "out_features", 0) or config.vocab_size)
        self.source_vocab_size = int(self.encoder_embeddings.num_embeddings)
        self.max_positions = _max_positions(config)
        self.max_source_positions = _max_positions(config)
        self.device = input_device(model, model.get_input_embeddings())
        self.dtype = parameter_dtype(model)
        self._twins: dict[torch.dtype, tuple[tuple, HuggingFaceSeq2Seq]] = {}  # dtype_twin

    def with_dtype(self, dtype: torch.dtype) -> HuggingFaceSeq2Seq:
        """This adapter on a copy of the model in `dtype`.

        The copy is made once and kept (it costs the model's size in `dtype`); it is the screening
        twin of `precision="bf16-exact"` and runs the whole search for `precision="bf16"`.

        Args:
            dtype: The dtype of the copy, e.g. `torch.bfloat16`.

        Returns:
            This adapter for its own dtype, else an adapter of the same source length on the copy.

        Raises:
            InputError: When the model is spread over devices by `device_map`.
        """
        return dtype_twin(self, dtype,
                          lambda twin: HuggingFaceSeq2Seq(twin, self.source_length))

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        """Run the model in eval mode (dropout off) for the duration.

        Returns:
            A context manager (see [`eval_mode`][sequential_rationales.adapter.eval_mode]).
        """
        return eval_mode(self.model)

    # -- layouts ---------------------------------------------------------------------------
    def _source(self, batch: SubsetBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Full source ids `[N, source_length]`, its kept mask (the final `</s>` always
        kept) and the gather index from the sparse rows."""
        assert batch.source_ids is not None and batch.source_positions is not None
        assert batch.source_mask is not None
        index, kept = _scatter_layout(batch.source_positions, batch.source_mask,
                                      self.source_length)
        kept[:, -1] = True
        ids = _gather_layout(batch.source_ids, index, kept, self.filler)
        ids[:, -1] = self.source_eos
        return ids, kept, index

    def _target(self, batch: SubsetBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Full target prefix ids `[N, L]` (`L` = the last predicting position + 1), the
        kept mask, the gather index and each row's predicting column."""
        last = batch.target_positions[:, -1]
        index, kept = _scatter_layout(batch.target_positions, batch.target_mask,
                                      int(last.max()) + 1)
        ids = _gather_layout(batch.target_ids, index, kept, self.filler)
        return ids, kept, index, last

    def _decoder_mask(self, kept: Tensor) -> Tensor:
        """Additive `[N, 1, L, L]` mask: causal, kept keys only, every query sees itself (a
        padding column past a row's last position then has a defined, unused output)."""
        return causal_mask(kept, self.dtype)

    # -- forward ---------------------------------------------------------------------------
    def _logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """`[N, V]` next-token logits of each row's predicting (last kept) target token."""
        src_ids, src_kept, src_index = self._source(batch)
        tgt_ids, tgt_kept, tgt_index, last = self._target(batch)
        src_emb = tgt_emb = None
        if embeddings is not None:
            src_emb = _gather_embeddings(embeddings.source, src_index)
            tgt_emb = _gather_embeddings(embeddings.target, tgt_index)
        # The final </s> keeps the model's own embedding: it is not an input being explained.
        src_placed = src_kept.clone()
        src_placed[:, -1] = False
        with self.evaluating():
            with _replace_embeddings(self.encoder_embeddings, src_emb, src_placed):
                encoded = self.model.get_encoder()(input_ids=src_ids, attention_mask=src_kept)
            with _replace_embeddings(self.decoder_embeddings, tgt_emb, tgt_kept), \
                    _last_positions_only(self.model.get_output_embeddings(), last):
                out = self.model(encoder_outputs=encoded, attention_mask=src_kept,
                                 decoder_input_ids=tgt_ids,
                                 decoder_attention_mask=self._decoder_mask(tgt_kept),
                                 use_cache=False)
        return out.logits[:, -1]

    # -- ModelAdapter ----------------------------------------------------------------------
    def score(self, batch: SubsetBatch, goals: Tensor) -> Tensor:
        """Reduce each row's next-token prediction to the three numbers the search needs.

        Args:
            batch: `N` sparse subsets of source and target tokens.
            goals: `[N]` the goal token id of each row.

        Returns:
            `[N, 3]` float64 on the device of the model's output: `log p(goal)`, the argmax id
                and `log p(argmax)` per row.
        """
        return scores_from_logits(self._logits(batch), goals)

    def logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Next-token logits (before the softmax) of each row's predicting target token.

        Args:
            batch: `N` sparse subsets of source and target tokens.
            embeddings: Token embeddings that replace the outputs of the encoder's and decoder's
                `embed_tokens` at the kept tokens (the appended `</s>` keeps its own); `None`: the
                batch's token ids.

        Returns:
            `[N, V]` logits.
        """
        return self._logits(batch, embeddings)

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Log-probabilities of the next target token of each row.

        Args:
            batch: `N` sparse subsets of source and target tokens.
            embeddings: As for `logits`.

        Returns:
            `[N, V]` float32 log-probabilities.
        """
        return torch.log_softmax(self._logits(batch, embeddings).float(), dim=-1)

    hidden_time_major = False
    hidden_target_by_position = True  # the full target prefix, dropped tokens masked

    def layers(self) -> dict[str, list[nn.Module]]:
        """The transformer blocks of the encoder and of the decoder, in order.

        Returns:
            `{"source": [...], "target": [...]}`: the encoder's blocks (hidden states over the
                full source, final `</s>` included) and the decoder's (over the full target
                prefix).
        """
        return {"source": list(block_list(self.model.get_encoder())),
                "target": list(block_list(self.model.get_decoder()))}

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """The outputs of the encoder's and decoder's `embed_tokens` for the batch's ids.

        This is what `log_probs` substitutes; any later constant scaling is the model's.

        Args:
            batch: `N` sparse subsets of source and target tokens.

        Returns:
            `target` `[N, Lt, D]` and `source` `[N, Ls, D]`.
        """
        return Embeddings(self.decoder_embeddings(batch.target_ids),
                          self.encoder_embeddings(batch.source_ids))

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Decoder self-, cross- and encoder attention of one full sequence.

        The appended `</s>` is left out of the maps (context the search never chooses).

        Args:
            batch: One row without padding.

        Returns:
            `decoder_self` `[layers, heads, T, T]`, `cross` `[layers, heads, T, S]` and
                `encoder_self` `[layers, heads, S, S]`, with `S = source_length - 1`.

        Raises:
            ValueError: When `batch` is not one unpadded row, or the model returns no attention
                maps.
        """
        if len(batch) != 1 or not bool(batch.target_mask.all()):
            raise ValueError("attentions() takes one unpadded full sequence")
        src_ids, _, _ = self._source(batch)
        with eager_attention(self.model), self.evaluating():
            out = self.model(input_ids=src_ids, decoder_input_ids=batch.target_ids,
                             output_attentions=True, use_cache=False)
        if not out.decoder_attentions or not out.cross_attentions:
            raise ValueError(f"{type(self.model).__name__} returned no attention maps; the "
                             "attention baselines need output_attentions support")
        s = self.source_length - 1
        decoder = torch.stack([a[0] for a in out.decoder_attentions])
        cross = torch.stack([a[0] for a in out.cross_attentions])[..., :s]
        encoder = torch.stack([a[0] for a in out.encoder_attentions])[..., :s, :s]
        return AttentionMaps(decoder, cross, encoder)
