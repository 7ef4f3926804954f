"""What every program of the project shares: its argument parser (``--verbose`` included),
integer flag types, and how a program turns an input error into one line and exit status 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from sequential_rationales.validation import InputError

VERBOSE_HELP = "on an error, show the full traceback instead of one line"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` unless the help already states the default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


class ProgramParser(argparse.ArgumentParser):
    """The parser of every program: :class:`HelpFormatter`, and ``--verbose``, which
    :func:`program_status` reads (``verbose_help`` adds what else a program does with it)."""

    def __init__(self, *args: Any, verbose_help: str = VERBOSE_HELP, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--verbose", action="store_true", help=verbose_help)


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for flags that take an integer >= ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    return parse


positive_int = int_at_least(1)  # counts, sizes, steps
non_negative_int = int_at_least(0)  # seeds


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type when it has none): library errors
    often add paragraphs that would break the one-line error."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def input_error_message(error: BaseException) -> str | None:
    """The one line to print for an error in the user's input, or None for anything else
    (a bug, whose traceback is worth reporting)."""
    if isinstance(error, SystemExit):
        if not isinstance(error.code, str):
            return None  # argparse's own errors and --help have printed already
        text = error.code
    elif isinstance(error, InputError):
        text = str(error)
    elif isinstance(error, OSError) and error.filename is not None:
        text = f"{error.filename}: {error.strerror or error}"
    elif isinstance(error, FileNotFoundError):  # raised with a message that names the file
        text = str(error)
    else:
        return None
    return text if text.startswith("error: ") else f"error: {text}"


def program_status(main: Callable[[list[str] | None], Any], argv: list[str] | None = None
                   ) -> int:
    """Run a program's ``main`` and return its exit status: 0 (or the integer ``main``
    returns); 2 after printing an input error as one line, ``error: ...``, on stderr; 130 on
    Ctrl-C. Under ``--verbose`` errors keep their traceback. ``main`` itself raises, so
    Python callers see the exception."""
    verbose = "--verbose" in (sys.argv[1:] if argv is None else argv)
    try:
        result = main(argv)
    except KeyboardInterrupt:
        if verbose:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except (Exception, SystemExit) as error:
        message = input_error_message(error)
        if message is None or verbose:
            raise
        print(message, file=sys.stderr)
        return 2
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def run_program(main: Callable[[list[str] | None], Any]) -> NoReturn:
    """``if __name__ == "__main__": run_program(main)``: exit with :func:`program_status`."""
    sys.exit(program_status(main))
