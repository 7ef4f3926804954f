"""Transformer encoder/decoder that take attention masks and original positions.

These subclasses of fairseq's ``TransformerEncoderBase`` / ``TransformerDecoderBase`` add no
parameters (a stock checkpoint loads into them) and behave exactly like the stock modules
unless one of the extra keyword arguments is used; incremental decoding (generation) is always
the stock code.

Extra arguments (all optional):

* ``positions`` ``[B, L]``: 0-based *original* positions of the given tokens. fairseq's offset
  ``padding_idx + 1`` is added here, for sinusoidal and learned embeddings alike (the stock
  positional modules cannot take explicit positions). Padding keeps the padding position.
* ``token_embeddings`` ``[B, L, D]``: replace ``embed_tokens(tokens)`` *before*
  ``embed_scale`` (fairseq's own convention for the encoder argument of that name).
* ``keep`` ``[B, L]`` or ``[B, H, L]`` bool: which tokens are visible as attention *keys*
  (``True`` = visible). Every query still attends to itself (and, in the decoder, only to
  earlier positions), so a masked position is still computed and no attention row is empty.
  Padding (``token == pad``, on either side) is never visible. A ``[B, H, L]`` mask gives each
  head its own keep-set (the first ``H`` heads are used when it has more).
* decoder ``source_keep`` ``[B, S]`` or ``[B, H, S]``: which source positions cross-attention
  may see (on top of the encoder padding mask).
* ``return_all_attentions``: the encoder output gets ``"self_attns"`` (list over layers of
  ``[B, heads, S, S]``); the decoder's extra dict gets ``"self_attns"`` (``[B, heads, T, T]``)
  and ``"cross_attns"`` (``[B, heads, T, S]``; empty list for a language model). These are
  per-head attention probabilities.

Evaluating a subset sparsely (its tokens only, with ``positions``) gives the same outputs as
the full sequence with ``keep`` marking the subset (Vafa et al., 2021, Sec. 2 of PAPER.md).

Empty source: when an example has no visible source token (every source token is padding, or
``source_keep`` hides all of them), its cross-attention output is zero in every layer -- an
empty source contributes nothing -- and its cross-attention probabilities are all zero. The
encoder lets each padded query attend to itself, so an all-padding source row stays finite.
(Word dropout in training never produces this: it always keeps the source ``</s>``.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from fairseq.distributed import fsdp_wrap
from fairseq.models.transformer import TransformerDecoderBase, TransformerEncoderBase
from fairseq.modules import (
    LearnedPositionalEmbedding,
    MultiheadAttention,
    SinusoidalPositionalEmbedding,
)
from fairseq.modules.checkpoint_activations import checkpoint_wrapper
from fairseq.modules.transformer_layer import (
    TransformerDecoderLayerBase,
    TransformerEncoderLayerBase,
)
from torch import Tensor

from sequential_rationales.word_dropout import self_attention_mask


def attend(mha: MultiheadAttention, query: Tensor, key: Tensor, blocked: Tensor | None,
           need_weights: bool) -> tuple[Tensor, Tensor | None]:
    """Run a fairseq ``MultiheadAttention``'s parameters with a per-head mask.

    ``query`` ``[T, B, C]``, ``key`` ``[S, B, Ck]`` (also the value), ``blocked`` bool
    ``[B * heads, T, S]`` or ``[T, S]`` (shared by all rows), ``True`` = may not attend, or
    ``None`` (attend everywhere). Returns the output ``[T, B, C]`` and,
    with ``need_weights``, per-head probabilities ``[B, heads, T, S]``.

    Why not call the module: its own slow path (used for cross-attention) only takes 2-D masks
    and it averages the weights over heads; ``F.multi_head_attention_forward`` -- which fairseq
    itself calls for self-attention -- takes 3-D masks and returns per-head weights.
    """
    if mha.use_xformers or mha.skip_embed_dim_check or mha.onnx_trace:
        raise NotImplementedError(
            "masked attention (word dropout, sparse evaluation, attention maps) needs "
            "fairseq's PyTorch attention; xformers, pruned heads and ONNX tracing are not "
            "supported")
    return F.multi_head_attention_forward(
        query, key, key, mha.embed_dim, mha.num_heads, torch.empty([0]),
        torch.cat((mha.q_proj.bias, mha.k_proj.bias, mha.v_proj.bias)),
        mha.bias_k, mha.bias_v, mha.add_zero_attn, mha.dropout_module.p,
        mha.out_proj.weight, mha.out_proj.bias,
        mha.training or mha.dropout_module.apply_during_inference,
        key_padding_mask=None, need_weights=need_weights, attn_mask=blocked,
        use_separate_proj_weight=True, q_proj_weight=mha.q_proj.weight,
        k_proj_weight=mha.k_proj.weight, v_proj_weight=mha.v_proj.weight,
        average_attn_weights=False)


def blocked_per_head(allowed: Tensor, num_heads: int) -> Tensor:
    """``[B, T, S]`` or ``[B, H', T, S]`` bool (``True`` = may attend) -> ``[B * heads, T, S]``
    bool with ``True`` = blocked, the layout ``F.multi_head_attention_forward`` expects."""
    if allowed.dim() == 3:
        allowed = allowed.unsqueeze(1).expand(-1, num_heads, -1, -1)
    else:
        allowed = allowed[:, :num_heads]
    return ~allowed.reshape(-1, allowed.shape[-2], allowed.shape[-1])


def check_keep(keep: Tensor, shape: torch.Size, num_heads: int, name: str) -> Tensor:
    """Validate a key-visibility mask against the tokens' ``shape`` ``[B, L]``."""
    if keep.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {keep.dtype}")
    batch, length = shape
    if keep.dim() == 2 and tuple(keep.shape) == (batch, length):
        return keep
    if keep.dim() == 3 and keep.shape[0] == batch and keep.shape[2] == length:
        if keep.shape[1] < num_heads:
            raise ValueError(f"{name} has {keep.shape[1]} head masks but the attention has "
                             f"{num_heads} heads")
        return keep
    raise ValueError(f"{name} must have shape [{batch}, {length}] or [{batch}, heads, "
                     f"{length}], got {list(keep.shape)}")


def _without_padding(keep: Tensor, padding: Tensor) -> Tensor:
    return keep & ~(padding.unsqueeze(1) if keep.dim() == 3 else padding)


def embed_original_positions(module, positions: Tensor, padding: Tensor) -> Tensor:
    """fairseq positional embeddings ``[B, L, D]`` of 0-based original ``positions`` ``[B, L]``.

    Adds fairseq's offset ``padding_idx + 1``; padding gets ``padding_idx`` (a zero vector),
    exactly as the stock modules number a left- or right-padded sequence.
    """
    if positions.shape != padding.shape:
        raise ValueError(f"positions must have the tokens' shape {list(padding.shape)}, got "
                         f"{list(positions.shape)}")
    if positions.dtype.is_floating_point or positions.dtype == torch.bool:
        raise TypeError(f"positions must hold integers, got {positions.dtype}")
    if bool((positions.masked_fill(padding, 0) < 0).any()):
        raise ValueError("positions must be >= 0 (0-based original positions)")
    ids = (positions.long() + module.padding_idx + 1).masked_fill(padding, module.padding_idx)
    if isinstance(module, SinusoidalPositionalEmbedding):
        weights = module.weights
        needed = int(ids.max()) + 1 if ids.numel() else 0
        if needed > weights.size(0):
            # Same on-the-fly extension as the stock module, without mutating it.
            weights = SinusoidalPositionalEmbedding.get_embedding(
                needed, module.embedding_dim, module.padding_idx).to(weights)
        return weights[ids].detach()
    if isinstance(module, LearnedPositionalEmbedding):
        if ids.numel() and int(ids.max()) >= module.num_embeddings:
            raise ValueError(f"position {int(positions.max())} is beyond the model's "
                             f"{module.max_positions} learned positions")
        return F.embedding(ids, module.weight, module.padding_idx, module.max_norm,
                           module.norm_type, module.scale_grad_by_freq, module.sparse)
    raise TypeError(f"explicit positions are not supported for {type(module).__name__}")


def _wrap_layer(layer, cfg):
    """Activation checkpointing / FSDP wrapping exactly as the stock ``build_*_layer``."""
    checkpoint = cfg.checkpoint_activations
    if checkpoint:
        layer = checkpoint_wrapper(layer, offload_to_cpu=cfg.offload_activations)
    return fsdp_wrap(layer, min_num_params=cfg.min_params_to_wrap if not checkpoint else 0)


class CompatibleTransformerEncoderLayer(TransformerEncoderLayerBase):
    """Stock encoder layer plus :meth:`forward_with_mask` (per-head masks and weights)."""

    def forward_with_mask(self, x: Tensor, blocked: Tensor | None, need_weights: bool = False
                          ) -> tuple[Tensor, Tensor | None]:
        """``x`` ``[S, B, C]``, ``blocked`` ``[B * heads, S, S]``; mirrors the stock forward."""
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x, weights = attend(self.self_attn, x, x, blocked, need_weights)
        x = self.dropout_module(x)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)

        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.activation_fn(self.fc1(x))
        x = self.activation_dropout_module(x)
        x = self.fc2(x)
        x = self.dropout_module(x)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x, weights


