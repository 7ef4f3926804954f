"""Adapter for Hugging Face causal language models (GPT-2, Llama, Qwen2, ...).

Only torch is imported here: the model is any ``PreTrainedModel``-like module whose
``forward`` takes ``input_ids`` / ``inputs_embeds`` and an additive 4-D ``attention_mask``.

Two ways to feed a sparse subset:

* **sparse** (models whose ``forward`` takes ``position_ids``): only the kept tokens, with
  their original position ids. Fast, and exactly what the paper evaluates. A batch of equal
  lengths (``SubsetBatch.equal_lengths``) runs with an all-ones 2-D mask, which transformers
  turns into the plain causal path (``is_causal`` in SDPA, fused kernels); the mask must be
  given, because without one transformers reads gaps in ``position_ids`` as packed sequences.
* **masked full sequence** (fallback for models without ``position_ids``): the prefix up to the
  predicting token with a 4-D mask in which every query sees itself and the kept positions.
  Numerically the same prediction (tested), at the cost of the full prefix length.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from ..adapter import AttentionMaps, Embeddings, SubsetBatch, eval_mode
from ..search import scores_from_logits
from ..word_dropout import self_attention_mask


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run with eager attention, restoring the model's own afterwards: fused kernels (SDPA,
    flash) do not return attention probabilities."""
    impl = getattr(model.config, "_attn_implementation", None)
    switch = impl not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(impl)


