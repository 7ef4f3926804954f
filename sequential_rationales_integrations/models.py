"""Which text model a path names, loaded: a Hugging Face model folder (``config.json``: a causal
LM, or an encoder-decoder translation model such as Marian, BART or T5), or a fairseq
translation checkpoint of the plugin (a ``.pt`` file, or a folder with ``checkpoint_best.pt``,
``checkpoint_last.pt`` or a single ``.pt`` file)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sequential_rationales.validation import InputError

from .sharding import resolve_device


def fairseq_checkpoint(path: Path) -> Path | None:
    """The checkpoint file ``path`` names, if it names one."""
    if path.is_file():
        return path if path.suffix == ".pt" else None
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.pt"))
    return found[0] if len(found) == 1 else None


def is_adapter(path: Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder."""
    return (path / "adapter_config.json").is_file()


def load_text_model(model: str | os.PathLike, tokenizer: Any, device: str | None,
                    dtype: str | None, data: str | os.PathLike | None,
                    base_model: str | os.PathLike | None = None,
                    device_map: str | dict | None = None) -> Any:
    """The text model of ``model`` (see :func:`sequential_rationales.text.load`)."""
    path = Path(model).expanduser()
    device = resolve_device(device)
    if not path.exists():
        raise InputError(f"--model {path} does not exist")
    if path.is_dir() and ((path / "config.json").is_file() or is_adapter(path)):
        from .huggingface.locations import TOKENIZER_FILES
        from .huggingface.lora import adapter_base
        from .huggingface.seq2seq_text import Seq2SeqTranslator, is_encoder_decoder
        from .huggingface.text import CausalLM

        if data is not None:
            raise InputError(f"--data is the binarized data folder of a fairseq checkpoint; "
                             f"the Hugging Face model {path} takes none (leave --data out)")
        base = adapter_base(path, None if base_model is None else str(base_model))
        if tokenizer is None and base is not None and not any(
                (path / name).is_file() for name in TOKENIZER_FILES):
            tokenizer = base  # an adapter saved without its tokenizer: the base model's
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = Path(tokenizer or path).expanduser()
        if is_encoder_decoder(path, base):
            return Seq2SeqTranslator.load(path, tokenizer, device, dtype, base, device_map)
        return CausalLM.load(path, tokenizer, device, dtype, base, device_map)
    if base_model is not None:
        raise InputError(f"--base-model is for adapter folders; {path} is none")
    if device_map is not None:
        raise InputError("--device-map is for Hugging Face models; a fairseq checkpoint runs "
                         "on one --device")
    checkpoint = fairseq_checkpoint(path)
    if checkpoint is None:
        raise InputError(f"--model {path} is neither a Hugging Face model directory (no "
                         "config.json) nor a fairseq checkpoint (.pt)")
    if tokenizer is not None:
        raise InputError(f"--tokenizer is for Hugging Face models; the fairseq checkpoint "
                         f"{checkpoint} reads its dictionaries from --data (leave --tokenizer "
                         "out)")
    if data is None:
        raise InputError(f"--model {checkpoint} is a fairseq checkpoint: pass --data, its "
                         "binarized data directory (with the dictionaries)")
    from .fairseq.text import FairseqTranslator

    return FairseqTranslator.load(checkpoint, Path(data), device, dtype)
