"""Which text model a path names, loaded: a Hugging Face causal LM folder (``config.json``) or
a fairseq translation checkpoint of the plugin (a ``.pt`` file, or a folder with
``checkpoint_best.pt``, ``checkpoint_last.pt`` or a single ``.pt`` file)."""

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


def load_text_model(model: str | os.PathLike, tokenizer: Any, device: str | None,
                    dtype: str | None, data: str | os.PathLike | None) -> Any:
    """The text model of ``model`` (see :func:`sequential_rationales.text.load`)."""
    path = Path(model).expanduser()
    device = resolve_device(device)
    if not path.exists():
        raise InputError(f"--model {path} does not exist")
    if path.is_dir() and (path / "config.json").is_file():
        from .huggingface.text import CausalLM

        if data is not None:
            raise InputError(f"--data is the binarized data folder of a fairseq checkpoint; "
                             f"the Hugging Face model {path} takes none (leave --data out)")
        if tokenizer is None or isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = Path(tokenizer or path).expanduser()
        return CausalLM.load(path, tokenizer, device, dtype)
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
