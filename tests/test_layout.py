"""The layout's promises: a torch-only core, installed console commands, thin entry points that
edit no ``sys.path`` and import no other entry point, and the seed's imports."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENTRY_FOLDERS = ("huggingface", "fairseq", "analysis", "scripts")
USER_DIR_SHIM = ROOT / "fairseq" / "sequential_rationales_plugin" / "__init__.py"


def _run(code: str, cwd: Path = ROOT, path: Path | None = None) -> subprocess.CompletedProcess:
    env = None if path is None else {**os.environ, "PYTHONPATH": str(path)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_core_module_imports_torch_only():
    code = (
        "import pkgutil, sys, importlib, sequential_rationales as core\n"
        "names = [m.name for m in pkgutil.walk_packages(core.__path__, core.__name__ + '.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "bad = sorted({m.split('.')[0] for m in sys.modules} & {'transformers', 'fairseq'})\n"
        "print(len(names), bad)\n"
        "sys.exit(1 if bad or len(names) < 10 else 0)\n")
    done = _run(code)
    assert done.returncode == 0, done.stdout + done.stderr


def test_integrations_package_root_imports_no_framework():
    done = _run("import sys, sequential_rationales_integrations, sequential_rationales_experiments;"
                "sys.exit(1 if {'transformers', 'fairseq'} & set(sys.modules) else 0)")
    assert done.returncode == 0, done.stdout + done.stderr


def _entry_points() -> list[Path]:
    return sorted(p for folder in ENTRY_FOLDERS for p in (ROOT / folder).rglob("*.py")
                  if p != USER_DIR_SHIM and p.name != "__init__.py")


def test_entry_points_edit_no_sys_path_and_import_no_other_entry_point():
    assert len(_entry_points()) > 20
    problems = []
    for path in _entry_points():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(
                    node.value, "id", None) == "sys":
                problems.append(f"{path.relative_to(ROOT)}: uses sys.path")
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                if top in ("huggingface", "analysis", "scripts") or top == "rationalization":
                    problems.append(f"{path.relative_to(ROOT)}: imports {node.module}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == (
                    "spec_from_file_location"):
                problems.append(f"{path.relative_to(ROOT)}: loads a script by path")
    assert not problems, "\n".join(problems)


def _console_scripts() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(_console_scripts()))
def test_console_script_is_installed_and_resolves(name):
    module, _, function = _console_scripts()[name].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    installed = Path(sys.executable).parent / name
    assert installed.exists(), f"{name} is not installed next to {sys.executable}; run make setup"


def test_seed_imports_work_from_the_repository_root():
    done = _run("from huggingface.rationalization import rationalize_lm, "
                "baseline_rationalize_lm, exhaustive_rationalize_lm")
    assert done.returncode == 0, done.stderr
    done = _run("from rationalization import rationalize_conditional_model, rationalize_lm",
                cwd=Path("/"), path=ROOT / "fairseq")
    assert done.returncode == 0, done.stderr


def test_console_commands_exit_with_a_status_not_with_the_results(monkeypatch):
    from sequential_rationales_experiments import console
    from sequential_rationales_experiments.commands import download_data, prepare_iwslt14

    monkeypatch.setattr(download_data, "main", lambda argv=None: [Path("written.txt")])
    assert console.download_data() == 0
    monkeypatch.setattr(prepare_iwslt14, "main", lambda argv=None: 2)
    assert console.prepare_iwslt14() == 2


def test_a_console_command_runs_from_any_folder(tmp_path):
    shared = ROOT.parent / "shared" / "data"
    if not (shared / "questions-words.txt").is_file():
        pytest.skip(f"{shared} is absent")
    command = Path(sys.executable).parent / "rationales-download-data"
    done = subprocess.run([str(command), "--data_dir", "data", "--source", str(shared)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "questions-words.txt").read_bytes() == (
        shared / "questions-words.txt").read_bytes()
