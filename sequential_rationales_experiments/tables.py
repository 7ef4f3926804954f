"""Table I/O of the evaluation programs: per-method result folders in, CSV and JSON tables
out."""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import METHOD_LABELS, markdown_table
from sequential_rationales_integrations import provenance


def _parse_record(text: str, path: Path, producer: str, line: int | None = None
                  ) -> dict[str, Any]:
    """One JSON object; a torn or hand-edited record names its file and line, not just
    ``Expecting value: line 1 column 1``. ``line``: the record's line in a JSONL file."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        raise SystemExit(
            f"error: {path}, line {line or error.lineno}: not valid JSON ({error.msg}, column "
            f"{error.colno}); a torn write? delete it and rerun {producer}") from None
    if not isinstance(record, dict):
        raise SystemExit(f"error: {path}, line {line or 1}: expected a JSON object, got "
                         f"{type(record).__name__}")
    return record


def load_results(method_dir: Path) -> dict[str, dict[str, Any]]:
    """``{example name: record}`` for the JSON files of one method's folder (its provenance
    file left out)."""
    results = {}
    for path in sorted(method_dir.glob("*.json")):
        if path.name == provenance.FOLDER_FILE:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise SystemExit(f"error: {path}: not UTF-8 text ({error.reason})") from None
        results[path.stem] = _parse_record(text, path, "the program that wrote it")
    return results


def order_methods(methods: Sequence[str]) -> list[str]:
    """The paper's row order, unknown names last (alphabetically)."""
    known = [m for m in METHOD_LABELS if m in methods]
    return known + sorted(m for m in methods if m not in METHOD_LABELS)


def add_method_arguments(p: argparse.ArgumentParser, results_dir: Path, table: str) -> None:
    """The flags every evaluation script shares."""
    p.add_argument("--results_dir", default=str(results_dir),
                   help=f"folder with one subfolder of JSON results per method (default: "
                        f"{results_dir}, relative to the current folder)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--baseline", default=None,
                       help="compare this method with greedy (rows: the baseline, greedy)")
    which.add_argument("--all", action="store_true",
                       help="every method found (the default without --baseline)")
    p.add_argument("--out", default=None,
                   help=f"output path without extension; .csv and .json are written "
                        f"(default: RESULTS_DIR/{table})")


def read_provenance(method_dir: Path) -> dict[str, Any] | None:
    """The runner's provenance record of a folder (``None`` for folders written before it)."""
    return provenance.read(method_dir / provenance.FOLDER_FILE, fix="delete it")


def _model(record: dict[str, Any]) -> tuple[str, str]:
    """(what identifies the model, how to show it)."""
    model = record.get("model") if isinstance(record.get("model"), dict) else {}
    key = model.get("fingerprint") or model.get("path") or "?"
    return key, f"{model.get('path')} (fingerprint {str(model.get('fingerprint'))[:8]})"


def check_combinable(results_dir: Path, found: dict[str, dict[str, dict[str, Any]]],
                     folders: Sequence[str], experiment: str, producer: str,
                     required: Sequence[str]) -> None:
    """Stop with one line when the ``folders`` to combine into one table are not results of
    ``experiment`` (a record lacks a ``required`` key, or the provenance names another
    experiment), mix methods (records of another method than the folder's provenance, or of
    a method that is not the folder's name when that name is a method), or come from
    different models."""
    from sequential_rationales import list_methods

    models: dict[str, tuple[str, str]] = {}
    for folder in folders:
        method_dir = results_dir / folder
        record = read_provenance(method_dir)
        if record is not None and record.get("experiment") not in (None, experiment):
            raise SystemExit(f"error: {method_dir} holds results of the "
                             f"{record.get('experiment')} experiment, not {experiment}; "
                             f"evaluate the folders written by {producer}")
        methods = set()
        for name, result in found[folder].items():
            missing = [key for key in required if key not in result]
            if missing:
                raise SystemExit(f"error: {method_dir / (name + '.json')} is not a {experiment} "
                                 f"result (no {missing[0]!r}); evaluate the folders written by "
                                 f"{producer}")
            methods.add(result.get("method"))
        if record is not None:
            methods.add(record.get("method"))
        methods.discard(None)
        if len(methods) > 1:
            raise SystemExit(f"error: {method_dir} mixes results of methods "
                             f"{', '.join(sorted(methods))}; rerun them into separate folders")
        if methods and folder in list_methods() and methods != {folder}:
            raise SystemExit(f"error: {method_dir} holds results of method "
                             f"{next(iter(methods))!r}, not {folder!r}; rename or rerun it")
        if record is not None:
            models[folder] = _model(record)
    if len({key for key, _ in models.values()}) > 1:
        (first, (key, shown)), *others = models.items()
        other, (_, other_shown) = next((f, m) for f, m in others if m[0] != key)
        raise SystemExit(f"error: {results_dir / first} and {results_dir / other} were written "
                         f"by different models ({shown} vs {other_shown}); evaluate results of "
                         "one model together")


