"""fairseq models trained with word dropout ("compatible" models, Vafa et al., 2021, Sec. 5).

* ``compatible_transformer_lm`` (``--task language_modeling``): fairseq's
  ``TransformerLanguageModel`` with word dropout on decoder self-attention. Architectures:
  ``transformer_lm_majority_class`` (4 layers, dim 64, FFN 256, 2 heads; other settings as
  fairseq's ``transformer_lm`` family) and ``compatible_transformer_lm_base`` (the family's
  defaults), whose function :func:`compatible_transformer_lm_base` a custom architecture
  calls last. A user module passed with ``--user-dir`` registers, e.g.::

      from fairseq.models import register_model_architecture
      from fairseq.utils import safe_getattr
      # importing the plugin registers compatible_transformer_lm
      from sequential_rationales_integrations.fairseq import compatible_transformer_lm_base

      @register_model_architecture("compatible_transformer_lm", "transformer_lm_custom")
      def transformer_lm_custom(args):
          args.decoder_layers = safe_getattr(args, "decoder_layers", 8)
          args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 256)
          args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", 1024)
          args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", 4)
          compatible_transformer_lm_base(args)

  then ``fairseq-train --task language_modeling --user-dir my_dir --arch transformer_lm_custom
  --word-dropout-mixture 0.5 ...``.
* ``compatible_transformer`` (``--task translation``): fairseq's ``TransformerModel`` with word
  dropout on encoder self-attention, decoder self-attention and cross-attention.
  Architectures ``compatible_transformer`` and ``compatible_transformer_iwslt_de_en`` mirror
  the stock ``transformer`` / ``transformer_iwslt_de_en``. No parameter is added, so a stock
  ``transformer`` checkpoint fine-tunes with ``--restore-file`` (or as ``checkpoint_last.pt``)
  and ``--reset-optimizer --reset-dataloader``.

Word dropout (training mode only; evaluation and generation never drop): with probability
``--word-dropout-mixture`` a batch is word-dropped; one keep-set is drawn for the source and one
for the target (per example, or per example and head), with the core's
:func:`~sequential_rationales.word_dropout.word_dropout_keep_mask` and torch's global RNG,
which fairseq seeds from ``--seed``. The source keep-set masks the keys of encoder
self-attention and of cross-attention in every layer; the target keep-set masks decoder
self-attention keys. Every query still attends to itself (causally in decoders). The source
``</s>`` (last non-padding source token) is never dropped, so cross-attention always has a key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from fairseq.dataclass.utils import gen_parser_from_dataclass
from fairseq.models import register_model, register_model_architecture
from fairseq.models.transformer import TransformerConfig, TransformerModel
from fairseq.models.transformer.transformer_legacy import (
    base_architecture,
    transformer_iwslt_de_en,
)
from fairseq.models.transformer_lm import (
    DEFAULT_MAX_TARGET_POSITIONS,
    TransformerLanguageModel,
    TransformerLanguageModelConfig,
    base_lm_architecture,
)
from fairseq.modules import AdaptiveInput, CharacterTokenEmbedder
from fairseq.utils import eval_str_list, safe_getattr
from torch import Tensor

from sequential_rationales.word_dropout import WordDropout, word_dropout_keep_mask

from .config import (
    WordDropoutConfig,
    check_word_dropout_flags,
    set_word_dropout_defaults,
    word_dropout_from_cfg,
)
from .modules import CompatibleTransformerDecoder, CompatibleTransformerEncoder


@dataclass
class CompatibleTransformerLanguageModelConfig(WordDropoutConfig, TransformerLanguageModelConfig):
    """fairseq's ``transformer_lm`` options plus the word-dropout options."""


