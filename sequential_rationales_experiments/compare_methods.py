"""Every rationalization method on the same examples of the Majority Class language model and
the synthetic translation model, measured the same way: one table.

Per (model, method) and example, :func:`measure` runs the method through
:func:`sequential_rationales.rationalize`, times it, scores the faithfulness of every target's
rationale (:func:`sequential_rationales.metrics.faithfulness`) and keeps the rationales, so the
rows (:func:`majority_class_row`, :func:`translation_row`) are computed from the stored records
alone. Plausibility reuses the existing definitions: the label rationale's bits against the
label (as ``run_majority_class`` computes ``label_rationale_precision``) and whether it is as
small as the exhaustive one; the alignment metrics of Table 4
(:func:`~sequential_rationales_experiments.commands.evaluate_alignment_rationales.word_items`,
:func:`~sequential_rationales.metrics.alignment_table_row`) against the gold links.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sequential_rationales import lm_problem, rationalize
from sequential_rationales.adapter import ModelAdapter
from sequential_rationales.metrics import (
    METHOD_LABELS,
    alignment_table_row,
    faithfulness,
    faithfulness_table_row,
    format_number,
    mean,
)
from sequential_rationales.search import RationalizationProblem
from sequential_rationales_experiments.commands.evaluate_alignment_rationales import word_items

FAITHFULNESS = ("sufficiency", "comprehensiveness", "aopc_sufficiency", "aopc_comprehensiveness")
# (key, header, digits); a model's rows fill the columns that apply to it.
COLUMNS = [
    ("Length", "Length", 2),
    ("sufficiency", "Suff.", 3),
    ("comprehensiveness", "Comp.", 3),
    ("aopc_sufficiency", "AOPC suff.", 3),
    ("aopc_comprehensiveness", "AOPC comp.", 3),
    ("Label bits", "Label bits", 2),
    ("Minimal", "Minimal", 2),
    ("AER", "AER", 2),
    ("F1", "F1", 2),
    ("Top1", "Top1", 2),
    ("Seconds", "s/target", 4),
]


@dataclass(frozen=True)
class SearchOptions:
    """The options every method gets (``exhaustive_max_steps`` replaces ``max_steps`` for
    exhaustive search, whose cost grows with the subsets it enumerates)."""

    max_steps: int = 1024
    exhaustive_max_steps: int = 4
    max_tokens_per_batch: int | None = None
    integrated_gradient_steps: int | None = None
    seed: int = 0

    def for_method(self, method: str) -> dict[str, Any]:
        return {"max_steps": self.exhaustive_max_steps if method == "exhaustive"
                else self.max_steps,
                "max_tokens_per_batch": self.max_tokens_per_batch,
                "integrated_gradient_steps": self.integrated_gradient_steps, "seed": self.seed}


def measure(adapter: ModelAdapter, problem: RationalizationProblem, method: str,
            options: SearchOptions, top_1: bool = False, **more: Any) -> dict[str, Any]:
    """One example's record: the time of the search, and per target its rationale (source and
    target positions, in the order added), size and faithfulness. ``top_1`` (conditional
    models) also runs the search stopped at the first source token, for Top1; exhaustive
    search has no such run. ``more``: further options of the method (``extractor``,
    ``top_k``)."""
    settings = {**options.for_method(method), **more}
    result = rationalize(adapter, problem, method, progress=False, **settings)
    scores = faithfulness(adapter, problem, result, options.max_tokens_per_batch)
    record: dict[str, Any] = {"seconds": result.duration, "num_source": problem.num_source,
                              "targets": [
        {"position": r.target_position, "source": r.source_rationale,
         "target": r.target_rationale, "size": len(r.rationale),
         "reached_argmax": r.reached_argmax, **scores[r.target_position]}
        for r in result.rationales]}
    if top_1 and method != "exhaustive":
        first = rationalize(adapter, problem, method, top_1=True, progress=False, **settings)
        record["top_1_source"] = {str(r.target_position): r.source_rationale
                                  for r in first.rationales}
    return record


def measure_majority_class(adapter: ModelAdapter, ids: Sequence[int], bit_is_label:
                           Sequence[bool], method: str, options: SearchOptions, **more: Any
                           ) -> dict[str, Any]:
    """:func:`measure` on the label of one Majority Class sentence (``ids``: ``</s>``, the
    bits, ``=``, the label), plus ``bits_match``: for each bit in the label's rationale,
    whether it equals the label (``bit_is_label[i]``: bit ``i + 1``)."""
    problem = lm_problem(adapter, ids, start_step=len(ids) - 2)
    record = measure(adapter, problem, method, options, **more)
    rationale = record["targets"][0]["target"]
    record["bits_match"] = [bool(bit_is_label[p - 1]) for p in rationale
                            if 1 <= p <= len(bit_is_label)]
    return record


def _time_and_faithfulness(records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    targets = [t for r in records for t in r["targets"]]
    row = {k: v for k, v in faithfulness_table_row(targets).items() if k in FAITHFULNESS}
    row["Length"] = mean(t["size"] for t in targets)
    row["Seconds"] = sum(r["seconds"] for r in records) / len(targets) if targets else math.nan
    row["examples"] = float(len(records))
    row["targets"] = float(len(targets))
    return row


def majority_class_row(records: Mapping[str, Mapping[str, Any]],
                       exhaustive: Mapping[str, Mapping[str, Any]] | None = None
                       ) -> dict[str, float]:
    """The row of one method from its records (``{example: record}`` of
    :func:`measure_majority_class`). ``Label bits``: the mean over sentences whose label
    rationale holds a bit of the share of its bits equal to the label (``run_majority_class``'s
    ``label_rationale_precision``). ``Minimal``: the share of sentences whose rationale is as
    small as the exhaustive one, over the sentences where exhaustive search found one within its
    ``max_steps`` (``nan`` without exhaustive records)."""
    row = _time_and_faithfulness(list(records.values()))
    row["Label bits"] = mean(sum(r["bits_match"]) / len(r["bits_match"])
                             for r in records.values() if r["bits_match"])
    if exhaustive:
        minimal = [records[name]["targets"][0]["size"] == e["targets"][0]["size"]
                   for name, e in exhaustive.items()
                   if name in records and e["targets"][0]["reached_argmax"]]
        row["Minimal"] = mean(float(m) for m in minimal)
    return row


def as_rationalize_log(record: Mapping[str, Any], num_source: int) -> dict[str, Any]:
    """The fields of a ``rationalize_iwslt`` log that the alignment evaluation reads (decoder
    positions; ``source_tokens`` with the final ``</s>``)."""
    return {"source_tokens": [0] * (num_source + 1), "rationalizations": [
        {"target_position": t["position"], "source_rationale": t["source"]}
        for t in record["targets"]]}


def as_top_1_log(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"rationalizations": [{"target_position": int(t), "source_rationale": s}
                                 for t, s in record["top_1_source"].items()]}


def translation_row(records: Mapping[str, Mapping[str, Any]],
                    gold: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The row of one method from its records (``{example index: record}`` of
    :func:`measure`) and the gold links (``{index: record}`` as
    ``run_translation_benchmark`` writes ``test_alignments.jsonl``): AER, F1 and (where the
    records have their Top1 runs) Top1 of Table 4, over the gold-aligned target words."""
    row = _time_and_faithfulness(list(records.values()))
    items = []
    for name, record in records.items():
        top_1 = as_top_1_log(record) if "top_1_source" in record else None
        items += word_items(as_rationalize_log(record, record["num_source"]), gold[name], top_1)
    if items:
        predicted, sure, possible, lengths, first = (list(c) for c in zip(*items))
        has_top_1 = all("top_1_source" in r for r in records.values())
        alignment = alignment_table_row(predicted, sure, possible, lengths,
                                        first if has_top_1 else None)
        row.update({k: alignment[k] for k in ("AER", "F1", "Top1") if k in alignment})
        row["words"] = alignment["n"]
    return row


