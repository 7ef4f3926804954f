"""The console commands installed by ``pip install`` (see ``[project.scripts]``).

A program's ``main()`` returns its results to Python callers (a summary, written paths) and
raises on bad input; a console command returns an exit status instead (see
:func:`~sequential_rationales_experiments.cli.program_status`), or the launcher would print the
results and exit with 1.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .cli import program_status


def _command(name: str) -> Callable[[], int]:
    def run() -> int:
        return program_status(importlib.import_module(f"{__package__}.commands.{name}").main)

    run.__name__ = name
    run.__doc__ = f"Run ``commands.{name}.main()`` as a console command."
    return run


demo = _command("demo")
train_clm = _command("run_clm")
train_translation = _command("run_translation")
rationalize_analogies = _command("rationalize_analogies")
rationalize_lambada = _command("rationalize_lambada")
rationalize_iwslt = _command("rationalize_iwslt")
prepare_iwslt14 = _command("prepare_iwslt14")
download_data = _command("download_data")
benchmark = _command("benchmark_rationalization")
compare_methods = _command("compare_methods")
roar = _command("run_roar")