@register_model("compatible_transformer_lm", dataclass=CompatibleTransformerLanguageModelConfig)
class CompatibleTransformerLanguageModel(TransformerLanguageModel):
    """``TransformerLanguageModel`` whose decoder is a :class:`CompatibleTransformerDecoder`."""

    def __init__(self, decoder, word_dropout: WordDropout | None = None):
        super().__init__(decoder)
        self.word_dropout = word_dropout or WordDropout()

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)  # the options of the registered dataclass
        check_word_dropout_flags(parser)

    @classmethod
    def build_model(cls, args, task):
        """fairseq's ``TransformerLanguageModel.build_model`` with the compatible decoder."""
        word_dropout = word_dropout_from_cfg(args)  # fail before anything is built
        if args.decoder_layers_to_keep:
            args.decoder_layers = len(args.decoder_layers_to_keep.split(","))
        if safe_getattr(args, "max_target_positions", None) is None:
            args.max_target_positions = safe_getattr(args, "tokens_per_sample",
                                                     DEFAULT_MAX_TARGET_POSITIONS)
        if args.character_embeddings:
            embed_tokens = CharacterTokenEmbedder(
                task.source_dictionary, eval(args.character_filters),
                args.character_embedding_dim, args.decoder_embed_dim,
                args.char_embedder_highway_layers)
        elif args.adaptive_input:
            embed_tokens = AdaptiveInput(
                len(task.source_dictionary), task.source_dictionary.pad(),
                args.decoder_input_dim, args.adaptive_input_factor, args.decoder_embed_dim,
                eval_str_list(args.adaptive_input_cutoff, type=int),
                args.quant_noise_pq, args.quant_noise_pq_block_size)
        else:
            embed_tokens = cls.build_embedding(args, task.source_dictionary,
                                               args.decoder_input_dim)
        if args.tie_adaptive_weights:
            if not args.adaptive_input:
                raise ValueError("--tie-adaptive-weights needs --adaptive-input")
            if args.adaptive_input_factor != args.adaptive_softmax_factor:
                raise ValueError("--tie-adaptive-weights needs --adaptive-input-factor == "
                                 "--adaptive-softmax-factor")
            if args.adaptive_softmax_cutoff != args.adaptive_input_cutoff:
                raise ValueError("--tie-adaptive-weights needs --adaptive-softmax-cutoff == "
                                 "--adaptive-input-cutoff")
            if args.decoder_input_dim != args.decoder_output_dim:
                raise ValueError("--tie-adaptive-weights needs --decoder-input-dim == "
                                 "--decoder-output-dim")
        decoder = CompatibleTransformerDecoder(
            TransformerConfig.from_namespace(args), task.target_dictionary, embed_tokens,
            no_encoder_attn=True)
        return cls(decoder, word_dropout)

    def forward(self, src_tokens: Tensor, **kwargs):
        """Stock forward; in training mode a batch may be word-dropped (decoder ``keep``)."""
        if self.training and kwargs.get("keep") is None:
            keep = self.word_dropout.sample_keep(src_tokens.ne(self.decoder.padding_idx),
                                                 num_heads=self.decoder.num_heads)
            if keep is not None:
                kwargs["keep"] = keep
        return self.decoder(src_tokens, **kwargs)


