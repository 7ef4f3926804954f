"""Running fairseq's command-line tools for the experiment pipelines, and reading what they
print.

The pipelines call the real CLIs, as the README tells users to, so what they exercise is what
users run. Each tool's output streams into a log file (follow it with ``tail -f``); paths are
taken relative to the current folder, like every other path the commands take.

A step is finished only when its folder's ``step.done`` (written last, atomically) records the
settings it ran with: an output alone proves nothing (fairseq-train writes
``checkpoint_best.pt`` after the first epoch, fairseq-preprocess ``dict.txt`` first). The tools
die with the pipeline that started them, and a lock keeps a second trainer out of a folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

DONE = "step.done"  # written last by a finished step, holding its settings
STARTED = "step.started"  # written first by a training, holding its settings
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def plugin_dir() -> Path:
    """The ``--user-dir`` shim folder ``fairseq/sequential_rationales_plugin`` of this checkout.

    The shim is a folder of the repository, not of the package: it is found next to the package
    of an editable install (``make setup``); anything else raises, saying so.
    """
    path = Path(__file__).resolve().parents[1] / "fairseq" / "sequential_rationales_plugin"
    if not (path / "__init__.py").is_file():
        raise FileNotFoundError(
            f"the fairseq --user-dir shim {path} does not exist: the fairseq pipelines need the "
            "project installed in editable mode from its checkout (`make setup`, i.e. "
            "`pip install -e .`)")
    return path


def cli(name: str) -> str:
    """The tool next to this Python (the virtual environment's), else from ``PATH``."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else name


def quiet_fairseq_logging() -> None:
    """fairseq sets the root logger to DEBUG on import; keep the output to progress and
    results."""
    logging.getLogger().setLevel(logging.WARNING)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file, then rename it: files that a rerun skips when present
    (corpora, summaries, markers) are then either complete or absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def building_dir(dest: Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to ``dest``; on success it replaces ``dest``.

    An interrupted build leaves only the temporary folder (removed by the next build), never a
    half-filled ``dest`` that a rerun would take for a finished one.
    """
    tmp = dest.with_name(f"{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def settings_of(*parts: object) -> list[str]:
    """A step's settings as JSON-able strings, compared with the ones its marker records."""
    return [os.fspath(part) if isinstance(part, Path) else str(part) for part in parts]


def is_done(folder: Path, settings: list[str]) -> bool:
    """Whether ``FOLDER/step.done`` records that the step finished with these ``settings``."""
    return read_marker(folder) == _marker_text(settings)


def _marker_text(settings: list[str]) -> str:
    return json.dumps(settings, indent=1) + "\n"


def read_marker(folder: Path, name: str = DONE) -> str:
    """The text of a step's marker, empty when there is none."""
    try:
        return (folder / name).read_text(encoding="utf-8")
    except OSError:
        return ""


def restart_if_changed(folder: Path, settings: list[str], force: bool = False,
                       keep: Sequence[str] = ()) -> bool:
    """Empty ``folder`` (but the names in ``keep``) unless ``FOLDER/step.started`` records
    these ``settings``; then record them. Returns whether it started over: what a folder holds
    from other settings must not be resumed."""
    if not force and read_marker(folder, STARTED) == _marker_text(settings):
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path.name not in keep:
            path.unlink()
    write_text_atomic(folder / STARTED, _marker_text(settings))
    return True


def mark_done(folder: Path, settings: list[str]) -> None:
    """Write ``FOLDER/step.done``, last and atomically: the step's only proof of completion."""
    write_text_atomic(folder / DONE, _marker_text(settings))


def _die_with_parent(parent: int) -> Callable[[], None]:
    """``preexec_fn``: on Linux, ask the kernel to SIGKILL the child when its parent dies (even
    by SIGKILL, which no handler sees); exit at once if the parent is already gone."""
    libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)
    return preexec


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop ``proc`` and everything it started (its own process group): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit`` while a child runs, so the cleanup that kills the child
    runs too (Python's default SIGTERM action ends the process without unwinding)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(cmd: Sequence[object], log: Path, step: str | None = None,
        pass_fds: Sequence[int] = ()) -> str:
    """Run ``cmd`` from the current folder, streaming its output into ``log``; on failure raise
    naming ``step`` (default: the tool), with the log's last lines. Returns the output.

    The child runs in its own process group and dies with this process: an exception, Ctrl-C
    or SIGTERM here kills the group; a SIGKILL here kills the child through
    ``PR_SET_PDEATHSIG``. No orphaned trainer keeps writing into a folder a rerun uses.
    """
    cmd = [str(part) for part in cmd]
    tool = Path(cmd[0]).name
    step = step or tool
    print(f"  $ {tool} ...  (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f, _sigterm_raises():
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True, pass_fds=tuple(pass_fds),
                                preexec_fn=_die_with_parent(os.getpid()))
        try:
            code = proc.wait()
        except BaseException:
            _kill_group(proc)
            raise
    output = log.read_text(errors="replace")
    if code != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise RuntimeError(f"step '{step}' failed: {tool} exited with {code}; log: {log}\n{tail}")
    return output


def preprocess(dest: Path, log: Path, *flags: object, force: bool = False,
               depends: str = "") -> None:
    """``fairseq-preprocess FLAGS --destdir DEST``, skipped when ``DEST/step.done`` records the
    same flags and ``depends`` (the marker of the text it reads; unless ``force``).

    The tool writes into ``DEST.partial``, which replaces ``dest`` only when it succeeded:
    binarized data never mixes two corpora, and a killed run never leaves a ``dest`` that looks
    finished.
    """
    settings = settings_of(*flags, depends)
    if not force and is_done(dest, settings):
        print(f"  {dest / DONE} exists: skipping fairseq-preprocess")
        return
    with building_dir(dest) as tmp:
        run([cli("fairseq-preprocess"), *flags, "--destdir", tmp], log,
            step=f"fairseq-preprocess into {dest}")
        mark_done(tmp, settings)


@contextlib.contextmanager
def exclusive_lock(path: Path, what: str) -> Iterator[int]:
    """Hold ``flock`` on ``path``; refuse, saying so, when another process holds it. Yields the
    descriptor so a child can inherit it (the lock then lasts as long as either lives)."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(
                f"{what} is already running (another process holds the lock {path}); wait "
                "for it to finish or stop it, then run again") from None
        yield fd
    finally:
        os.close(fd)


def train(name: str, data_bin: Path, save_dir: Path, flags: Sequence[object], log: Path, *,
          force: bool = False, start_from: Path | None = None) -> Path:
    """``fairseq-train DATA_BIN --user-dir PLUGIN FLAGS --save-dir SAVE_DIR``; returns
    ``SAVE_DIR/checkpoint_best.pt``.

    Done only when ``SAVE_DIR/step.done`` records these settings (a ``checkpoint_best.pt``
    alone proves nothing: fairseq writes one after the first epoch). An interrupted run with
    the same settings resumes from fairseq's ``checkpoint_last.pt`` up to ``--max-update``;
    other settings (incl. the markers of ``data_bin`` and of ``start_from``'s folder), or
    ``force``, start over in an emptied ``save_dir``. ``start_from`` is fine-tuned
    (``--finetune-from-model``: fairseq resets optimizer, scheduler, meters and data order on
    the first launch only, so a resumed fine-tune continues). A lock in ``save_dir`` refuses a
    second trainer of the same folder.
    """
    best = save_dir / "checkpoint_best.pt"
    flags = [*flags, *(["--finetune-from-model", start_from] if start_from else [])]
    # What was trained on, and from, is part of the settings: new data or a retrained start
    # model makes this training stale.
    settings = settings_of(data_bin, *flags, read_marker(data_bin),
                           read_marker(start_from.parent) if start_from else "")
    save_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(save_dir / "train.lock", f"fairseq-train into {save_dir}") as fd:
        if not force and is_done(save_dir, settings) and best.exists():
            print(f"  {save_dir / DONE} exists: skipping training")
            return best
        if not restart_if_changed(save_dir, settings, force, keep=("train.lock",)):
            print(f"  resuming {name} in {save_dir}")
        start = time.perf_counter()
        run([cli("fairseq-train"), data_bin, "--user-dir", plugin_dir(), *flags,
             "--save-dir", save_dir], log, step=f"training {name}", pass_fds=(fd,))
        if not best.exists():
            raise RuntimeError(f"step 'training {name}': fairseq-train exited without writing "
                               f"{best}; log: {log}")
        mark_done(save_dir, settings)
    print(f"  trained {name} in {time.perf_counter() - start:.0f}s")
    return best


def encode_lm_line(dictionary, line: str):
    """Token ids of ``line`` as a fairseq language model reads it: ``</s>`` first, no final
    ``</s>``, unknown words as ``<unk>``."""
    import torch

    return torch.cat([torch.tensor([dictionary.eos()]),
                      dictionary.encode_line(line, add_if_not_exist=False,
                                             append_eos=False).long()])


def read_fairseq_hypotheses(lines: Iterable[str]) -> list[str]:
    """Hypotheses of a ``fairseq-generate`` log, ordered by sentence id.

    Equivalent to ``grep 'H-' | sed 's/^..//' | sort -n | cut -f3`` for ``--nbest 1``:
    takes lines ``H-<id>\\t<score>\\t<text>``. Raises ``ValueError`` on a repeated id (run
    with ``--nbest 1``) or when ids are not exactly ``0..n-1``.
    """
    hypotheses: dict[int, str] = {}
    for line in lines:
        if not line.startswith("H-"):
            continue
        fields = line.rstrip("\n").split("\t", 2)
        try:
            sentence_id = int(fields[0][2:])
        except ValueError as exc:
            raise ValueError(f"malformed fairseq-generate line: {line!r}") from exc
        if sentence_id in hypotheses:
            raise ValueError(
                f"hypothesis id {sentence_id} appears twice; run fairseq-generate with --nbest 1"
            )
        hypotheses[sentence_id] = fields[2] if len(fields) > 2 else ""
    if sorted(hypotheses) != list(range(len(hypotheses))):
        missing = sorted(set(range(max(hypotheses, default=-1) + 1)) - set(hypotheses))
        raise ValueError(f"fairseq-generate output lacks hypotheses for ids {missing[:10]}")
    return [hypotheses[i] for i in range(len(hypotheses))]
