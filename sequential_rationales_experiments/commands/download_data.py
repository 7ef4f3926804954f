"""Fetch the three data files of the GPT-2 experiments into ``data/`` (git-ignored).

The program behind ``scripts/download_data.py`` and ``rationales-download-data``; its user
documentation is that file's docstring.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..cli import ProgramParser

PAPER_REPO = "https://raw.githubusercontent.com/keyonvafa/sequential-rationales/main"
URLS = {
    "questions-words.txt": "https://raw.githubusercontent.com/piskvorky/gensim/develop/gensim/"
                           "test/test_data/questions-words.txt",
    "annotated_lambada.json": f"{PAPER_REPO}/annotated_lambada.json",
    "analogy_templates.json": f"{PAPER_REPO}/huggingface/data_utils.py",
}
FILES = tuple(URLS)


def templates_from_data_utils(source: str) -> dict[str, str]:
    """The analogy templates assigned in the paper's ``data_utils.py``, i.e. statements
    ``all_analogies['<category>']['template'] = ("..." "...")``, as ``{category: template}``.
    """
    templates: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if not (isinstance(target, ast.Subscript) and isinstance(target.slice, ast.Constant)
                and target.slice.value == "template"
                and isinstance(target.value, ast.Subscript)
                and isinstance(target.value.slice, ast.Constant)):
            continue
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            templates[str(target.value.slice.value)] = node.value.value
    return templates


def check_analogies(text: str) -> None:
    headers = [line for line in text.splitlines() if line.startswith(":")]
    bad = [line for line in text.splitlines()
           if line.strip() and not line.startswith(":") and len(line.split()) != 4]
    if not headers or bad:
        raise ValueError("not a Mikolov analogy file (': category' headers, then 'a b c d')")


def check_lambada(text: str) -> None:
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not rows or not all({"text", "rationale"} <= set(row) for row in rows):
        raise ValueError("not annotated Lambada (JSON lines with 'text' and 'rationale')")


def check_templates(text: str) -> None:
    templates = json.loads(text)
    if not templates or not all(
            isinstance(t, str) and t.count("[A]") == 1 and t.count("[B]") == 1 and "(" in t
            for t in templates.values()):
        raise ValueError("not analogy templates ({category: text with [A], [B], (...)})")


CHECKS: dict[str, Callable[[str], None]] = {
    "questions-words.txt": check_analogies,
    "annotated_lambada.json": check_lambada,
    "analogy_templates.json": check_templates,
}


def fetch(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode("utf-8")
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise SystemExit(
            f"error: could not download {url}: {e}; offline? copy the files from a local "
            "folder that has them: python scripts/download_data.py --source ../shared/data "
            "(or any folder with questions-words.txt, annotated_lambada.json and "
            "analogy_templates.json)") from None


def download(name: str, timeout: float) -> str:
    text = fetch(URLS[name], timeout)
    if name == "analogy_templates.json":
        templates = templates_from_data_utils(text)
        if not templates:
            raise SystemExit(f"error: no templates found in {URLS[name]}; copy "
                             "analogy_templates.json from a local folder with --source DIR")
        text = json.dumps(templates, indent=1, ensure_ascii=False) + "\n"
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ProgramParser(description=__doc__.split("\n\n")[0],
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default="data",
                   help="where the files go (default: data/, relative to the current folder)")
    p.add_argument("--source", default=None,
                   help="copy the files from this local folder instead of downloading")
    p.add_argument("--files", nargs="+", choices=FILES, default=list(FILES),
                   help="which files to fetch (default: all three)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per download (default: 30)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Path]:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    source = Path(args.source) if args.source else None
    if source is not None:
        missing = [name for name in args.files if not (source / name).is_file()]
        if missing:
            raise SystemExit(f"error: {source} lacks {', '.join(missing)}")
    written = []
    for name in args.files:
        target = data_dir / name
        if target.exists() and not args.force:
            print(f"{target} exists (use --force to replace it)")
            continue
        if source is not None:
            text = (source / name).read_text(encoding="utf-8")
        else:
            print(f"downloading {URLS[name]}")
            text = download(name, args.timeout)
        try:
            CHECKS[name](text)
        except (ValueError, json.JSONDecodeError) as e:
            raise SystemExit(f"error: {name} is malformed: {e}") from None
        if source is not None:
            shutil.copyfile(source / name, target)
        else:
            target.write_text(text, encoding="utf-8")
        written.append(target)
        print(f"wrote {target}")
    return written
