"""Checks of user input, each raising an error whose message names the problem."""

from __future__ import annotations

import torch
from torch import Tensor


def check_id_tensor(ids: object, name: str, min_length: int) -> None:
    """``ids`` must be a 1-D integer tensor of at least ``min_length`` tokens."""
    if not isinstance(ids, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(ids).__name__}")
    if ids.dim() == 2 and ids.shape[0] == 1:
        raise ValueError(
            f"{name} must be 1-D [seq_len], got shape {list(ids.shape)}; pass {name}[0] "
            "to rationalize a single sequence")
    if ids.dim() != 1:
        raise ValueError(f"{name} must be 1-D [seq_len], got shape {list(ids.shape)}")
    if ids.dtype.is_floating_point or ids.dtype == torch.bool or ids.dtype.is_complex:
        raise TypeError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() < min_length:
        raise ValueError(
            f"{name} has {ids.numel()} token(s); at least {min_length} are needed "
            "(a context token and a token to predict)" if min_length > 1 else
            f"{name} is empty")


def check_token_ids(ids: object, name: str, vocab_size: int, max_positions: int | None,
                    min_length: int) -> Tensor:
    """Return ``ids`` as a 1-D CPU ``LongTensor`` after checking it."""
    check_id_tensor(ids, name, min_length)
    if not ids.numel():
        return ids.detach().to("cpu", torch.long)
    lo, hi = int(ids.min()), int(ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} contains id {bad}, outside the vocabulary [0, {vocab_size})")
    if max_positions is not None and ids.numel() > max_positions:
        raise ValueError(
            f"{name} has {ids.numel()} tokens but the model accepts at most {max_positions} "
            "positions")
    return ids.detach().to("cpu", torch.long)


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_start_step(start_step: object, seq_len: int) -> int:
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not (
            0 <= start_step <= seq_len - 2):
        raise ValueError(
            f"start_step must be an integer in [0, {seq_len - 2}] for a sequence of {seq_len} "
            f"tokens (the first rationalized position is start_step + 1), got {start_step!r}")
    return start_step


def check_probability(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: list[str] | tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value  # type: ignore[return-value]


def check_tokenizer(tokenizer: object, name: str = "tokenizer") -> object:
    """A tokenizer must decode token ids: checked before a search whose log it would break."""
    if not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"{name} must be a tokenizer with a decode() method (e.g. "
                        f"AutoTokenizer.from_pretrained(...)), got {type(tokenizer).__name__}")
    return tokenizer
