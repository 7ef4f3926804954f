"""Running fairseq's command-line tools for the experiment pipelines, and reading what they
print.

The pipelines call the real CLIs, as the README tells users to, so what they exercise is what
users run. Each tool's output streams into a log file (follow it with ``tail -f``); paths are
taken relative to the current folder, like every other path the commands take.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path


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


def run(cmd: Sequence[object], log: Path) -> str:
    """Run ``cmd`` from the current folder, streaming its output into ``log``; on failure raise
    with the log's last lines. Returns the output."""
    cmd = [str(part) for part in cmd]
    print(f"  $ {Path(cmd[0]).name} ...  (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    output = log.read_text()
    if code != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {code}); log: {log}\n{tail}")
    return output


def preprocess(dest: Path, log: Path, *flags: object) -> None:
    """``fairseq-preprocess FLAGS --destdir DEST`` into a fresh ``dest`` (an older one is
    removed: binarized data must never mix two corpora)."""
    shutil.rmtree(dest, ignore_errors=True)
    run([cli("fairseq-preprocess"), *flags, "--destdir", dest], log)


def train(name: str, data_bin: Path, save_dir: Path, flags: Sequence[object], log: Path, *,
          force: bool = False, fresh: bool = False, start_from: Path | None = None) -> Path:
    """``fairseq-train DATA_BIN --user-dir PLUGIN FLAGS --save-dir SAVE_DIR``, skipped when
    ``SAVE_DIR/checkpoint_best.pt`` exists (unless ``force``); returns that checkpoint.

    ``fresh`` empties ``save_dir`` first (fairseq would otherwise resume from an old
    ``checkpoint_last.pt``); ``start_from`` is then copied to ``checkpoint_last.pt`` so training
    continues from it (the paper's compatibility fine-tune; pass fairseq's ``--reset-*`` flags).
    """
    best = save_dir / "checkpoint_best.pt"
    if best.exists() and not force:
        print(f"  {best} exists: skipping training")
        return best
    if fresh:
        shutil.rmtree(save_dir, ignore_errors=True)
        save_dir.mkdir(parents=True)
    if start_from is not None:
        shutil.copy(start_from, save_dir / "checkpoint_last.pt")
    start = time.perf_counter()
    run([cli("fairseq-train"), data_bin, "--user-dir", plugin_dir(), *flags,
         "--save-dir", save_dir], log)
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
