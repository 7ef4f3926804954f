"""Which text model a path names, loaded: a Hugging Face model folder (``config.json``: a causal
LM, or an encoder-decoder translation model such as Marian, BART or T5), or a fairseq
translation checkpoint of the plugin (a ``.pt`` file, or a folder with ``checkpoint_best.pt``,
``checkpoint_last.pt`` or a single ``.pt`` file)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from sequential_rationales.validation import InputError

from .cli import first_line
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


# A Hugging Face Hub model id: "name" or "owner/name" (letters, digits, ".", "-", "_").
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
# What a Hub snapshot needs to be rationalized: the config, safetensors weights and tokenizer
# files (not the duplicate PyTorch, TensorFlow, Flax or ONNX weights, nor remote code).
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def hub_snapshot(name: str) -> Path | None:
    """The local folder of a Hugging Face Hub model id: its snapshot in the Hugging Face cache,
    downloaded first when it is not there.

    Args:
        name: what `--model` names; not a Hub id (a path such as `./model` or `/x/y`) gives
            `None`.

    Returns:
        The snapshot folder, or `None` when `name` cannot be a Hub id.

    Raises:
        InputError: the id is not cached and cannot be downloaded (offline, unknown, private
            or gated), or the repository has no safetensors weights.
    """
    if not HUB_ID.fullmatch(name) or name.startswith("."):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
    )

    try:  # the cache first: no network call for a model fetched before
        folder = Path(snapshot_download(name, allow_patterns=HUB_FILES, local_files_only=True))
    except LocalEntryNotFoundError:
        try:
            folder = Path(snapshot_download(name, allow_patterns=HUB_FILES))
        except GatedRepoError:
            raise InputError(f"--model {name} is a gated model of the Hugging Face Hub: accept "
                             "its terms on its page, log in (hf auth login), and run again"
                             ) from None
        except RepositoryNotFoundError:
            raise InputError(f"--model {name} is neither a local folder nor a model of the "
                             "Hugging Face Hub (a private one needs hf auth login)") from None
        except (LocalEntryNotFoundError, OfflineModeIsEnabled):
            raise InputError(f"--model {name} is neither a local folder nor in the Hugging Face "
                             "cache, and the Hub cannot be reached: fetch it where it can (hf "
                             f"download {name} --local-dir DIR) and pass the folder") from None
        except (OSError, ValueError) as e:
            raise InputError(f"--model {name}: downloading it from the Hugging Face Hub failed "
                             f"({first_line(e)})") from None
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise InputError(f"--model {name} on the Hugging Face Hub has no config.json with "
                         "safetensors weights; save the model with save_pretrained and pass "
                         "the folder")
    return folder


def resolve_model(model: str | os.PathLike) -> Path:
    """The local path `--model` names: the path itself when it exists, else the Hugging Face
    cache's snapshot of the Hub model id it names (see [`hub_snapshot`]
    [sequential_rationales_integrations.models.hub_snapshot]).

    Raises:
        InputError: neither a path that exists nor a Hub model id that can be fetched.
    """
    path = Path(model).expanduser()
    if path.exists():
        return path
    snapshot = hub_snapshot(str(model))
    if snapshot is None:
        raise InputError(f"--model {path} does not exist")
    return snapshot


def load_text_model(model: str | os.PathLike, tokenizer: Any, device: str | None,
                    dtype: str | None, data: str | os.PathLike | None,
                    base_model: str | os.PathLike | None = None,
                    device_map: str | dict | None = None) -> Any:
    """The text model of ``model`` (see :func:`sequential_rationales.text.load`)."""
    device = resolve_device(device)
    path = resolve_model(model)
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
