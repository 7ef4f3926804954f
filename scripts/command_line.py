"""Running the fairseq command-line tools from the pipelines, with their output in a log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "fairseq" / "sequential_rationales_plugin"


def cli(name: str) -> str:
    """The tool next to this Python (the virtual environment's), else from ``PATH``."""
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else name


def run(cmd: list[str], log: Path) -> str:
    """Run ``cmd`` from the repository root, streaming its output into ``log`` (follow it with
    ``tail -f``); on failure raise with the log's last lines. Returns the output."""
    print(f"  $ {Path(cmd[0]).name} ...  (log: {log})", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT).returncode
    output = log.read_text()
    if code != 0:
        tail = "\n".join(output.splitlines()[-25:])
        raise RuntimeError(f"{Path(cmd[0]).name} failed (exit {code}); log: {log}\n{tail}")
    return output
