"""The one resumable dataset runner: one JSON file per finished example, skipped on the next
run, written atomically, with a progress bar.

An interrupted run (Ctrl-C, a crash, a lost machine) keeps every finished example; running the
same command again computes only what is missing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sequential_rationales.results import write_json_atomic

Item = TypeVar("Item")
WRITTEN, EXISTING = "written", "existing"


def run_examples(examples: Iterable[tuple[str, Item]], out_dir: str | Path,
                 process: Callable[[Item], dict[str, Any] | str], *, desc: str,
                 unit: str = "example", limit: int | None = None,
                 total: int | None = None) -> Counter[str]:
    """Run ``process`` on every ``(name, example)`` whose ``OUT_DIR/NAME.json`` is missing.

    ``process`` returns the record to write, or a short reason (``"too_long"``) to skip the
    example; reasons are counted. ``limit`` stops once that many examples are finished
    (written now or before). Returns the counts: ``written``, ``existing`` and each reason.
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter({WRITTEN: 0, EXISTING: 0})
    bar = tqdm(examples, desc=desc, unit=unit, total=total)
    try:
        for name, example in bar:
            if limit is not None and counts[WRITTEN] + counts[EXISTING] >= limit:
                break
            path = out_dir / f"{name}.json"
            if path.exists():
                counts[EXISTING] += 1
                continue
            outcome = process(example)
            if isinstance(outcome, str):
                counts[outcome] += 1
                continue
            write_json_atomic(outcome, path)
            counts[WRITTEN] += 1
            bar.set_postfix(counts, refresh=False)
    finally:
        bar.close()
    return counts
