"""Checks of where models, tokenizers and outputs live, made before anything is loaded or
trained: ``from_pretrained`` reads a missing local folder as a hub id (failing with "Repo id
must be in the form ..." or minutes of network retries) and builds an empty tokenizer from a
model folder without tokenizer files, so every text tokenizes to nothing.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

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
        raise ValueError(f"the tokenizer loaded from {name} has {len(tokenizer)} token(s); "
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