class CompatibleTransformerDecoderLayer(TransformerDecoderLayerBase):
    """Stock decoder layer plus :meth:`forward_with_masks` (per-head masks and weights)."""

    def forward_with_masks(self, x: Tensor, encoder_out: Tensor | None,
                           self_blocked: Tensor | None, cross_blocked: Tensor | None,
                           cross_empty: Tensor | None, need_weights: bool = False
                           ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Non-incremental forward mirroring the stock one.

        ``x`` ``[T, B, C]``; ``self_blocked`` ``[B * heads, T, T]``; ``cross_blocked``
        ``[B * heads, T, S]``; ``cross_empty`` ``[B]`` rows whose cross-attention output is
        zeroed (no visible source token). Returns ``(x, self_weights, cross_weights)``.
        """
        if self.cross_self_attention:
            raise NotImplementedError("--cross-self-attention is not supported with masked "
                                      "attention (word dropout / sparse evaluation)")
        residual = x
        if self.normalize_before:
            x = self.self_attn_layer_norm(x)
        x, self_weights = attend(self.self_attn, x, x, self_blocked, need_weights)
        if self.c_attn is not None:
            tgt_len, bsz = x.size(0), x.size(1)
            x = x.view(tgt_len, bsz, self.nh, self.head_dim)
            x = torch.einsum("tbhd,h->tbhd", x, self.c_attn)
            x = x.reshape(tgt_len, bsz, self.embed_dim)
        if self.attn_ln is not None:
            x = self.attn_ln(x)
        x = self.dropout_module(x)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.self_attn_layer_norm(x)

        cross_weights = None
        if self.encoder_attn is not None and encoder_out is not None:
            residual = x
            if self.normalize_before:
                x = self.encoder_attn_layer_norm(x)
            x, cross_weights = attend(self.encoder_attn, x, encoder_out, cross_blocked,
                                      need_weights)
            if cross_empty is not None:
                # An empty source contributes nothing (see the module docstring).
                x = x.masked_fill(cross_empty[None, :, None], 0.0)
                if cross_weights is not None:
                    cross_weights = cross_weights.masked_fill(
                        cross_empty[:, None, None, None], 0.0)
            x = self.dropout_module(x)
            x = self.residual_connection(x, residual)
            if not self.normalize_before:
                x = self.encoder_attn_layer_norm(x)

        residual = x
        if self.normalize_before:
            x = self.final_layer_norm(x)
        x = self.activation_fn(self.fc1(x))
        x = self.activation_dropout_module(x)
        if self.ffn_layernorm is not None:
            x = self.ffn_layernorm(x)
        x = self.fc2(x)
        x = self.dropout_module(x)
        if self.w_resid is not None:
            residual = torch.mul(self.w_resid, residual)
        x = self.residual_connection(x, residual)
        if not self.normalize_before:
            x = self.final_layer_norm(x)
        return x, self_weights, cross_weights


class CompatibleTransformerEncoder(TransformerEncoderBase):
    """Transformer encoder with ``positions``, ``keep`` and ``return_all_attentions``."""

    @property
    def num_heads(self) -> int:
        return self.cfg.encoder.attention_heads

    def build_encoder_layer(self, cfg):
        return _wrap_layer(CompatibleTransformerEncoderLayer(cfg, return_fc=self.return_fc), cfg)

    def forward_embedding(self, src_tokens: Tensor, token_embedding: Tensor | None = None,
                          positions: Tensor | None = None):
        if positions is None:
            return super().forward_embedding(src_tokens, token_embedding)
        if token_embedding is None:
            token_embedding = self.embed_tokens(src_tokens)
        x = embed = self.embed_scale * token_embedding
        if self.embed_positions is not None:
            x = embed + embed_original_positions(self.embed_positions, positions,
                                                 src_tokens.eq(self.padding_idx))
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout_module(x)
        if self.quant_noise is not None:
            x = self.quant_noise(x)
        return x, embed

    def forward(self, src_tokens: Tensor, src_lengths: Tensor | None = None,
                return_all_hiddens: bool = False, token_embeddings: Tensor | None = None,
                positions: Tensor | None = None, keep: Tensor | None = None,
                return_all_attentions: bool = False) -> dict[str, list[Tensor]]:
        """Stock arguments and output dict, plus the extras of the module docstring."""
        padding = src_tokens.eq(self.padding_idx)
        if (positions is None and keep is None and not return_all_attentions
                and not bool(padding.all(-1).any())):
            return super().forward(src_tokens, src_lengths, return_all_hiddens,
                                   token_embeddings)
        if keep is None and not bool(padding.any()):
            blocked = None  # nothing to hide: the unmasked (fast) attention
        else:
            visible = ~padding if keep is None else _without_padding(
                check_keep(keep, src_tokens.shape, self.num_heads, "keep"), padding)
            blocked = blocked_per_head(self_attention_mask(visible, causal=False),
                                       self.num_heads)

        x, encoder_embedding = self.forward_embedding(src_tokens, token_embeddings, positions)
        x = x * (1 - padding.unsqueeze(-1).type_as(x))
        x = x.transpose(0, 1)  # B x S x C -> S x B x C
        encoder_states: list[Tensor] = [x] if return_all_hiddens else []
        self_attns: list[Tensor] = []
        for layer in self.layers:
            x, weights = layer.forward_with_mask(x, blocked, need_weights=return_all_attentions)
            if return_all_hiddens:
                encoder_states.append(x)
            if return_all_attentions:
                self_attns.append(weights)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        out = {
            "encoder_out": [x],
            "encoder_padding_mask": [padding],
            "encoder_embedding": [encoder_embedding],
            "encoder_states": encoder_states,
            "fc_results": [],
            "src_tokens": [],
            "src_lengths": [(~padding).sum(dim=1, dtype=torch.int32).reshape(-1, 1)],
        }
        if return_all_attentions:
            out["self_attns"] = self_attns
        return out


class CompatibleTransformerDecoder(TransformerDecoderBase):
    """Transformer decoder with ``positions``, ``keep``, ``source_keep`` and
    ``return_all_attentions`` (see the module docstring)."""

    @property
    def num_heads(self) -> int:
        return self.cfg.decoder.attention_heads

    def build_decoder_layer(self, cfg, no_encoder_attn=False):
        return _wrap_layer(CompatibleTransformerDecoderLayer(cfg, no_encoder_attn), cfg)

    def forward(self, prev_output_tokens: Tensor,
                encoder_out: dict[str, list[Tensor]] | None = None,
                incremental_state: dict[str, dict[str, Tensor | None]] | None = None,
                features_only: bool = False, full_context_alignment: bool = False,
                alignment_layer: int | None = None, alignment_heads: int | None = None,
                src_lengths: Any | None = None, return_all_hiddens: bool = False,
                positions: Tensor | None = None,
                token_embeddings: Tensor | None = None, keep: Tensor | None = None,
                source_keep: Tensor | None = None, return_all_attentions: bool = False):
        x, extra = self.extract_features(
            prev_output_tokens, encoder_out=encoder_out, incremental_state=incremental_state,
            full_context_alignment=full_context_alignment, alignment_layer=alignment_layer,
            alignment_heads=alignment_heads, positions=positions,
            token_embeddings=token_embeddings, keep=keep, source_keep=source_keep,
            return_all_attentions=return_all_attentions)
        if not features_only:
            x = self.output_layer(x)
        return x, extra

    def extract_features(self, prev_output_tokens: Tensor,
                         encoder_out: dict[str, list[Tensor]] | None = None,
                         incremental_state=None, full_context_alignment: bool = False,
                         alignment_layer: int | None = None,
                         alignment_heads: int | None = None,
                         positions: Tensor | None = None,
                         token_embeddings: Tensor | None = None,
                         keep: Tensor | None = None, source_keep: Tensor | None = None,
                         return_all_attentions: bool = False):
        extras = (positions is not None or token_embeddings is not None or keep is not None
                  or source_keep is not None or return_all_attentions)
        stock_args = (prev_output_tokens, encoder_out, incremental_state,
                      full_context_alignment, alignment_layer, alignment_heads)
        if incremental_state is not None:
            if extras:
                raise ValueError("positions, token_embeddings, keep, source_keep and "
                                 "return_all_attentions need a full (non-incremental) pass")
            return super().extract_features(*stock_args)
        enc, enc_padding = _encoder_memory(encoder_out)
        empty_source = enc_padding is not None and bool(enc_padding.all(-1).any())
        left_padded = bool(prev_output_tokens[:, :1].eq(self.padding_idx).any())
        if not extras and not left_padded and not empty_source:
            return super().extract_features(*stock_args)
        return self._extract_features_masked(
            prev_output_tokens, enc, enc_padding, full_context_alignment, alignment_layer,
            alignment_heads, positions, token_embeddings, keep, source_keep,
            return_all_attentions)

    def _extract_features_masked(self, tokens, enc, enc_padding, full_context_alignment,
                                 alignment_layer, alignment_heads, positions, token_embeddings,
                                 keep, source_keep, return_all_attentions):
        if alignment_layer is None:
            alignment_layer = self.num_layers - 1
        padding = tokens.eq(self.padding_idx)
        causal = not full_context_alignment
        if keep is None and not bool(padding.any()):
            # Nothing to hide: one [T, T] causal mask shared by every row and head.
            length = tokens.shape[1]
            self_blocked = (torch.ones(length, length, dtype=torch.bool, device=tokens.device)
                            .triu(1) if causal else None)
        else:
            visible = ~padding if keep is None else _without_padding(
                check_keep(keep, tokens.shape, self.num_heads, "keep"), padding)
            self_blocked = blocked_per_head(self_attention_mask(visible, causal=causal),
                                            self.num_heads)
        cross_blocked, cross_empty = self._cross_attention_mask(
            enc, enc_padding, source_keep, tokens.shape[0], tokens.shape[1])

        x = self.embed_tokens(tokens) if token_embeddings is None else token_embeddings
        x = self.embed_scale * x
        if self.quant_noise is not None:
            x = self.quant_noise(x)
        if self.project_in_dim is not None:
            x = self.project_in_dim(x)
        if self.embed_positions is not None:
            x = x + (self.embed_positions(tokens) if positions is None else
                     embed_original_positions(self.embed_positions, positions, padding))
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        x = self.dropout_module(x)
        x = x.transpose(0, 1)  # B x T x C -> T x B x C

        attn: Tensor | None = None
        inner_states: list[Tensor | None] = [x]
        self_attns: list[Tensor] = []
        cross_attns: list[Tensor] = []
        for idx, layer in enumerate(self.layers):
            need = return_all_attentions or (idx == alignment_layer and enc is not None)
            x, self_w, cross_w = layer.forward_with_masks(x, enc, self_blocked, cross_blocked,
                                                          cross_empty, need_weights=need)
            inner_states.append(x)
            if return_all_attentions:
                self_attns.append(self_w)
                if cross_w is not None:
                    cross_attns.append(cross_w)
            if cross_w is not None and idx == alignment_layer:
                heads = cross_w if alignment_heads is None else cross_w[:, :alignment_heads]
                attn = heads.mean(dim=1).float().to(x)  # stock: mean over heads, [B, T, S]

        if self.layer_norm is not None:
            x = self.layer_norm(x)
        x = x.transpose(0, 1)
        if self.project_out_dim is not None:
            x = self.project_out_dim(x)
        extra: dict[str, Any] = {"attn": [attn], "inner_states": inner_states}
        if return_all_attentions:
            extra["self_attns"] = self_attns
            extra["cross_attns"] = cross_attns
        return x, extra

    def _cross_attention_mask(self, enc, enc_padding, source_keep, batch, tgt_len):
        """Blocked mask ``[B * heads, T, S]`` for cross-attention and the rows (``[B]``, or
        ``None``) that see no source token at all."""
        if enc is None:
            if source_keep is not None:
                raise ValueError("source_keep was given but there is no encoder output")
            return None, None
        src_len = enc.size(0)
        if source_keep is None and (enc_padding is None or not bool(enc_padding.any())):
            return None, None  # every row sees the whole source
        visible = (~enc_padding if enc_padding is not None else
                   torch.ones(batch, src_len, dtype=torch.bool, device=enc.device))
        if source_keep is not None:
            source_keep = check_keep(source_keep, visible.shape, self.num_heads, "source_keep")
            visible = _without_padding(source_keep, ~visible)
        has_key = visible.any(-1)  # [B] or [B, H']
        if has_key.dim() == 2:
            if visible.shape[1] > self.num_heads:
                visible = visible[:, :self.num_heads]
                has_key = has_key[:, :self.num_heads]
            row_has_key = has_key.any(-1)
            if bool((has_key != row_has_key[:, None]).any()):
                raise ValueError("source_keep leaves an attention head without any visible "
                                 "source token while other heads see some; keep at least one "
                                 "token per head (word dropout keeps the source </s>)")
            has_key = row_has_key
        cross_empty = None
        if not bool(has_key.all()):
            cross_empty = ~has_key
            # Give empty rows one (finite) key so softmax has no all-masked row; the layer
            # then zeroes their cross-attention output.
            first = torch.zeros_like(visible)
            first[..., 0] = True
            visible = visible | (first & cross_empty.view(-1, *([1] * (visible.dim() - 1))))
        allowed = visible.unsqueeze(-2).expand(*visible.shape[:-1], tgt_len, src_len)
        return blocked_per_head(allowed, self.num_heads), cross_empty


def _encoder_memory(encoder_out) -> tuple[Tensor | None, Tensor | None]:
    if encoder_out is None:
        return None, None
    enc = encoder_out["encoder_out"][0] if len(encoder_out["encoder_out"]) > 0 else None
    padding = (encoder_out["encoder_padding_mask"][0]
               if len(encoder_out.get("encoder_padding_mask", [])) > 0 else None)
    return enc, padding
