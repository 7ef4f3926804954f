"""Loading fairseq checkpoints under torch's ``weights_only=True`` default (torch >= 2.6).

fairseq 0.12 calls ``torch.load`` without ``weights_only``; its checkpoints hold a few
non-tensor globals, which are allowlisted here (found by training tiny language and translation
models with fairseq-train, incl. ``--eval-bleu``, and loading their checkpoints):

* ``argparse.Namespace`` -- the model config of argparse-style models (``transformer``,
  ``compatible_transformer``);
* ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` and
  ``numpy.dtypes.Int64DType`` -- BLEU n-gram counts kept in the saved metrics by
  ``--eval-bleu``.

Safe loading stays on for everything else.

``torch.load`` does not check a zip checkpoint's CRCs, so a flipped bit in tensor data loads
silently: :func:`verify_checkpoint_file` checks them first. Importing the plugin (as
``--user-dir`` does) also routes fairseq's own ``checkpoint_utils.load_checkpoint_to_cpu``
through that check, so the fairseq CLIs name a corrupt file instead of printing a bare
``EOFError`` or loading damaged weights.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import pickle
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sequential_rationales.validation import InputError


def _numpy_reconstruct():
    # numpy 2 moved numpy.core to numpy._core (numpy 1.26 has only a stub of the latter).
    name = "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else \
        "numpy.core.multiarray"
    return importlib.import_module(name)._reconstruct


FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    _numpy_reconstruct(),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.int64)),
]


def allow_fairseq_globals() -> None:
    """Allowlist what fairseq stores in checkpoints for torch's safe loading. Done at import and
    again before every load: a library's ``torch.serialization.safe_globals`` block removes
    its globals on exit, ours included (transformers' Trainer does so for numpy when it resumes
    from a checkpoint)."""
    torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


allow_fairseq_globals()


def verify_checkpoint_file(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming ``path`` when a zip checkpoint's CRCs do not match (a flipped
    bit, a torn copy) or its zip structure is broken, or the file is empty. Legacy (non-zip)
    files pass unchecked."""
    if os.path.getsize(path) == 0:
        raise InputError(f"fairseq checkpoint {path} is empty (0 bytes): an interrupted save or "
                         "copy? restore or retrain it")
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as error:
        raise InputError(f"fairseq checkpoint {path} is corrupt or truncated: {error}"
                         ) from error
    if bad is not None:
        raise InputError(f"fairseq checkpoint {path} is corrupt: the CRC of its entry {bad} "
                         "does not match (damaged on disk or in a copy); restore or retrain it")


def _load_error(path: str | os.PathLike, error: Exception) -> ValueError:
    """The error for a checkpoint ``torch.load`` could not read, naming the file."""
    # Random bytes also fail the safe unpickler ("Unsupported operand"): only a global outside
    # the allowlist means an object that safe loading refuses.
    if isinstance(error, pickle.UnpicklingError) and "unsupported global" in str(error).lower():
        return ValueError(f"fairseq checkpoint {path} holds objects that safe loading does not "
                          f"allow: {_gist(error)}")
    return ValueError(f"fairseq checkpoint {path} is corrupt or truncated: "
                      f"{type(error).__name__}: {_gist(error)}")


def _gist(error: Exception) -> str:
    """torch's safe-unpickler message without its advice to turn safe loading off."""
    text = str(error)
    if "Weights only load failed" in text:
        found = [line.strip() for line in text.splitlines() if "nsupported" in line]
        return found[0] if found else "not a checkpoint torch can read"
    return text


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a fairseq checkpoint safely, with errors that name the file.

    Raises ``FileNotFoundError`` (missing) or ``ValueError`` (corrupt, truncated, not a
    checkpoint, or holding objects outside the allowlist).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fairseq checkpoint not found: {path}")
    verify_checkpoint_file(path)
    allow_fairseq_globals()
    try:
        # Memory-map zip checkpoints: this read only inspects the config, so tensors need not
        # be copied into memory.
        state = torch.load(path, map_location="cpu", weights_only=True,
                           mmap=zipfile.is_zipfile(path))
    except Exception as error:  # random bytes raise anything (IndexError, KeyError, ...)
        raise _load_error(path, error) from error
    if not isinstance(state, dict) or "model" not in state:
        raise InputError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return state


def _checked_loader(load: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap fairseq's ``load_checkpoint_to_cpu``: verify the file, name it in load errors."""
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args: Any, **kwargs: Any):
        if not os.path.isfile(path):  # remote or missing: fairseq's own handling
            return load(path, *args, **kwargs)
        verify_checkpoint_file(path)
        allow_fairseq_globals()
        try:
            return load(path, *args, **kwargs)
        except (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, IndexError,
                UnicodeDecodeError, RuntimeError) as error:
            raise _load_error(path, error) from error
    load_checkpoint_to_cpu.checks_files = True
    return load_checkpoint_to_cpu


def install_checked_loading() -> None:
    """Route ``fairseq.checkpoint_utils.load_checkpoint_to_cpu`` (used by fairseq-train,
    -generate, -eval-lm and ``from_pretrained``) through :func:`verify_checkpoint_file`; once."""
    from fairseq import checkpoint_utils

    if not getattr(checkpoint_utils.load_checkpoint_to_cpu, "checks_files", False):
        checkpoint_utils.load_checkpoint_to_cpu = _checked_loader(
            checkpoint_utils.load_checkpoint_to_cpu)


def checkpoint_task(state: dict) -> str:
    """Task name (``language_modeling``, ``translation``, ...) a checkpoint was trained with."""
    cfg = state.get("cfg")
    if cfg is not None:
        task = cfg["task"]
        name = task.get("_name") if isinstance(task, dict) else getattr(task, "_name", None)
        if name:
            return str(name)
    args = state.get("args")
    if args is not None and getattr(args, "task", None):
        return str(args.task)
    raise InputError("the checkpoint names no task (neither cfg.task._name nor args.task)")


def load_hub_model(checkpoint_dir: str | os.PathLike, checkpoint_file: str = "checkpoint_best.pt",
                   data_name_or_path: str | os.PathLike = ".", **kwargs: Any):
    """Load a fairseq checkpoint as a hub interface (``GeneratorHubInterface``).

    Imports the plugin first (so its architectures are registered and fairseq's checkpoint
    globals allowlisted), then calls ``TransformerLanguageModel.from_pretrained`` for
    language-modelling checkpoints and ``TransformerModel.from_pretrained`` otherwise.
    ``kwargs`` go to ``from_pretrained`` (e.g. ``user_dir``, ``bpe``, ``tokenizer``).

    Raises ``FileNotFoundError`` for a missing checkpoint or data directory and ``ValueError``
    for a corrupt or truncated checkpoint; both name the file.
    """
    from fairseq.models.transformer import TransformerModel
    from fairseq.models.transformer_lm import TransformerLanguageModel

    checkpoint_dir, data_name_or_path = os.fspath(checkpoint_dir), os.fspath(data_name_or_path)
    path = os.path.join(checkpoint_dir, checkpoint_file)
    state = read_checkpoint(path)
    task = checkpoint_task(state)
    del state
    if not data_name_or_path.startswith(".") and "://" not in data_name_or_path:
        if not os.path.exists(data_name_or_path):
            raise FileNotFoundError(f"fairseq data directory not found: {data_name_or_path}")
    hub_class = TransformerLanguageModel if task == "language_modeling" else TransformerModel
    return hub_class.from_pretrained(checkpoint_dir, checkpoint_file=checkpoint_file,
                                     data_name_or_path=data_name_or_path, **kwargs)