@register_model("compatible_transformer")
class CompatibleTransformerModel(TransformerModel):
    """``TransformerModel`` with :class:`CompatibleTransformerEncoder` / ``...Decoder``."""

    def __init__(self, args, encoder, decoder):
        super().__init__(args, encoder, decoder)
        self.word_dropout = WordDropout()  # build_model sets the configured one

    @classmethod
    def add_args(cls, parser):
        super().add_args(parser)
        # No defaults here, as for the stock options: architecture functions fill them.
        gen_parser_from_dataclass(parser, WordDropoutConfig(), delete_default=True)
        check_word_dropout_flags(parser)

    @classmethod
    def build_model(cls, args, task):
        word_dropout = word_dropout_from_cfg(args)  # fail before anything is built
        model = super().build_model(args, task)
        model.word_dropout = word_dropout
        return model

    @classmethod
    def build_encoder(cls, args, src_dict, embed_tokens):
        return CompatibleTransformerEncoder(TransformerConfig.from_namespace(args), src_dict,
                                            embed_tokens)

    @classmethod
    def build_decoder(cls, args, tgt_dict, embed_tokens):
        cfg = TransformerConfig.from_namespace(args)
        return CompatibleTransformerDecoder(cfg, tgt_dict, embed_tokens,
                                            no_encoder_attn=cfg.no_cross_attention)

    def sample_word_dropout(self, src_tokens: Tensor, prev_output_tokens: Tensor
                            ) -> tuple[Tensor | None, Tensor | None]:
        """Keep masks (source, target) for one batch, or ``(None, None)`` (no dropout)."""
        if not self.word_dropout.apply_to_batch():
            return None, None
        per_head = self.word_dropout.independent_heads
        dec_heads = self.decoder.num_heads if per_head else None
        # One source draw serves encoder self-attention and cross-attention (sliced per head).
        src_heads = max(self.encoder.num_heads, self.decoder.num_heads) if per_head else None
        src_valid = src_tokens.ne(self.encoder.padding_idx)
        src_keep = word_dropout_keep_mask(src_valid, self.word_dropout.kind, None, src_heads,
                                          always_keep=last_token_mask(src_valid))
        tgt_keep = word_dropout_keep_mask(prev_output_tokens.ne(self.decoder.padding_idx),
                                          self.word_dropout.kind, None, dec_heads)
        return src_keep, tgt_keep

    def forward(self, src_tokens, src_lengths, prev_output_tokens,
                return_all_hiddens: bool = True, features_only: bool = False,
                alignment_layer: int | None = None, alignment_heads: int | None = None):
        """Stock forward; in training mode a batch may be word-dropped."""
        src_keep = tgt_keep = None
        if self.training:
            src_keep, tgt_keep = self.sample_word_dropout(src_tokens, prev_output_tokens)
        encoder_out = self.encoder(src_tokens, src_lengths=src_lengths,
                                   return_all_hiddens=return_all_hiddens, keep=src_keep)
        return self.decoder(prev_output_tokens, encoder_out=encoder_out,
                            features_only=features_only, alignment_layer=alignment_layer,
                            alignment_heads=alignment_heads, src_lengths=src_lengths,
                            return_all_hiddens=return_all_hiddens, keep=tgt_keep,
                            source_keep=src_keep)


def last_token_mask(valid: Tensor) -> Tensor:
    """``[B, L]`` bool: the last ``True`` of each row of ``valid`` (the source ``</s>``, since
    fairseq ends every source with it, whichever side is padded)."""
    index = torch.arange(valid.shape[1], device=valid.device).expand_as(valid)
    last = index.masked_fill(~valid, -1).max(dim=1).values.clamp(min=0)
    return torch.nn.functional.one_hot(last, valid.shape[1]).bool() & valid


@register_model_architecture("compatible_transformer_lm", "compatible_transformer_lm_base")
def compatible_transformer_lm_base(args):
    """fairseq's ``transformer_lm`` family defaults plus word-dropout defaults; custom
    architectures set their sizes and call this last."""
    set_word_dropout_defaults(args)
    base_lm_architecture(args)


@register_model_architecture("compatible_transformer_lm", "transformer_lm_majority_class")
def transformer_lm_majority_class(args):
    """The paper's Majority Class LM: 4 layers, dim 64, FFN 256, 2 heads."""
    args.decoder_layers = safe_getattr(args, "decoder_layers", 4)
    args.decoder_embed_dim = safe_getattr(args, "decoder_embed_dim", 64)
    args.decoder_ffn_embed_dim = safe_getattr(args, "decoder_ffn_embed_dim", 256)
    args.decoder_attention_heads = safe_getattr(args, "decoder_attention_heads", 2)
    compatible_transformer_lm_base(args)


@register_model_architecture("compatible_transformer", "compatible_transformer")
def compatible_transformer(args):
    """Stock ``transformer`` sizes plus word-dropout defaults."""
    set_word_dropout_defaults(args)
    base_architecture(args)


@register_model_architecture("compatible_transformer", "compatible_transformer_iwslt_de_en")
def compatible_transformer_iwslt_de_en(args):
    """Stock ``transformer_iwslt_de_en`` sizes plus word-dropout defaults."""
    set_word_dropout_defaults(args)
    transformer_iwslt_de_en(args)
