"""The one resumable dataset runner: one JSON file per finished example, skipped on the next
run, written atomically, with a progress bar.

An interrupted run (Ctrl-C, a crash, a lost machine) keeps every finished example; running the
same command again computes only what is missing. A result file that does not parse (torn by a
crash on a filesystem without atomic rename) is redone, not taken as finished.

Launched by ``torchrun`` or ``accelerate launch``, every rank takes its share of the examples
(:mod:`.sharding`: example ``i`` goes to rank ``i % world``); the per-example files need no
merging, and every rank returns the counts summed over all ranks.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sequential_rationales.results import write_json_atomic
from sequential_rationales_experiments import sharding

Item = TypeVar("Item")
WRITTEN, EXISTING = "written", "existing"


def is_finished(path: Path) -> bool:
    """Whether ``path`` holds a whole JSON result (a torn or empty file is not one)."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return True


def run_examples(examples: Iterable[tuple[str, Item]], out_dir: str | Path,
                 process: Callable[[Item], dict[str, Any] | str], *, desc: str,
                 unit: str = "example", limit: int | None = None,
                 total: int | None = None) -> Counter[str]:
    """Run ``process`` on every ``(name, example)`` whose ``OUT_DIR/NAME.json`` is missing.

    ``process`` returns the record to write, or a short reason (``"too_long"``) to skip the
    example; reasons are counted. ``limit`` stops once that many examples are finished
    (written now or before; in a sharded run each rank stops after its share of ``limit``).
    Returns the counts: ``written``, ``existing`` and each reason, summed over all ranks.
    """
    from tqdm import tqdm

    shard = sharding.current_shard()
    sharding.init(shard)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        limit = shard.count(limit)
    mine = (example for i, example in enumerate(examples) if shard.owns(i))
    counts: Counter[str] = Counter({WRITTEN: 0, EXISTING: 0})
    bar = tqdm(mine, desc=desc + shard.label(), unit=unit,
               total=None if total is None else shard.count(total), disable=not shard.is_main)
    try:
        for name, example in bar:
            if limit is not None and counts[WRITTEN] + counts[EXISTING] >= limit:
                break
            path = out_dir / f"{name}.json"
            if path.exists() and is_finished(path):
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
    total_counts: Counter[str] = Counter({WRITTEN: 0, EXISTING: 0})
    for rank_counts in sharding.gather(counts, shard):
        total_counts.update(rank_counts)  # update keeps zero counts, + would drop them
    return total_counts
