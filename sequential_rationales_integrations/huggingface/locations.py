"""Checks of where models, tokenizers and outputs live, made before anything is loaded or
trained: ``from_pretrained`` reads a missing local folder as a hub id (failing with "Repo id
must be in the form ..." or minutes of network retries) and builds an empty tokenizer from a
model folder without tokenizer files, so every text tokenizes to nothing.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from sequential_rationales.validation import InputError

# Files one of which every saved Hugging Face tokenizer has.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a local folder rather than a hub id: it starts with
    ``.``, ``/`` or ``~``, has more separators than ``namespace/name``, or its first part is
    an existing local folder."""
    if name.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in name):
        return True
    parts = name.split("/")
    return len(parts) > 2 or (len(parts) == 2 and Path(parts[0]).is_dir())


def check_model_location(name: str | None, what: str = "model") -> None:
    """A path-like ``name`` must be an existing folder."""
    if name is None or not looks_like_path(name):
        return
    path = Path(name).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{what} directory {name} does not exist")
    if not path.is_dir():
        raise NotADirectoryError(f"{what} directory {name} is not a directory")


def check_tokenizer_location(name: str | None, flag: str) -> None:
    """Like :func:`check_model_location`; a local folder must also hold tokenizer files."""
    check_model_location(name, "tokenizer")
    if name is None or not Path(name).expanduser().is_dir():
        return
    if not any((Path(name).expanduser() / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(
            f"{name} has no tokenizer files (none of {', '.join(TOKENIZER_FILES)}); pass a "
            f"folder that has them with {flag}, e.g. the base model's folder")


def check_loaded_tokenizer(tokenizer: Any, name: str) -> None:
    """A tokenizer with (almost) no vocabulary turns every text into no tokens."""
    if len(tokenizer) < 2:
        raise InputError(f"the tokenizer loaded from {name} has {len(tokenizer)} token(s); "
                         "its vocabulary files are missing or empty")


def check_writable_directory(path: str, flag: str) -> None:
    """Create ``path`` if needed and write a probe file, so a read-only or impossible output
    folder fails before hours of training rather than at the first checkpoint."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise PermissionError(f"{flag} {path} is not a writable directory: "
                              f"{e.strerror or e}") from None


WEIGHT_PICKLES = ("*.bin", "*.pt", "*.pth")


def from_pretrained(loader: Any, name: str | Path, **kwargs: Any) -> Any:
    """``loader.from_pretrained(name, **kwargs)``; a weight file of a local folder that it
    cannot read is named in an :class:`InputError` (transformers' own error names none)."""
    try:
        return loader.from_pretrained(name, **kwargs)
    except Exception as error:
        problem = weight_file_problem(name)
        if problem is None:
            raise
        raise InputError(problem) from error


def weight_file_problem(name: str | Path) -> str | None:
    """What is wrong with the first unreadable weight file of the local model folder
    ``name``: empty, truncated or damaged safetensors, or a pickle that safe loading refuses
    (it would run code) or cannot read. None when the folder's weight files read."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        return None
    again = "save or download the model again"
    empty = "is empty (0 bytes), as an interrupted save or download leaves it"
    for file in sorted(folder.glob("*.safetensors")):
        if file.stat().st_size == 0:
            return f"{file} {empty}; {again}"
        from safetensors import safe_open

        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as error:
            detail = str(error).rpartition(": ")[2] or type(error).__name__
            return f"{file} is not a complete safetensors file ({detail}); {again}"
    for file in sorted(f for pattern in WEIGHT_PICKLES for f in folder.glob(pattern)):
        if file.stat().st_size == 0:
            return f"{file} {empty}; {again}"
        import torch

        try:
            torch.load(file, map_location="cpu", weights_only=True)
        except Exception as error:
            refused = re.search(r"unsupported GLOBAL (\S+)", str(error))
            if refused:
                return (f"{file} holds code that safe loading refuses (it calls "
                        f"{refused.group(1)}); if you trust its source, convert it to "
                        "safetensors (load it with weights_only=False and save_pretrained)")
            lines = str(error).strip().splitlines()
            detail = (
                "damaged" if "WeightsUnpickler" in str(error) or not lines
                else lines[0].split(". ")[0])
            return f"{file} is not a readable PyTorch weight file ({detail}); {again}"
    return None