def find_results(results_dir: Path, baseline: str | None, producer: str,
                 exclude: Sequence[str] = (), experiment: str | None = None,
                 required: Sequence[str] = ()) -> tuple[dict[str, dict], list[str]]:
    """Load every method folder and pick the table's rows (``--baseline`` or all); with
    ``experiment``, check that the folders used can be combined (:func:`check_combinable`).
    """
    if not results_dir.is_dir():
        raise SystemExit(f"error: {results_dir} does not exist; run {producer} first")
    found = {d.name: load_results(d) for d in results_dir.iterdir() if d.is_dir()}
    found = {m: r for m, r in found.items() if r}
    if baseline:
        methods = [baseline, "greedy"]
        missing = [m for m in methods if m not in found]
        if missing:
            raise SystemExit(f"error: no results for {missing} in {results_dir} (found: "
                             f"{sorted(found) or 'nothing'})")
    else:
        methods = order_methods([m for m in found if m not in exclude])
        if not methods:
            raise SystemExit(f"error: no method results in {results_dir}")
    if experiment is not None:
        used = [*methods, *(m for m in exclude if m in found and m not in methods)]
        check_combinable(results_dir, found, used, experiment, producer, required)
    return found, methods


def _clean(value: Any) -> Any:
    """JSON has no NaN: a missing value is written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def write_table(rows: dict[str, dict[str, float]], out: Path, columns: Sequence[str]
                ) -> tuple[Path, Path]:
    """Write ``OUT.csv`` and ``OUT.json`` (one row / entry per method); ``columns`` first,
    any other keys of the rows after them."""
    stem = str(out)
    for ext in (".csv", ".json"):
        stem = stem[:-len(ext)] if stem.endswith(ext) else stem
    csv_path, json_path = Path(stem + ".csv"), Path(stem + ".json")
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for row in rows.values() for k in row}, key=lambda k: (
        columns.index(k) if k in columns else len(columns), k))
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "label", *keys])
        for method, row in rows.items():
            writer.writerow([method, METHOD_LABELS.get(method, method),
                             *["" if _clean(row.get(k)) is None else row[k] for k in keys]])
    json_path.write_text(json.dumps(
        {m: {"label": METHOD_LABELS.get(m, m), **{k: _clean(v) for k, v in row.items()}}
         for m, row in rows.items()}, indent=2), encoding="utf-8")
    return csv_path, json_path


def read_indexed_jsonl(path: Path, producer: str) -> dict[str, dict[str, Any]]:
    """``{str(record["index"]): record}`` of a JSONL file that ``producer`` writes."""
    if not path.exists():
        raise SystemExit(f"error: {path} does not exist; it is written by {producer}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SystemExit(f"error: {path}: not UTF-8 text ({error.reason}); it is written by "
                         f"{producer}") from None
    records = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            record = _parse_record(line, path, producer, number)
            if "index" not in record:
                raise SystemExit(f"error: {path}, line {number}: the record has no \"index\"; "
                                 f"is this a file of {producer}?")
            records[str(record["index"])] = record
    if not records:
        raise SystemExit(f"error: {path} is empty; it is written by {producer}")
    return records


def report_table(rows: dict[str, dict[str, float]], columns: Sequence[str],
                 digits: dict[str, int], out: str | Path) -> tuple[Path, Path]:
    """Print the table in Markdown (rows labelled as in the paper) and write it as CSV and
    JSON (:func:`write_table`)."""
    print(markdown_table({METHOD_LABELS.get(m, m): r for m, r in rows.items()}, columns,
                         digits))
    csv_path, json_path = write_table(rows, Path(out), columns)
    print(f"wrote {csv_path} and {json_path}")
    return csv_path, json_path
