"""Run one job on several processes launched by ``torchrun`` or ``accelerate launch``.

The launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; without them everything here is
a no-op for a single process, so programs need no separate distributed code path. Items are
dealt round-robin (item ``i`` belongs to rank ``i % world``), which balances work when item
costs drift along the input. Ranks only exchange small Python objects (counts, "I am done"),
so the process group keeps those on CPU (gloo) even when the models run on CUDA (nccl).

The JSONL helpers give each rank its own part file, resumable line by line, and let rank 0
merge the parts into one file with one record per item, in item order.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sequential_rationales.validation import InputError

DEFAULT_TIMEOUT_S = 6 * 3600  # ranks wait at most this long for the slowest one


@dataclass(frozen=True)
class Shard:
    """This process's place among the launched ones."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, index: int) -> bool:
        """Whether item ``index`` (0-based position in the input) is this rank's."""
        return index % self.world == self.rank

    def count(self, total: int) -> int:
        """How many of ``total`` items are this rank's."""
        return len(range(self.rank, total, self.world))

    def label(self) -> str:
        return f" [rank {self.rank} of {self.world}]" if self.distributed else ""


def current_shard() -> Shard:
    """The shard the launcher's environment describes (a single process when it says none)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Shard()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not 0 <= rank < world:
        raise InputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Shard(rank, world, local_rank)


def shard_device(device: str, shard: Shard) -> str:
    """``cuda`` (no index) becomes ``cuda:LOCAL_RANK`` in a sharded run: one GPU per rank."""
    if shard.distributed and device == "cuda":
        return f"cuda:{shard.local_rank}"
    return device


def init(shard: Shard, device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Join the launcher's process group once per process if sharded (later calls reuse it;
    it is left at exit: leaving and joining again mid-run races with the other ranks).
    ``timeout_s`` bounds every wait, such as a finished rank's for the slowest one."""
    import torch.distributed as dist

    if not shard.distributed or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend=backend, rank=shard.rank, world_size=shard.world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    atexit.register(_leave)


def _leave() -> None:
    """Leave the group together: a rank that tears down gloo while another still talks to it
    (or exits with the group alive) aborts ("terminate called without an active exception")."""
    import torch.distributed as dist

    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()


def gather(value: Any, shard: Shard) -> list[Any]:
    """Every rank's ``value``, in rank order (a barrier too: it returns when all ranks came)."""
    if not shard.distributed:
        return [value]
    import torch.distributed as dist

    values: list[Any] = [None] * shard.world
    dist.all_gather_object(values, value)
    return values


def barrier(shard: Shard) -> None:
    gather(None, shard)


# -- resumable JSONL files ------------------------------------------------------------------
def part_path(out: str | os.PathLike, rank: int, world: int) -> Path:
    """The part file of one rank: ``OUT.part-RANK-of-WORLD.jsonl`` next to ``OUT``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.part-{rank}-of-{world}.jsonl")


def part_paths(out: str | os.PathLike) -> list[Path]:
    """Every part file of ``out``, of any world size (an earlier run may have used another)."""
    out = Path(out)
    return sorted(out.parent.glob(f"{out.stem}.part-*-of-*.jsonl"))


def read_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The whole records of a JSONL file; a torn last line (a killed writer) is left out."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):  # only the unterminated last line may be torn
                raise InputError(f"{path}: line {number} is not valid JSON") from None
    return records


def open_for_append(path: str | os.PathLike):
    """Open ``path`` for appending whole lines, first cutting a torn last line (everything
    after the last newline) so that the next record does not glue onto it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = path.read_bytes() if path.exists() else b""
    keep = data.rfind(b"\n") + 1
    if keep < len(data):
        with open(path, "r+b") as f:
            f.truncate(keep)
    return open(path, "a", encoding="utf-8")


def append_record(f, record: dict[str, Any]) -> None:
    """Write one record as one line and flush it: a kill leaves at most one torn line."""
    f.write(json.dumps(record, ensure_ascii=False) + "\n")
    f.flush()


def merge_records(out: str | os.PathLike, key: Callable[[dict[str, Any]], int]) -> int:
    """Merge ``out`` and its part files into ``out``: one record per ``key`` (the first seen),
    sorted by it; then remove the parts. Written atomically (temporary file, rename), and only
    when something changes. Returns the number of records."""
    out = Path(out)
    parts = part_paths(out)
    current = read_records(out)
    merged: dict[int, dict[str, Any]] = {}
    for record in [*current, *(r for p in parts for r in read_records(p))]:
        merged.setdefault(key(record), record)
    ordered = [merged[k] for k in sorted(merged)]
    torn = not out.exists() or (out.stat().st_size and not out.read_bytes().endswith(b"\n"))
    if parts or ordered != current or torn:
        tmp = out.with_name(out.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for record in ordered:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        os.replace(tmp, out)
    for part in parts:
        part.unlink()
    return len(ordered)


def resolve_device(device: str | None) -> str:
    """``device``, or cuda when available, else cpu; a device this machine lacks is a
    one-line error rather than a CUDA traceback at the first tensor. In a sharded run
    (torchrun, accelerate launch) ``cuda`` means this rank's GPU."""
    if device is None:
        return shard_device("cuda" if torch.cuda.is_available() else "cpu", current_shard())
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise InputError(f"device {device} is not a torch device (e.g. cpu, cuda, cuda:1)"
                         ) from None
    if kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device}: Apple's MPS is not available on this machine "
                         "(use cpu)")
    if kind not in ("cpu", "cuda", "mps"):
        raise InputError(f"device {device}: rationales are computed on cpu, cuda or mps"
                         + (" (a meta tensor holds no values)" if kind == "meta" else ""))
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device}: CUDA is not available on this machine (use cpu)")
    if kind == "cuda" and (index := torch.device(device).index) is not None and (
            index >= torch.cuda.device_count()):
        raise InputError(f"device {device}: this machine has {torch.cuda.device_count()} "
                         "CUDA device(s)")
    return shard_device(device, current_shard())
