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
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import zipfile
from typing import Any

import numpy as np
import torch


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
torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """``torch.load`` a fairseq checkpoint safely, with errors that name the file.

    Raises ``FileNotFoundError`` (missing) or ``ValueError`` (corrupt, truncated, not a
    checkpoint, or holding objects outside the allowlist).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"fairseq checkpoint not found: {path}")
    try:
        # Memory-map zip checkpoints: this read only inspects the config, so tensors need not
        # be copied into memory.
        state = torch.load(path, map_location="cpu", weights_only=True,
                           mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        if "Unsupported global" in str(error) or "weights_only" in str(error).lower():
            raise ValueError(f"fairseq checkpoint {path} holds objects that safe loading "
                             f"does not allow: {error}") from error
        raise ValueError(f"fairseq checkpoint {path} is corrupt or truncated: {error}"
                         ) from error
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(f"fairseq checkpoint {path} is corrupt or truncated: {error}"
                         ) from error
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a fairseq checkpoint (no 'model' entry)")
    return state


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
    raise ValueError("the checkpoint names no task (neither cfg.task._name nor args.task)")


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
