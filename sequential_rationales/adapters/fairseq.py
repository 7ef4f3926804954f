"""Adapters for fairseq models built by the project's plugin.

The plugin (`sequential_rationales_integrations.fairseq`) provides architectures whose
encoders and decoders take original `positions`, a `keep` mask, `token_embeddings` and
`return_all_attentions`; stock fairseq architectures cannot place tokens at their original
positions and are refused. Only torch is imported here: the fairseq model object is passed in.

fairseq conventions handled here:

* Position ids of the core are 0-based; the plugin adds fairseq's `padding_idx + 1` offset.
* Padding slots get the dictionary's pad index.
* Translation: the source `</s>` is always visible, as in word-dropout training (the plugin
  keeps it whenever the other source tokens are dropped). The rationalized source is therefore
  the source without its final `</s>`; the adapter appends the `</s>` (at its original
  position) to every subset, so a subset with no source tokens still has a defined memory.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from ..adapter import (
    AttentionMaps,
    Embeddings,
    SubsetBatch,
    dtype_twin,
    eval_mode,
    parameter_dtype,
)
from ..search import scores_from_logits


def unwrap_model(model: nn.Module) -> nn.Module:
    """The fairseq model inside a hub interface.

    Args:
        model: A hub interface (`GeneratorHubInterface`, with `models`) or a model.

    Returns:
        The interface's first model, or `model` itself.
    """
    return model.models[0] if hasattr(model, "models") else model


def _check_plugin_module(module: nn.Module, role: str) -> None:
    """Stock fairseq encoders and decoders cannot place tokens at their original positions,
    which every subset needs: say which architectures can, instead of a framework traceback."""
    if "positions" not in inspect.signature(module.forward).parameters:
        raise TypeError(
            f"the model's {role} ({type(module).__name__}) takes no `positions`: it is a stock "
            "fairseq architecture; rationalize models of the plugin's architectures "
            "(sequential_rationales_integrations.fairseq: --arch compatible_transformer*, "
            "compatible_transformer_lm*, transformer_lm_majority_class)")


def _keep(batch: SubsetBatch) -> Tensor | None:
    """The decoder's key mask: none when no row is padded (the plugin's causal fast path)."""
    return None if batch.equal_lengths else batch.target_mask


def _max_positions(value: object, index: int) -> int | None:
    if isinstance(value, tuple):
        value = value[index]
    return int(value) if value else None


def first_layer_input(module: nn.Module, ids: Tensor, positions: Tensor, mask: Tensor
                      ) -> Tensor:
    """What the first layer of a plugin encoder or decoder receives.

    That is `embed_scale * embed_tokens(ids) + positions` at the original `positions`
    (`first_layer_embedding` of the paper's fairseq code).

    Args:
        module: A plugin encoder or decoder.
        ids: `[N, L]` token ids.
        positions: `[N, L]` their original 0-based positions.
        mask: `[N, L]` bool, `True` on real tokens (padding keeps the padding position).

    Returns:
        `[N, L, D]` first-layer input.

    Raises:
        ValueError: When the module transforms its input further (`layernorm_embedding`,
            `project_in_dim`, `quant_noise`): the baselines then cannot take d/dx from
            d/d(token embedding); use `signed_gradient_token` or
            `integrated_gradient_midpoint`.
    """
    from sequential_rationales_integrations.fairseq.modules import embed_original_positions

    for name in ("layernorm_embedding", "project_in_dim", "quant_noise"):
        if getattr(module, name, None) is not None:
            raise ValueError(f"the model's {type(module).__name__} has {name}: its first "
                             "layer's input is not embed_scale * token + position; use the "
                             "baselines signed_gradient_token / integrated_gradient_midpoint")
    x = module.embed_scale * module.embed_tokens(ids)
    if module.embed_positions is not None:
        x = x + embed_original_positions(module.embed_positions, positions, ~mask)
    return x


# The gradient baselines as the paper's fairseq code defined them: gradient x first-layer input,
# and integrated gradients averaging 51 evenly spaced points (ends included) times that input.
FAIRSEQ_BASELINE_DEFAULTS = {
    "integrated_gradient_steps": 50,
    "integrated_gradient_rule": "endpoints",
    "integrated_gradient_input": "first_layer",
    "signed_gradient_input": "first_layer",
}


class _NextTokenScores:
    """What both adapters derive from their next-token logits (`_logits`)."""

    baseline_defaults = FAIRSEQ_BASELINE_DEFAULTS

    def _logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        raise NotImplementedError

    def logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Next-token logits (before the softmax) of each row.

        Args:
            batch: `N` sparse subsets.
            embeddings: Token embeddings (before `embed_scale` and positions) that replace the
                lookup of `embed_tokens`; `None`: the batch's token ids.

        Returns:
            `[N, V]` logits of the last position of each row.
        """
        return self._logits(batch, embeddings)

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Log-probabilities of the next target token of each row.

        Args:
            batch: `N` sparse subsets.
            embeddings: As for `logits`.

        Returns:
            `[N, V]` float32 log-probabilities.
        """
        return torch.log_softmax(self._logits(batch, embeddings).float(), dim=-1)

    hidden_time_major = True
    hidden_target_by_position = False

    def layers(self) -> dict[str, list[nn.Module]]:
        """The transformer layers of the encoder and of the decoder, in order.

        Returns:
            `{"source": [...], "target": [...]}`: the encoder's layers (none for a language
                model) and the decoder's. fairseq layers return time-major `[L, N, D]` states.
        """
        encoder = getattr(self.model, "encoder", None)
        return {"source": [] if encoder is None else list(encoder.layers),
                "target": list(self.model.decoder.layers)}

    def score(self, batch: SubsetBatch, goals: Tensor) -> Tensor:
        """Reduce each row's next-token prediction to the three numbers the search needs.

        Args:
            batch: `N` sparse subsets.
            goals: `[N]` the goal token id of each row.

        Returns:
            `[N, 3]` float64 on the model's device: `log p(goal)`, the argmax id and
                `log p(argmax)` per row.
        """
        return scores_from_logits(self._logits(batch), goals)


class FairseqLanguageModel(_NextTokenScores):
    """[`ModelAdapter`][sequential_rationales.adapter.ModelAdapter] for a plugin decoder-only LM.

    Its `baseline_defaults` follow the paper's fairseq code: gradient times first-layer input,
    and integrated gradients averaging 51 evenly spaced points (50 steps), ends included, times
    the first-layer input.

    Args:
        model: A hub interface or a fairseq language model of one of the plugin's
            architectures (`compatible_transformer_lm*`, `transformer_lm_majority_class`).

    Raises:
        TypeError: When `model` is an encoder-decoder (use `FairseqTranslationModel`), not a
            fairseq model, or a stock fairseq architecture whose decoder takes no `positions`.

    Attributes:
        model: The fairseq model (unwrapped from a hub interface).
        decoder: Its decoder.
        pad: The dictionary's pad index, which padded slots get.
        vocab_size: The dictionary's size.
        max_positions: The model's `max_positions()`.
        device: The device of the model's parameters.
        dtype: The dtype of the model's floating-point parameters.
        is_conditional: Always `False`.
        input_embedding_scale: `(decoder.embed_scale, 1.0)`: the factor of the token embedding
            in the first layer's input.
        baseline_defaults: The paper's fairseq settings of the gradient baselines.
        hidden_time_major: Always `True`: fairseq layers' states are `[L, N, D]`.
    """

    is_conditional = False

    def __init__(self, model: nn.Module) -> None:
        self.model = unwrap_model(model)
        if hasattr(self.model, "encoder"):
            raise TypeError(
                f"{type(self.model).__name__} is an encoder-decoder (translation) model; use "
                "FairseqTranslationModel (rationalize_conditional_model in "
                "fairseq/rationalization.py), not a language-model function")
        if not hasattr(self.model, "decoder"):
            raise TypeError(f"{type(self.model).__name__} is not a fairseq model (no decoder)")
        _check_plugin_module(self.model.decoder, "decoder")
        self.decoder = self.model.decoder
        self.pad = self.decoder.dictionary.pad()
        self.vocab_size = len(self.decoder.dictionary)
        self.max_positions = _max_positions(self.model.max_positions(), 0)
        self.device = next(self.model.parameters()).device
        self.dtype = parameter_dtype(self.model)
        self._twins: dict[torch.dtype, tuple[tuple, FairseqLanguageModel]] = {}  # dtype_twin
        self.input_embedding_scale = (float(self.decoder.embed_scale), 1.0)

    def with_dtype(self, dtype: torch.dtype) -> FairseqLanguageModel:
        """This adapter on a copy of the model in `dtype`.

        The copy is made once and kept (it costs the model's size in `dtype`); it is the screening
        twin of `precision="bf16-exact"` and runs the whole search for `precision="bf16"`.

        Args:
            dtype: The dtype of the copy, e.g. `torch.bfloat16`.

        Returns:
            This adapter for its own dtype, else an adapter on the copy.
        """
        return dtype_twin(self, dtype, FairseqLanguageModel)

    def _logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        tokens = batch.target_ids.masked_fill(~batch.target_mask, self.pad)
        with eval_mode(self.model):
            features, _ = self.decoder(
                tokens, positions=batch.target_positions, keep=_keep(batch),
                token_embeddings=None if embeddings is None else embeddings.target,
                features_only=True)
            return self.decoder.output_layer(features[:, -1])  # the last position only

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """The decoder's `embed_tokens` of the batch's ids (before `embed_scale` and positions).

        Args:
            batch: `N` sparse subsets.

        Returns:
            `target` `[N, Lt, D]`.
        """
        return Embeddings(self.decoder.embed_tokens(batch.target_ids))

    def input_embedding(self, batch: SubsetBatch) -> Embeddings:
        """The decoder's first-layer input: `embed_scale * token + positions`.

        Args:
            batch: `N` sparse subsets.

        Returns:
            `target` `[N, Lt, D]`.

        Raises:
            ValueError: When the decoder transforms its input further (see
                `first_layer_input`).
        """
        return Embeddings(first_layer_input(self.decoder, batch.target_ids,
                                            batch.target_positions, batch.target_mask))

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Decoder self-attention of one full sequence.

        Args:
            batch: One row without padding.

        Returns:
            `decoder_self` `[layers, heads, T, T]`.
        """
        with eval_mode(self.model):
            _, extra = self.decoder(batch.target_ids, positions=batch.target_positions,
                                    keep=batch.target_mask, return_all_attentions=True)
        return AttentionMaps(torch.stack([a[0] for a in extra["self_attns"]]))


class FairseqTranslationModel(_NextTokenScores):
    """[`ModelAdapter`][sequential_rationales.adapter.ModelAdapter] for a plugin encoder-decoder.

    The source `</s>` is always visible: the adapter appends it, at its original position, to
    every subset, so the rationalized source is the source without it. An adapter serves one
    source length: build one per sentence. `baseline_defaults` are those of
    [`FairseqLanguageModel`][sequential_rationales.adapters.fairseq.FairseqLanguageModel].

    Args:
        model: A hub interface or `FairseqEncoderDecoderModel` of one of the plugin's
            architectures (`compatible_transformer*`).
        source_length: Length of the full source *including* its final `</s>`; the adapter
            appends that `</s>` at position `source_length - 1` to every subset.

    Raises:
        TypeError: When `model` has no encoder (a language model: use
            [`FairseqLanguageModel`][sequential_rationales.adapters.fairseq.FairseqLanguageModel])
            or is a stock fairseq architecture whose encoder or decoder takes no `positions`.

    Attributes:
        model: The fairseq model (unwrapped from a hub interface).
        encoder: Its encoder.
        decoder: Its decoder.
        source_length: Length of the full source, final `</s>` included.
        source_pad: The source dictionary's pad index, which a source must not contain.
        source_eos: The source dictionary's `</s>`, which ends every source.
        pad: The target dictionary's pad index, which a target must not contain.
        target_bos: The target dictionary's `</s>`, with which fairseq's decoders begin.
        vocab_size: The target dictionary's size.
        source_vocab_size: The source dictionary's size.
        max_positions: The target part of the model's `max_positions()`.
        max_source_positions: The source part of the model's `max_positions()`.
        device: The device of the model's parameters.
        dtype: The dtype of the model's floating-point parameters.
        is_conditional: Always `True`.
        input_embedding_scale: `(decoder.embed_scale, encoder.embed_scale)`.
        hidden_time_major: Always `True`: fairseq layers' states are `[L, N, D]`.
    """

    is_conditional = True

    def __init__(self, model: nn.Module, source_length: int) -> None:
        self.model = unwrap_model(model)
        if not hasattr(self.model, "encoder"):
            raise TypeError(
                f"{type(self.model).__name__} has no encoder: it is a language model; use "
                "FairseqLanguageModel (rationalize_lm in fairseq/rationalization.py)")
        self.encoder, self.decoder = self.model.encoder, self.model.decoder
        _check_plugin_module(self.encoder, "encoder")
        _check_plugin_module(self.decoder, "decoder")
        self.source_pad = self.encoder.dictionary.pad()
        self.source_eos = self.encoder.dictionary.eos()
        self.pad = self.decoder.dictionary.pad()
        self.target_bos = self.decoder.dictionary.eos()  # fairseq's decoders begin with </s>
        self.vocab_size = len(self.decoder.dictionary)
        self.source_vocab_size = len(self.encoder.dictionary)
        limits = self.model.max_positions()
        self.max_source_positions = _max_positions(limits, 0)
        self.max_positions = _max_positions(limits, 1)
        self.source_length = source_length
        self.device = next(self.model.parameters()).device
        self.dtype = parameter_dtype(self.model)
        self._twins: dict[torch.dtype, tuple[tuple, FairseqTranslationModel]] = {}  # dtype_twin
        self.input_embedding_scale = (float(self.decoder.embed_scale),
                                      float(self.encoder.embed_scale))

    def with_dtype(self, dtype: torch.dtype) -> FairseqTranslationModel:
        """This adapter on a copy of the model in `dtype`.

        The copy is made once and kept (it costs the model's size in `dtype`); it is the screening
        twin of `precision="bf16-exact"` and runs the whole search for `precision="bf16"`.

        Args:
            dtype: The dtype of the copy, e.g. `torch.bfloat16`.

        Returns:
            This adapter for its own dtype, else an adapter of the same source length on the copy.
        """
        return dtype_twin(self, dtype,
                          lambda twin: FairseqTranslationModel(twin, self.source_length))

    def _source_with_eos(self, batch: SubsetBatch, embeddings: Tensor | None
                         ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Append the always-visible `</s>` after each row's real source tokens."""
        assert batch.source_ids is not None and batch.source_mask is not None
        assert batch.source_positions is not None
        n = len(batch)
        count = batch.source_mask.sum(1)
        rows = torch.arange(n, device=count.device)
        pad_col = torch.full((n, 1), self.source_pad, dtype=torch.long, device=count.device)
        tokens = torch.cat([batch.source_ids.masked_fill(~batch.source_mask, self.source_pad),
                            pad_col], 1)
        positions = torch.cat([batch.source_positions, torch.zeros_like(pad_col)], 1)
        tokens[rows, count] = self.source_eos
        positions[rows, count] = self.source_length - 1
        if embeddings is not None:
            eos_embedding = self.encoder.embed_tokens(
                torch.tensor([self.source_eos], device=count.device))[0]
            embeddings = torch.cat([embeddings, torch.zeros_like(embeddings[:, :1])], 1)
            placed = torch.zeros(n, tokens.shape[1], 1, dtype=embeddings.dtype,
                                 device=embeddings.device)
            placed[rows, count] = 1.0
            embeddings = embeddings * (1 - placed) + placed * eos_embedding
        return tokens, positions, embeddings

    def _run(self, batch: SubsetBatch, embeddings: Embeddings | None,
             all_attentions: bool = False):
        src_emb = None if embeddings is None else embeddings.source
        tokens, positions, src_emb = self._source_with_eos(batch, src_emb)
        lengths = tokens.ne(self.source_pad).sum(1)
        encoder_out = self.encoder(tokens, src_lengths=lengths, positions=positions,
                                   token_embeddings=src_emb,
                                   return_all_attentions=all_attentions)
        prev = batch.target_ids.masked_fill(~batch.target_mask, self.pad)
        features, extra = self.decoder(
            prev, encoder_out=encoder_out, positions=batch.target_positions,
            keep=_keep(batch),
            token_embeddings=None if embeddings is None else embeddings.target,
            return_all_attentions=all_attentions, features_only=True)
        return features, extra, encoder_out

    def _logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        with eval_mode(self.model):
            features, _, _ = self._run(batch, embeddings)
            return self.decoder.output_layer(features[:, -1])  # the last position only

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """The encoder's and decoder's `embed_tokens` of the batch's ids (before `embed_scale` and
        positions).

        Args:
            batch: `N` sparse subsets of source and target tokens.

        Returns:
            `target` `[N, Lt, D]` and `source` `[N, Ls, D]`.
        """
        return Embeddings(self.decoder.embed_tokens(batch.target_ids),
                          self.encoder.embed_tokens(batch.source_ids))

    def input_embedding(self, batch: SubsetBatch) -> Embeddings:
        """The first-layer inputs of decoder and encoder: `embed_scale * token + positions`.

        Args:
            batch: `N` sparse subsets of source and target tokens.

        Returns:
            `target` `[N, Lt, D]` and `source` `[N, Ls, D]`.

        Raises:
            ValueError: When the encoder or decoder transforms its input further (see
                `first_layer_input`).
        """
        return Embeddings(
            first_layer_input(self.decoder, batch.target_ids, batch.target_positions,
                              batch.target_mask),
            first_layer_input(self.encoder, batch.source_ids, batch.source_positions,
                              batch.source_mask))

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Decoder self-, cross- and encoder attention of one full sequence.

        The appended `</s>` is left out of the maps (context the search never chooses).

        Args:
            batch: One row without padding.

        Returns:
            `decoder_self` `[layers, heads, T, T]`, `cross` `[layers, heads, T, S]` and
                `encoder_self` `[layers, heads, S, S]`.
        """
        with eval_mode(self.model):
            _, extra, encoder_out = self._run(batch, None, all_attentions=True)
        # Drop the appended </s>: it is context the search never chooses.
        s = int(batch.source_mask.sum())
        self_maps = torch.stack([a[0] for a in extra["self_attns"]])
        cross = torch.stack([a[0] for a in extra["cross_attns"]])[..., :s]
        encoder_maps = torch.stack([a[0] for a in encoder_out["self_attns"]])[..., :s, :s]
        return AttentionMaps(self_maps, cross, encoder_maps)
