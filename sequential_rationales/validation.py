"""Checks of user input, each raising an error whose message names the problem.

[`InputError`][sequential_rationales.validation.InputError] marks a problem with what the user
gave; the `check_*` functions raise `ValueError` or `TypeError` for arguments of the Python API.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
from torch import Tensor


class InputError(ValueError):
    """A problem with what the user gave (a file, a flag, a model folder), not a bug in the
    program.

    A subclass of `ValueError`. The command-line programs print its message as one line,
    `error: ...`, and exit with status 2 (the traceback only under `--verbose`).
    """


def _not_utf8(path: str | os.PathLike, line: int, offset: int,
              error: UnicodeDecodeError) -> InputError:
    return InputError(f"{path}, line {line}, byte {offset}: not UTF-8 text ({error.reason}); "
                      "save the file as UTF-8")


def utf8_lines(path: str | os.PathLike) -> Iterator[str]:
    """Read the lines of a UTF-8 text file as they are needed.

    Args:
        path: the file to read.

    Yields:
        Each line without its line end (`\\n` or `\\r\\n`); the first without a byte-order mark.

    Raises:
        InputError: the file holds bytes that are not UTF-8; the message names the file, the
            line and the byte offset.
    """
    offset = 0
    with open(path, "rb") as file:
        for number, raw in enumerate(file, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise _not_utf8(path, number, offset + error.start, error) from None
            offset += len(raw)
            yield (line.removeprefix("\ufeff") if number == 1 else line).rstrip("\r\n")


def read_utf8(path: str | os.PathLike) -> str:
    """Read the whole text of a UTF-8 file, a leading byte-order mark dropped.

    Args:
        path: the file to read.

    Returns:
        The file's text, line ends as they are.

    Raises:
        InputError: the file holds bytes that are not UTF-8; the message names the file, the
            line and the byte offset (as `utf8_lines`).
    """
    with open(path, "rb") as file:
        data = file.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        start = error.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        raise _not_utf8(path, data.count(b"\n", 0, start) + 1, start, error) from None


def check_id_tensor(ids: object, name: str, min_length: int) -> None:
    """Check that `ids` is a 1-D integer tensor of at least `min_length` tokens.

    Args:
        ids: the value to check.
        name: the argument's name, for the error message.
        min_length: the fewest tokens allowed.

    Raises:
        TypeError: `ids` is not a tensor, or holds floating-point, boolean or complex values.
        ValueError: `ids` is not 1-D (a `[1, T]` batch of one is named as such) or is too
            short.
    """
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
    """Check token ids against a model's vocabulary and positions.

    Args:
        ids: the value to check, a 1-D integer tensor `[T]`.
        name: the argument's name, for the error messages.
        vocab_size: ids must lie in `[0, vocab_size)`.
        max_positions: the most tokens the model accepts; `None` for no limit.
        min_length: the fewest tokens allowed.

    Returns:
        `ids` as a 1-D `int64` tensor on the CPU, detached.

    Raises:
        TypeError: as `check_id_tensor`.
        ValueError: as `check_id_tensor`, or an id lies outside the vocabulary, or there are
            more than `max_positions` tokens.
    """
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
    """Check that `value` is an integer of at least 1 (not a `bool`) and return it.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Raises:
        ValueError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def check_start_step(start_step: object, seq_len: int) -> int:
    """Check that `start_step` is an integer in `[0, seq_len - 2]` (so that at least one
    position, `start_step + 1`, is rationalized) and return it.

    Args:
        start_step: the value to check.
        seq_len: the sequence's length.

    Raises:
        ValueError: it is not.
    """
    if isinstance(start_step, bool) or not isinstance(start_step, int) or not (
            0 <= start_step <= seq_len - 2):
        raise ValueError(
            f"start_step must be an integer in [0, {seq_len - 2}] for a sequence of {seq_len} "
            f"tokens (the first rationalized position is start_step + 1), got {start_step!r}")
    return start_step


def check_probability(value: object, name: str) -> float:
    """Check that `value` is a number in `[0, 1]` (not a `bool`) and return it as a `float`.

    Args:
        value: the value to check.
        name: the argument's name, for the error message.

    Raises:
        ValueError: it is not.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


def check_choice(value: object, name: str, choices: list[str] | tuple[str, ...]) -> str:
    """Check that `value` is one of `choices` and return it.

    Args:
        value: the value to check.
        name: what the value is, for the error message.
        choices: the allowed values.

    Raises:
        ValueError: it is not; the message lists the choices.
    """
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value  # type: ignore[return-value]


def check_decoder(decode: object, name: str = "decode") -> None:
    """Check that `decode` is callable (a function from a token id to its text), before a
    search whose log needs it.

    Args:
        decode: the value to check.
        name: the argument's name, for the error message.

    Raises:
        TypeError: it is not callable.
    """
    if not callable(decode):
        raise TypeError(f"{name} must be a function from a token id to its text (e.g. "
                        f"lambda i: tokenizer.decode([i])), got {type(decode).__name__}")


def check_tokenizer(tokenizer: object, name: str = "tokenizer") -> object:
    """Check that `tokenizer` has a `decode()` method, before a search whose log needs it.

    Args:
        tokenizer: the value to check.
        name: the argument's name, for the error message.

    Returns:
        The tokenizer.

    Raises:
        TypeError: it has none.
    """
    if not callable(getattr(tokenizer, "decode", None)):
        raise TypeError(f"{name} must be a tokenizer with a decode() method (e.g. "
                        f"AutoTokenizer.from_pretrained(...)), got {type(tokenizer).__name__}")
    return tokenizer
