"""The one resumable dataset runner: one JSON file per finished example, skipped on the next
run, written atomically, with a progress bar.

An interrupted run (Ctrl-C, a crash, a lost machine) keeps every finished example; running the
same command again computes only what is missing. A result file that does not parse (torn by a
crash on a filesystem without atomic rename) is redone, not taken as finished.

Launched by ``torchrun`` or ``accelerate launch``, every rank takes its share of the examples
(:mod:`.sharding`: example ``i`` goes to rank ``i % world``); the per-example files need no
merging, and every rank returns the counts summed over all ranks.

Results never mix: a JSON file of the folder that is not a result (not a non-empty JSON object,
or not of the caller's shape) stops the run with one line instead of being counted as
finished, and a caller that passes a ``provenance`` record gets it written to
``OUT_DIR/provenance.json``; a resume whose provenance differs (another model, method or
setting), or a folder of results without one, stops with one line naming the difference unless
``overwrite`` deletes the old results first.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from sequential_rationales.results import write_json_atomic
from sequential_rationales_integrations import provenance as provenance_records
from sequential_rationales_integrations import sharding

Item = TypeVar("Item")
WRITTEN, EXISTING = "written", "existing"


TORN, FOREIGN, RESULT = "torn", "foreign", "result"


def is_result_record(value: Any) -> bool:
    """The shape of every record the runner writes: a non-empty JSON object."""
    return isinstance(value, dict) and bool(value)


def classify(path: Path, is_result: Callable[[Any], bool] = is_result_record) -> str:
    """``torn`` (empty or not whole JSON: redone), ``foreign`` (whole JSON, but not a result of
    this program) or ``result``."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return TORN
    return RESULT if is_result(value) else FOREIGN


def is_finished(path: Path, is_result: Callable[[Any], bool] = is_result_record) -> bool:
    """Whether ``path`` holds a whole result (a torn, empty or foreign file is not one)."""
    return classify(path, is_result) == RESULT


def scan(out_dir: Path, is_result: Callable[[Any], bool] = is_result_record
         ) -> dict[str, list[Path]]:
    """The JSON files of ``out_dir`` (but its provenance file) by :func:`classify`."""
    found: dict[str, list[Path]] = {TORN: [], FOREIGN: [], RESULT: []}
    for path in sorted(out_dir.glob("*.json")):
        if path.name != provenance_records.FOLDER_FILE and path.is_file():
            found[classify(path, is_result)].append(path)
    return found


def _names(paths: list[Path], shown: int = 3) -> str:
    names = ", ".join(p.name for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def prepare_folder(out_dir: Path, shard: sharding.Shard, provenance: dict[str, Any] | None,
                   overwrite: bool, is_result: Callable[[Any], bool]) -> None:
    """Refuse foreign files and a resume of another run's results; with ``overwrite`` delete
    the old results; write ``provenance``. Every rank checks before rank 0 changes anything."""
    found = scan(out_dir, is_result)
    if found[FOREIGN]:
        raise SystemExit(f"error: {out_dir} holds {len(found[FOREIGN])} JSON file(s) that are "
                         f"not results of this program ({_names(found[FOREIGN])}): move them "
                         "away or use another output folder")
    path = out_dir / provenance_records.FOLDER_FILE
    old = None if overwrite or provenance is None else provenance_records.read(path)
    if provenance is not None and not overwrite:
        provenance_records.check_resume(old, provenance, str(out_dir), bool(found[RESULT]),
                                        lambda name: f"--{name}", "--out folder")
    sharding.barrier(shard)  # every rank has looked before rank 0 deletes or writes
    if shard.is_main:
        if overwrite:
            for stale in found[RESULT] + found[TORN]:
                stale.unlink(missing_ok=True)
        if provenance is not None and provenance_records.needs_writing(old, provenance):
            provenance_records.write(provenance, path)
    sharding.barrier(shard)


def run_examples(examples: Iterable[tuple[str, Item]], out_dir: str | Path,
                 process: Callable[[Item], dict[str, Any] | str], *, desc: str,
                 unit: str = "example", limit: int | None = None,
                 total: int | None = None, provenance: dict[str, Any] | None = None,
                 overwrite: bool = False,
                 is_result: Callable[[Any], bool] = is_result_record) -> Counter[str]:
    """Run ``process`` on every ``(name, example)`` whose ``OUT_DIR/NAME.json`` is missing.

    ``process`` returns the record to write, or a short reason (``"too_long"``) to skip the
    example; reasons are counted. ``limit`` stops once that many examples are finished
    (written now or before; in a sharded run each rank stops after its share of ``limit``).
    Returns the counts: ``written``, ``existing`` and each reason, summed over all ranks.

    ``provenance``: the run's record (:mod:`.provenance`), checked against the folder's and
    written there; ``overwrite``: delete the folder's results first; ``is_result``: whether a
    parsed file is a result of the caller (else the run stops: a foreign file).
    """
    from tqdm import tqdm

    shard = sharding.current_shard()
    sharding.init(shard)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prepare_folder(out_dir, shard, provenance, overwrite, is_result)
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
            if path.exists() and is_finished(path, is_result):
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
