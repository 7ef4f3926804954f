"""Killed and concurrent pipeline steps: a rerun never takes a partial output for a finished
step, and no child outlives the pipeline that started it.

A tiny Python script stands in for ``fairseq-train`` and ``fairseq-preprocess`` (through
``fairseq_tools.cli``): it writes what the real tools write first (``checkpoint_best.pt`` after
epoch 1, ``dict.txt``), then sleeps, then finishes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sequential_rationales_experiments import fairseq_tools

FAKE_TOOL = """\
import os, sys, time
from pathlib import Path

args = sys.argv[1:]
Path(os.environ["FAKE_PIDFILE"]).write_text(str(os.getpid()))
sleep = float(os.environ.get("FAKE_SLEEP", "0"))
if "--save-dir" in args:  # fairseq-train
    save = Path(args[args.index("--save-dir") + 1])
    resumed = (save / "checkpoint_last.pt").exists()
    with open(save / "invocations.txt", "a") as f:
        f.write(f"{'resumed' if resumed else 'fresh'} {' '.join(args)}\\n")
    (save / "checkpoint_best.pt").write_text("after epoch 1")
    (save / "checkpoint_last.pt").write_text("after epoch 1")
    time.sleep(sleep)
    (save / "checkpoint_best.pt").write_text("final")
else:  # fairseq-preprocess
    dest = Path(args[args.index("--destdir") + 1])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "dict.txt").write_text("w 1\\n")
    time.sleep(sleep)
    for split in ("train", "valid", "test"):
        (dest / f"{split}.bin").write_text(split)
"""

DRIVER = """\
import signal, sys
from pathlib import Path
from sequential_rationales_experiments import fairseq_tools

# Ctrl-C as in a terminal: a run started in the background of a script inherits SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)

fake, step, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
fairseq_tools.cli = lambda name: fake
if step == "train":
    fairseq_tools.train("tiny", root / "data-bin", root / "save", ["--max-update", "10"],
                        root / "train.log")
else:
    fairseq_tools.preprocess(root / "data-bin", root / "preprocess.log", "--only-source")