def _causal_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """``[N, 1, L, L]`` additive mask: causal, keys restricted to ``valid``, self always
    visible so a padding query never has an empty row (which would produce NaNs).

    Additive (0 or the dtype's minimum), not boolean: transformers 5 hands a 4-D mask to the
    attention function as it is, and eager attention adds it to the scores, so a boolean mask
    would silently add 1 to the allowed scores instead of hiding the others. SDPA takes either.
    """
    allowed = self_attention_mask(valid)[:, None]
    return torch.zeros(allowed.shape, dtype=dtype, device=valid.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def check_causal_lm(model: object) -> None:
    """Refuse, in one sentence, a model of another family: otherwise it fails deep inside the
    search with an error that names neither the model nor the fix."""
    name = type(model).__name__
    need = "HuggingFaceCausalLM needs a Hugging Face causal LM (AutoModelForCausalLM)"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{need}, got a {name}, which is not a torch module")
    if any(c.__module__.split(".")[0] == "fairseq" for c in type(model).__mro__):
        raise TypeError(f"{need}, got the fairseq model {name}; use "
                        "sequential_rationales.adapters.fairseq.FairseqLanguageModel or "
                        "FairseqTranslationModel")
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_output_embeddings"):
        raise TypeError(f"{need}, got {name}, which has no Hugging Face config; write a "
                        "ModelAdapter for other models (see sequential_rationales.adapter)")
    if getattr(config, "is_encoder_decoder", False):
        raise TypeError(f"{need}, got the encoder-decoder (seq2seq) model {name}; only "
                        "decoder-only language models can be rationalized with it")
    if model.get_output_embeddings() is None:
        raise TypeError(f"{need}, got {name}, which has no language-model head; load it "
                        "with AutoModelForCausalLM rather than AutoModel")
    if next(model.parameters(), None) is None:
        raise TypeError(f"{need}, got {name}, which has no parameters")


def absolute_position_embedding(model: nn.Module) -> nn.Module | None:
    """The learned absolute position table the model adds to the token embeddings (GPT-2's
    ``wpe``), or ``None`` for models that place positions inside attention (rotary: Llama,
    Qwen2, ...), whose first layer sees the token embedding alone."""
    base = getattr(model, "base_model", model)
    wpe = getattr(base, "wpe", None)
    if isinstance(wpe, nn.Embedding):
        return wpe
    for name in ("embed_positions", "position_embeddings"):
        if getattr(base, name, None) is not None:
            raise ValueError(
                f"{type(model).__name__} adds positions through `{name}`, which "
                "input_embedding does not handle; use the baseline signed_gradient_token")
    return None


def block_list(module: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder, decoder or base model (GPT-2
    ``h``, Llama/BART/Marian ``layers``, T5 ``block``)."""
    for name in ("layers", "h", "block"):
        blocks = getattr(module, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"{type(module).__name__} has no list of transformer blocks (looked for "
                     "`layers`, `h` and `block`)")


class HuggingFaceCausalLM:
    """:class:`~sequential_rationales.adapter.ModelAdapter` for a Hugging Face causal LM.

    ``baseline_defaults``: the gradient baselines as the paper's Hugging Face code defined them
    (signed gradient times token + position embedding; integrated gradients averaging 101 evenly
    spaced points, ends included, times the token embedding).
    """

    is_conditional = False
    baseline_defaults = {
        "integrated_gradient_steps": 100,
        "integrated_gradient_rule": "endpoints",
        "integrated_gradient_input": "token",
        "signed_gradient_input": "first_layer",
    }

    def __init__(self, model: nn.Module, use_position_ids: bool | None = None) -> None:
        check_causal_lm(model)
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.sparse = ("position_ids" in params) if use_position_ids is None else use_position_ids
        self._keeps_last_logits = "logits_to_keep" in params
        config = model.config
        out = model.get_output_embeddings()
        self.vocab_size = int(getattr(out, "out_features", 0) or config.vocab_size)
        self.max_positions = next(
            (int(v) for k in ("n_positions", "max_position_embeddings", "n_ctx")
             if (v := getattr(config, k, None))), None)
        self.device = next(model.parameters()).device
        self.dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()),
                          torch.float32)

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        """Run the model in eval mode (dropout off) for the duration."""
        return eval_mode(self.model)

    # -- layouts ---------------------------------------------------------------------------
    def _full_layout(self, batch: SubsetBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Scatter each sparse row to its original positions: column = position. Returns the
        gather index into the sparse row, the kept mask and each row's last position."""
        last = batch.target_positions[:, -1]
        length = int(last.max()) + 1
        n = len(batch)
        index = torch.zeros(n, length, dtype=torch.long, device=batch.target_ids.device)
        kept = torch.zeros(n, length, dtype=torch.bool, device=batch.target_ids.device)
        rows = torch.arange(n, device=index.device)[:, None].expand_as(batch.target_positions)
        cols = torch.arange(batch.target_ids.shape[1], device=index.device).expand_as(rows)
        m = batch.target_mask
        index[rows[m], batch.target_positions[m]] = cols[m]
        kept[rows[m], batch.target_positions[m]] = True
        return index, kept, last

    def _sparse_inputs(self, batch: SubsetBatch, embeds: Tensor | None) -> dict:
        """Model keyword arguments for the sparse rows of ``batch`` (last logits only)."""
        mask = (torch.ones_like(batch.target_ids) if batch.equal_lengths
                else _causal_mask(batch.target_mask, self.dtype))
        kwargs = {"position_ids": batch.target_positions, "attention_mask": mask}
        if embeds is None:
            kwargs["input_ids"] = batch.target_ids
        else:
            kwargs["inputs_embeds"] = embeds
        if self._keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        return kwargs

    def _forward(self, batch: SubsetBatch, embeds: Tensor | None) -> Tensor:
        if batch.source_ids is not None:
            raise ValueError("a causal LM takes no source tokens")
        if self.sparse:
            return self.model(**self._sparse_inputs(batch, embeds)).logits[:, -1]
        index, kept, last = self._full_layout(batch)
        n = len(batch)
        rows = torch.arange(n, device=index.device)
        # Beyond its last position a row is padding: only its own (self) attention matters.
        kwargs = {"attention_mask": _causal_mask(kept, self.dtype)}
        if embeds is None:
            kwargs["input_ids"] = torch.where(kept, batch.target_ids.gather(1, index), 0)
        else:
            full = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
            kwargs["inputs_embeds"] = full * kept[..., None]
        logits = self.model(**kwargs).logits
        return logits[rows, last]

    # -- prefix reuse (see SubsetScorer.extensions) ----------------------------------------
    def prefix_cache(self, batch: SubsetBatch) -> object | None:
        """Run equal-length rows and keep their keys and values, or ``None`` where this model's
        cache is not a list of plain per-layer key/value tensors (sliding windows, ...)."""
        if not (self.sparse and batch.equal_lengths):
            return None
        with self.evaluating():
            out = self.model(**self._sparse_inputs(batch, None), use_cache=True)
        cache = getattr(out, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
            return None
        return cache

    def score_after_prefix(self, cache: object, rows: Tensor, prefix_length: int,
                           batch: SubsetBatch, goals: Tensor) -> Tensor:
        """Scores of ``batch`` (equal lengths) continuing the first ``prefix_length`` cached
        tokens of cache row ``rows[i]``."""
        sliced = copy.copy(cache)  # the same cache type, holding the selected prefixes only
        sliced.layers = []
        for layer in cache.layers:
            part = copy.copy(layer)
            part.keys = layer.keys[rows, :, :prefix_length]
            part.values = layer.values[rows, :, :prefix_length]
            sliced.layers.append(part)
        ids = batch.target_ids
        mask = torch.ones(ids.shape[0], prefix_length + ids.shape[1], dtype=ids.dtype,
                          device=ids.device)
        with self.evaluating():
            logits = self.model(input_ids=ids, position_ids=batch.target_positions,
                                attention_mask=mask, past_key_values=sliced, use_cache=True,
                                logits_to_keep=1).logits[:, -1]
        return scores_from_logits(logits, goals)

    # -- ModelAdapter ----------------------------------------------------------------------
    def score(self, batch: SubsetBatch, goals: Tensor) -> Tensor:
        with self.evaluating():
            return scores_from_logits(self._forward(batch, None), goals)

    def logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """``[N, V]`` next-token logits (before the softmax) of each row."""
        with self.evaluating():
            return self._forward(batch, None if embeddings is None else embeddings.target)

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        return torch.log_softmax(self.logits(batch, embeddings).float(), dim=-1)

    hidden_time_major = False

    @property
    def hidden_target_by_position(self) -> bool:
        """Without position ids, rows run scattered to their positions (see ``layers``)."""
        return not self.sparse

    def layers(self) -> dict[str, list[nn.Module]]:
        """The transformer blocks, in order: ``{"source": [], "target": [...]}``; each block's
        first output is the hidden state ``[N, L, D]`` of the rows' columns."""
        return {"source": [], "target": list(block_list(self.model.base_model))}

    def embed(self, batch: SubsetBatch) -> Embeddings:
        return Embeddings(self.model.get_input_embeddings()(batch.target_ids))

    def input_embedding(self, batch: SubsetBatch) -> Embeddings:
        """What the first layer sees: token embedding plus the absolute position embedding of
        each token's original position (GPT-2); the token embedding alone for rotary models."""
        embeds = self.embed(batch).target
        wpe = absolute_position_embedding(self.model)
        if wpe is not None:
            embeds = embeds + wpe(batch.target_positions)
        return Embeddings(embeds)

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        if len(batch) != 1 or not bool(batch.target_mask.all()):
            raise ValueError("attentions() takes one unpadded full sequence")
        with eager_attention(self.model), self.evaluating():
            out = self.model(input_ids=batch.target_ids, output_attentions=True)
        if not out.attentions:
            raise ValueError(f"{type(self.model).__name__} returned no attention maps; the "
                             "attention baselines need output_attentions support")
        return AttentionMaps(torch.stack([a[0] for a in out.attentions]))
