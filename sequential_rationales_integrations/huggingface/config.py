"""Model configs for training and loading causal LMs: built from a name or a model type,
fitted to a tokenizer, and read for their context size; and the hub flags of the fine-tuning
scripts (:class:`HubArguments`).

Kept apart from :mod:`.training` (which imports the ``Trainer``) so that programs that only
load models stay light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sequential_rationales.validation import InputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class HubArguments:
    """Where pretrained models and tokenizers come from (``HfArgumentParser`` fields shared by
    the fine-tuning scripts; keyword-only so that a subclass may add required fields)."""

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

    def hub_kwargs(self) -> dict[str, Any]:
        """The ``from_pretrained`` keyword arguments these flags select."""
        return {"cache_dir": self.cache_dir, "revision": self.model_revision,
                "token": self.token, "trust_remote_code": self.trust_remote_code}


def model_max_positions(config: Any) -> int | None:
    """The model's context size (``max_position_embeddings`` or ``n_positions``), if any."""
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(text_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def load_config(*, config_name: str | None, model_name_or_path: str | None,
                model_type: str | None, config_overrides: str | None,
                attention_dropout: float | None, hub_kwargs: dict[str, Any]) -> Any:
    """The config of ``config_name``, else of ``model_name_or_path``, else a fresh one for
    ``model_type``; then ``config_overrides`` (``"k=v,k=v"``) and ``attention_dropout`` (set
    on every attention-dropout field the config has). Errors name the ``run_clm`` flags."""
    from transformers import AutoConfig

    if config_name:
        config = AutoConfig.from_pretrained(config_name, **hub_kwargs)
    elif model_name_or_path:
        config = AutoConfig.from_pretrained(model_name_or_path, **hub_kwargs)
    else:
        config = AutoConfig.for_model(model_type)
    if model_type is not None and config.model_type != model_type:
        raise InputError(f"--model_type {model_type} does not match the config's "
                         f"model type {config.model_type}")
    if config_overrides:
        logger.info("Overriding config: %s", config_overrides)
        config.update_from_string(config_overrides)
    if attention_dropout is not None:
        names = [n for n in ("attn_pdrop", "attention_dropout") if hasattr(config, n)]
        if not names:
            raise InputError(f"--attention_dropout: {type(config).__name__} has no attention "
                             "dropout setting (attn_pdrop or attention_dropout)")
        for name in names:
            setattr(config, name, attention_dropout)
    return config


def overridden_keys(config_overrides: str | None) -> set[str]:
    """The keys set by a ``"k=v,k=v"`` override string."""
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