print("finished")
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake tool, patched in for this process; returns its path."""
    tool = tmp_path / "fake_tool.py"
    tool.write_text(f"#!{sys.executable}\n" + FAKE_TOOL)
    tool.chmod(0o755)
    monkeypatch.setattr(fairseq_tools, "cli", lambda name: str(tool))
    monkeypatch.setenv("FAKE_PIDFILE", str(tmp_path / "child.pid"))
    monkeypatch.setenv("FAKE_SLEEP", "0")
    (tmp_path / "data-bin").mkdir()
    return tool


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def start_parent(tmp_path: Path, tool: Path, step: str, sleep: float = 60.0
                 ) -> subprocess.Popen:
    """A pipeline process running ``step`` with the fake tool, once the tool has started."""
    (tmp_path / "child.pid").unlink(missing_ok=True)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "FAKE_SLEEP": str(sleep)}
    parent = subprocess.Popen([sys.executable, str(driver), str(tool), step, str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    wait_for(lambda: (tmp_path / "child.pid").exists() and
             (tmp_path / "child.pid").read_text() != "")
    marker = tmp_path / ("save/checkpoint_best.pt" if step == "train" else
                         "data-bin.partial/dict.txt")
    wait_for(marker.exists)
    return parent


def child_pid(tmp_path: Path) -> int:
    return int((tmp_path / "child.pid").read_text())


needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                 reason="PR_SET_PDEATHSIG and /proc are Linux")


@needs_linux
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_training_is_not_skipped_but_resumed(tmp_path, fake, capsys, sig):
    parent = start_parent(tmp_path, fake, "train")
    child = child_pid(tmp_path)
    parent.send_signal(sig)
    parent.wait(60)
    wait_for(lambda: not alive(child), 30)  # the trainer died with its pipeline
    save = tmp_path / "save"
    assert (save / "checkpoint_best.pt").read_text() == "after epoch 1"
    assert not (save / fairseq_tools.DONE).exists()

    best = fairseq_tools.train("tiny", tmp_path / "data-bin", save, ["--max-update", "10"],
                               tmp_path / "train.log")
    out = capsys.readouterr().out
    assert "skipping" not in out and "resuming tiny" in out
    assert best.read_text() == "final"
    runs = (save / "invocations.txt").read_text().splitlines()
    assert [run.split()[0] for run in runs] == ["fresh", "resumed"]
    assert (save / fairseq_tools.DONE).exists()

    fairseq_tools.train("tiny", tmp_path / "data-bin", save, ["--max-update", "10"],
                        tmp_path / "train.log")
    assert "exists: skipping training" in capsys.readouterr().out
    assert len((save / "invocations.txt").read_text().splitlines()) == 2


def test_other_settings_or_force_start_training_over(tmp_path, fake, capsys):
    save = tmp_path / "save"
    train = fairseq_tools.train
    train("tiny", tmp_path / "data-bin", save, ["--max-update", "10"], tmp_path / "t.log")
    train("tiny", tmp_path / "data-bin", save, ["--max-update", "20"], tmp_path / "t.log")
    assert "skipping" not in capsys.readouterr().out
    # Emptied for the new settings: the invocation log restarted, nothing was resumed.
    assert [r.split()[0] for r in (save / "invocations.txt").read_text().splitlines()] == \
        ["fresh"]
    train("tiny", tmp_path / "data-bin", save, ["--max-update", "20"], tmp_path / "t.log",
          force=True)
    assert "skipping" not in capsys.readouterr().out
    # New data (another preprocess marker) makes the model stale too.
    fairseq_tools.mark_done(tmp_path / "data-bin", ["another corpus"])
    train("tiny", tmp_path / "data-bin", save, ["--max-update", "20"], tmp_path / "t.log")
    assert "skipping" not in capsys.readouterr().out


def test_fine_tune_starts_from_the_model_once_and_then_resumes(tmp_path, fake):
    start = tmp_path / "standard" / "checkpoint_best.pt"
    start.parent.mkdir()
    start.write_text("standard")
    save = tmp_path / "save"
    fairseq_tools.train("ft", tmp_path / "data-bin", save, ["--max-update", "5"],
                        tmp_path / "t.log", start_from=start)
    (args,) = (save / "invocations.txt").read_text().splitlines()
    assert f"--finetune-from-model {start}" in args and "--reset-optimizer" not in args
    # A retrained start model makes the fine-tune stale.
    fairseq_tools.mark_done(start.parent, ["retrained"])
    fairseq_tools.train("ft", tmp_path / "data-bin", save, ["--max-update", "5"],
                        tmp_path / "t.log", start_from=start)
    assert len((save / "invocations.txt").read_text().splitlines()) == 1  # emptied, rerun


@needs_linux
def test_second_trainer_on_the_same_folder_is_refused(tmp_path, fake):
    parent = start_parent(tmp_path, fake, "train")
    try:
        with pytest.raises(RuntimeError, match="already running .*train.lock"):
            fairseq_tools.train("tiny", tmp_path / "data-bin", tmp_path / "save",
                                ["--max-update", "10"], tmp_path / "train.log")
    finally:
        parent.send_signal(signal.SIGTERM)
        parent.wait(60)
    assert parent.returncode == 128 + signal.SIGTERM


@needs_linux
def test_killed_preprocess_is_redone(tmp_path, fake):
    data_bin = tmp_path / "data-bin"
    data_bin.rmdir()
    parent = start_parent(tmp_path, fake, "preprocess")
    child = child_pid(tmp_path)
    parent.kill()
    parent.wait(60)
    wait_for(lambda: not alive(child), 30)
    assert not data_bin.exists()  # only data-bin.partial, which nothing trusts

    fairseq_tools.preprocess(data_bin, tmp_path / "preprocess.log", "--only-source")
    assert sorted(p.name for p in data_bin.iterdir()) == [
        "dict.txt", fairseq_tools.DONE, "test.bin", "train.bin", "valid.bin"]
    assert not (tmp_path / "data-bin.partial").exists()


def test_preprocess_output_without_its_marker_is_redone(tmp_path, fake, capsys):
    """A folder left by the old code (dict.txt, no valid split) is not taken as finished."""
    data_bin = tmp_path / "data-bin"
    (data_bin / "dict.txt").write_text("w 1\n")
    fairseq_tools.preprocess(data_bin, tmp_path / "p.log", "--only-source")
    assert (data_bin / "valid.bin").exists()
    fairseq_tools.preprocess(data_bin, tmp_path / "p.log", "--only-source")
    assert "skipping fairseq-preprocess" in capsys.readouterr().out
    fairseq_tools.preprocess(data_bin, tmp_path / "p.log", "--only-source", "--workers", "2")
    assert "skipping fairseq-preprocess" not in capsys.readouterr().out


def test_exception_in_the_parent_kills_the_child_group(tmp_path, fake, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) while the tool runs: the group is killed, nothing lingers."""
    monkeypatch.setenv("FAKE_SLEEP", "60")
    real_popen = subprocess.Popen

    class Interrupted(real_popen):
        def wait(self, timeout=None):
            if timeout is None:
                wait_for(lambda: (tmp_path / "save" / "checkpoint_best.pt").exists())
                raise KeyboardInterrupt
            return super().wait(timeout)

    monkeypatch.setattr(subprocess, "Popen", Interrupted)
    with pytest.raises(KeyboardInterrupt):
        fairseq_tools.train("tiny", tmp_path / "data-bin", tmp_path / "save",
                            ["--max-update", "10"], tmp_path / "train.log")
    assert not alive(child_pid(tmp_path))


def test_files_skipped_when_present_are_written_atomically(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def torn(self, text, encoding=None):
        Path.write_bytes(self, text[:3].encode())
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", torn)
    with pytest.raises(KeyboardInterrupt):
        fairseq_tools.write_text_atomic(path, '{"standard_ppl": 3.2}')
    monkeypatch.undo()
    assert path.read_text() == "old" and list(tmp_path.iterdir()) == [path]