# -- the table ---------------------------------------------------------------------------------
def markdown(table: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """``{model: {method: row}}`` as one Markdown table; ``-`` where a column does not apply."""
    lines = ["| Model | Method | " + " | ".join(h for _, h, _ in COLUMNS) + " |",
             "|---|---|" + "---|" * len(COLUMNS)]
    for model, rows in table.items():
        for method, row in rows.items():
            cells = [format_number(row.get(k, math.nan), d) for k, _, d in COLUMNS]
            lines.append(f"| {model} | {METHOD_LABELS.get(method, method)} | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def write_tables(table: Mapping[str, Mapping[str, Mapping[str, float]]], out: Path,
                 errors: Mapping[str, str] | None = None) -> list[Path]:
    """``comparison.md``, ``.csv`` (one line per model and method) and ``.json``
    (``{"rows": {model: {method: row}}, "errors": {"model/method": message}}``) in ``out``."""
    from sequential_rationales.results import write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "comparison.md", out / "comparison.csv", out / "comparison.json"]
    paths[0].write_text(markdown(table) + "\n", encoding="utf-8")
    keys = [k for k, _, _ in COLUMNS]
    extra = sorted({k for rows in table.values() for row in rows.values() for k in row}
                   - set(keys))
    with open(paths[1], "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "method", *keys, *extra])
        for model, rows in table.items():
            for method, row in rows.items():
                writer.writerow([model, method, *("" if _clean(row.get(k, math.nan)) is None
                                                  else row[k] for k in keys + extra)])
    write_json_atomic({"rows": {m: {method: {k: _clean(v) for k, v in row.items()}
                                    for method, row in rows.items()}
                                for m, rows in table.items()},
                       "errors": dict(errors or {})}, paths[2])
    return paths


def read_records(folder: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The finished records among ``names`` (``FOLDER/NAME.json``)."""
    found = {}
    for name in names:
        path = folder / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text(encoding="utf-8"))
    return found
