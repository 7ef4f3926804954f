"""fairseq plugin: compatible (word-dropout) models with sparse evaluation at original positions.

Importing this package registers, once per process, the fairseq models
``compatible_transformer_lm`` (archs ``transformer_lm_majority_class``,
``compatible_transformer_lm_base``) and ``compatible_transformer`` (archs
``compatible_transformer``, ``compatible_transformer_iwslt_de_en``), and allowlists the globals
fairseq stores in its checkpoints for torch's safe loading. The fairseq command-line tools
reach it through the ``--user-dir fairseq/sequential_rationales_plugin`` shim, which only
imports this package: the registrations live under one module name, so loading a checkpoint
whose config names the user dir never registers them twice. It also makes fairseq's own
checkpoint loading check zip CRCs and name a corrupt file (:mod:`.checkpoints`).

See :mod:`.models` (word dropout, architectures, a custom-architecture example) and
:mod:`.modules` (the extra encoder/decoder arguments: ``positions``, ``token_embeddings``,
``keep``, ``source_keep``, ``return_all_attentions``; the empty-source rule).
"""

from .checkpoints import (
    FAIRSEQ_CHECKPOINT_GLOBALS,
    install_checked_loading,
    load_hub_model,
    read_checkpoint,
    verify_checkpoint_file,
)
from .config import WordDropoutConfig, set_word_dropout_defaults, word_dropout_from_cfg
from .models import (
    CompatibleTransformerLanguageModel,
    CompatibleTransformerModel,
    compatible_transformer,
    compatible_transformer_iwslt_de_en,
    compatible_transformer_lm_base,
    transformer_lm_majority_class,
)
from .modules import (
    CompatibleTransformerDecoder,
    CompatibleTransformerEncoder,
    embed_original_positions,
)

install_checked_loading()

__all__ = [
    "FAIRSEQ_CHECKPOINT_GLOBALS", "CompatibleTransformerDecoder", "CompatibleTransformerEncoder",
    "CompatibleTransformerLanguageModel", "CompatibleTransformerModel", "WordDropoutConfig",
    "compatible_transformer", "compatible_transformer_iwslt_de_en",
    "compatible_transformer_lm_base", "embed_original_positions", "load_hub_model",
    "read_checkpoint", "set_word_dropout_defaults", "transformer_lm_majority_class",
    "verify_checkpoint_file", "word_dropout_from_cfg",
]
