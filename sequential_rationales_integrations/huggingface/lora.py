"""LoRA compatibility fine-tuning with PEFT, and PEFT adapter folders wherever a model folder
goes.

``run_clm.py`` and ``run_translation.py`` take TRL's flag names (:class:`LoraArguments`):
``--use_peft`` wraps the pretrained model in low-rank adapters after word dropout is set up on
it, so word dropout is unchanged; ``Trainer.save_model`` then writes the adapter the PEFT way
(``adapter_config.json``, ``adapter_model.safetensors``). An adapter folder names its base model
(``base_model_name_or_path``, stored as an absolute path when the base is a local folder);
:func:`load_with_adapter` loads the base, puts the adapter on it and, for rationalization,
merges it into the weights (the same function, one plain model).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sequential_rationales.validation import InputError

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


@dataclass(kw_only=True)
class LoraArguments:
    """``HfArgumentParser`` fields of LoRA fine-tuning, named as TRL names them (keyword-only,
    so that a subclass may add required fields)."""

    use_peft: bool = field(
        default=False,
        metadata={"help": "Train low-rank adapters (LoRA, with the peft library) instead of "
                          "every weight; word dropout applies unchanged. The output folder "
                          "holds the adapter (adapter_config.json), which rationalize and "
                          "sr.load accept like a model folder."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Module names (or 'all-linear') that get adapters. Default: peft's "
                          "choice for the model family (e.g. q_proj v_proj for Llama, c_attn "
                          "for GPT-2), else every linear layer."})
    base_model: str | None = field(
        default=None,
        metadata={"help": "When --model_name_or_path is an adapter folder: its base model "
                          "(default: the one its adapter_config.json names)."})

    def __post_init__(self) -> None:
        if self.lora_r < 1:
            raise InputError(f"--lora_r must be >= 1, got {self.lora_r}")
        if self.lora_alpha <= 0:
            raise InputError(f"--lora_alpha must be > 0, got {self.lora_alpha}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise InputError(f"--lora_dropout must be in [0, 1), got {self.lora_dropout}")


def target_modules(model: Any, requested: list[str] | None) -> list[str] | str | None:
    """``requested`` (``["all-linear"]`` as peft's string), else peft's default for the model
    type (``None`` lets peft apply it), else every linear layer."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    if requested:
        return "all-linear" if requested == ["all-linear"] else list(requested)
    model_type = getattr(model.config, "model_type", None)
    return None if model_type in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING else (
        "all-linear")


def add_lora(model: Any, args: LoraArguments, task_type: str, base: str | None) -> Any:
    """``model`` wrapped in trainable LoRA adapters (``task_type``: ``CAUSAL_LM`` or
    ``SEQ_2_SEQ_LM``); ``base``: the pretrained folder or hub name it was loaded from."""
    from peft import LoraConfig, get_peft_model

    if base is None:
        raise InputError("--use_peft fine-tunes a pretrained model: pass --model_name_or_path "
                         "(training from scratch trains every weight)")
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha,
                        lora_dropout=args.lora_dropout, task_type=task_type,
                        target_modules=target_modules(model, args.lora_target_modules))
    try:
        wrapped = get_peft_model(model, config)
    except ValueError as error:  # e.g. target modules the model does not have
        raise InputError(f"--use_peft: {error}") from None
    local = Path(base).expanduser()
    wrapped.peft_config["default"].base_model_name_or_path = (
        str(local.resolve()) if local.is_dir() else base)
    trainable, total = wrapped.get_nb_trainable_parameters()
    logger.info("LoRA: %s trainable parameters of %s (%.2f%%), target modules %s", trainable,
                total, 100 * trainable / total, sorted(wrapped.peft_config["default"]
                                                       .target_modules))
    return wrapped


def adapter_base(folder: str | Path, base_model: str | None = None) -> str | None:
    """The base model of the adapter folder ``folder`` (``base_model`` when given, else its
    ``adapter_config.json``'s), checked to be there, or None when ``folder`` holds no
    adapter."""
    path = Path(folder).expanduser() / ADAPTER_CONFIG
    if not path.is_file():
        if base_model is not None:
            raise InputError(f"--base-model is for adapter folders; {folder} has no "
                             f"{ADAPTER_CONFIG}")
        return None
    base = base_model
    if base is None:
        try:
            base = json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            base = None
    if not isinstance(base, str) or not base:
        raise InputError(f"{path} names no base model (base_model_name_or_path); pass "
                         "--base-model DIR")
    from .locations import check_model_location

    try:
        check_model_location(base, "base model")
    except OSError as error:
        raise InputError(str(error)) from None
    local = Path(base).expanduser()
    if local.is_dir() and not (local / "config.json").is_file():
        raise InputError(f"the adapter's base model {base} is not a model folder (no "
                         "config.json); pass the base with --base-model")
    return base


def attach_adapter(model: Any, folder: str | Path, trainable: bool) -> Any:
    """``model`` with the adapter of ``folder`` on it (``trainable``: to train it further)."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, str(folder), is_trainable=trainable)
    except (ValueError, RuntimeError, KeyError) as error:
        lines = str(error).strip().splitlines()
        raise InputError(f"the adapter {folder} does not fit the base model "
                         f"{type(model).__name__}: {lines[0] if lines else type(error).__name__}"
                         ) from None


def with_adapters(model: Any, args: LoraArguments, name: str | None, adapter_of: str | None,
                  task_type: str, trainable: bool) -> Any:
    """What the fine-tuning scripts train or evaluate, after word dropout is set up on
    ``model``: the adapter folder ``name`` put back on its base ``adapter_of``, new LoRA
    adapters with ``--use_peft``, or ``model`` itself."""
    if adapter_of is not None:
        return attach_adapter(model, name, trainable)
    if args.use_peft:
        return add_lora(model, args, task_type, name)
    return model


def load_with_adapter(loader: Any, folder: str | Path, base: str, **kwargs: Any) -> Any:
    """The base model ``base`` (from :func:`adapter_base`; ``loader.from_pretrained``) with
    the adapter of ``folder`` merged into its weights: one plain model computing the adapted
    function."""
    from .locations import from_pretrained

    model = from_pretrained(loader, base, **kwargs)
    return attach_adapter(model, folder, trainable=False).merge_and_unload()
