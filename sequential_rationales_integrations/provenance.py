"""Provenance of written results: which model, tokenizer, method and search settings produced
them, so that a resumed run or an evaluation never mixes results of different runs.

A provenance record is a small JSON object::

    {"program": "rationalize", "version": "0.1.0", "method": "greedy",
     "model": {"path": "/abs/model", "fingerprint": "3f2a..."},
     "tokenizer": {"path": "/abs/model", "fingerprint": "91c0..."},
     "settings": {"max_steps": 1024, "start_step": null, "generate": null, ...}}

The fingerprint of a model hashes its ``config.json`` and, for every weights file, its name,
size and first and last MiB (fast on multi-gigabyte checkpoints, and it changes whenever the
weights are retrained or replaced). Two records describe the same run when their method,
settings, model fingerprint and tokenizer fingerprint agree; paths and the package version are
kept for the reader but not compared (a moved model or an upgraded package writes the same
results).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sequential_rationales.methods import default_max_steps
from sequential_rationales.results import write_json_atomic
from sequential_rationales.validation import InputError

FOLDER_FILE = "provenance.json"  # in a runner's output folder
CONFIG_FILES = ("config.json", "generation_config.json", "adapter_config.json")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                   "tokenizer.model", "spiece.model", "vocab.txt", "special_tokens_map.json",
                   "added_tokens.json")
EDGE = 1 << 20  # bytes hashed at each end of a weights file


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("sequential-rationales")
    except Exception:  # not installed as a distribution (a source checkout)
        return "unknown"


def _edges(path: Path) -> str:
    """sha256 of a file's size, first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(EDGE))
        if size > EDGE:
            f.seek(max(EDGE, size - EDGE))
            digest.update(f.read(EDGE))
    return digest.hexdigest()


def _whole(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fingerprint(path: str | os.PathLike, small_files: tuple[str, ...] = CONFIG_FILES
                ) -> str | None:
    """A short hash of a model (a folder or one checkpoint file) or tokenizer folder: the
    whole of its ``small_files``, the size and edges of its weight files. ``None`` when
    ``path`` is not on disk (a hub name)."""
    path = Path(path)
    if path.is_file():
        parts = [f"{path.name}:{_edges(path)}"]
    elif path.is_dir():
        parts = []
        for child in sorted(path.iterdir()):
            if not child.is_file():
                continue
            if child.name in small_files or child.name.endswith(".index.json"):
                parts.append(f"{child.name}:{_whole(child)}")
            elif child.name.endswith(WEIGHT_SUFFIXES):
                parts.append(f"{child.name}:{_edges(child)}")
    else:
        return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def identity(path: str | os.PathLike, small_files: tuple[str, ...] = CONFIG_FILES
             ) -> dict[str, Any]:
    """``{"path": resolved path, "fingerprint": ...}`` of a model or tokenizer."""
    local = Path(path)
    return {"path": str(local.resolve()) if local.exists() else str(path),
            "fingerprint": fingerprint(local, small_files)}


def search_settings(method: str, max_steps: int | None, integrated_gradient_steps: int | None,
                    precision: str = "auto") -> dict[str, Any]:
    """The search settings results depend on, as a provenance record holds them (the
    integrated-gradient steps only for the methods that use them; the precision only when it
    is plain ``bf16``: the exact precisions give the same results, so one may resume another).
    """
    settings = {"max_steps": max_steps or default_max_steps(method),
                "integrated_gradient_steps": (integrated_gradient_steps
                                              if "integrated_gradient" in method else None)}
    if precision == "bf16":
        settings["precision"] = precision
    return settings


def make(program: str, method: str, model: str | os.PathLike, tokenizer: str | os.PathLike,
         settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The provenance record of a run (``extra``: e.g. ``experiment``, ``data``)."""
    return {"program": program, "version": package_version(), "method": method,
            "model": identity(model), "tokenizer": identity(tokenizer, TOKENIZER_FILES),
            **extra, "settings": dict(settings)}


def _same_identity(old: Any, new: Any) -> bool:
    if not isinstance(old, dict) or not isinstance(new, dict):
        return old == new
    if old.get("fingerprint") is not None or new.get("fingerprint") is not None:
        return old.get("fingerprint") == new.get("fingerprint")
    return old.get("path") == new.get("path")


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The fields (``method``, ``model``, ``tokenizer``, ``settings.NAME``, other top-level
    keys but ``version``) in which two records differ, in a stable order."""
    fields = []
    for key in sorted(set(old) | set(new), key=lambda k: (k != "method", k)):
        if key in ("version", "settings"):
            continue
        if key in ("model", "tokenizer"):
            if not _same_identity(old.get(key), new.get(key)):
                fields.append(key)
        elif old.get(key) != new.get(key):
            fields.append(key)
    old_settings, new_settings = old.get("settings") or {}, new.get("settings") or {}
    for name in sorted(set(old_settings) | set(new_settings)):
        if old_settings.get(name) != new_settings.get(name):
            fields.append(f"settings.{name}")
    return fields


def _describe(record: dict[str, Any], field: str, flag: Callable[[str], str]) -> str:
    if field.startswith("settings."):
        name = field.split(".", 1)[1]
        value = (record.get("settings") or {}).get(name, None)
        option = flag(name)
        if value is None or value is False:
            return f"no {option}"
        return option if value is True else f"{option} {value}"
    value = record.get(field)
    if field in ("model", "tokenizer") and isinstance(value, dict):
        short = (value.get("fingerprint") or "?")[:8]
        return f"--{field} {value.get('path')} (fingerprint {short})"
    if field == "method":
        return f"--method {value}"
    return f"{field} {value}"


def explain(old: dict[str, Any], new: dict[str, Any], fields: list[str],
            flag: Callable[[str], str]) -> tuple[str, str]:
    """How the old and the new run differ in ``fields``, e.g. ``("--max-steps 3",
    "--max-steps 5")``; ``flag`` turns a setting's name into its command-line flag."""
    return (", ".join(_describe(old, f, flag) for f in fields),
            ", ".join(_describe(new, f, flag) for f in fields))


def read(path: Path, fix: str = "delete it or pass --overwrite") -> dict[str, Any] | None:
    """A provenance file, ``None`` when missing; one error line (ending with ``fix``) when it
    is not one."""
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        record = None
    if not isinstance(record, dict) or "method" not in record or "settings" not in record:
        raise InputError(f"{path} is not a provenance record; {fix}")
    return record


def needs_writing(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether ``new`` replaces ``old`` (a resume of the same run keeps the file untouched)."""
    return old is None or bool(differences(old, new))


def write(record: dict[str, Any], path: Path) -> None:
    """Atomically (temporary file, rename)."""
    write_json_atomic(record, path)


def check_resume(old: dict[str, Any] | None, new: dict[str, Any], where: str, has_results: bool,
                 flag: Callable[[str], str], new_out: str) -> None:
    """Stop with one line when a resume would mix runs: results in ``where`` written with
    another provenance, or without one. ``new_out``: how to name a new output (the flag)."""
    if not has_results:
        return
    if old is None:
        raise InputError(f"{where} holds results written without a provenance record "
                         f"(an older version): cannot tell which run they belong to; write to "
                         f"a new {new_out} or pass --overwrite")
    fields = differences(old, new)
    if fields:
        before, after = explain(old, new, fields, flag)
        raise InputError(f"{where} was written by {before}, this run has {after}: "
                         f"write to a new {new_out} or pass --overwrite")
