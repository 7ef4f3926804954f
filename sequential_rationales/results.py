"""Typed rationalization results, the seed-compatible JSON log built from them, and JSONL I/O."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

SOURCE = "source"
TARGET = "target"


@dataclass(frozen=True)
class ContextToken:
    """One context position: ``stream`` is ``"source"`` or ``"target"``."""

    stream: str
    position: int


@dataclass
class SearchStep:
    """The state after one token was added to a rationale.

    ``added`` is ``None`` for searches that do not grow one token at a time (exhaustive search
    records one step per subset size, with the best subset of that size in ``subset``).
    """

    rationale_size: int
    added: ContextToken | None
    prediction: int
    prediction_prob: float
    true_token_prob: float
    subset: list[ContextToken] | None = None


@dataclass
class TargetRationale:
    """The rationale of one target token.

    ``rationale`` lists the context tokens in the order they were added (the previous target
    token first), except for exhaustive search, whose order is the previous token, then by
    position.
    """

    target_position: int
    goal_id: int
    rationale: list[ContextToken]
    steps: list[SearchStep]
    reached_argmax: bool

    @property
    def source_rationale(self) -> list[int]:
        return [c.position for c in self.rationale if c.stream == SOURCE]

    @property
    def target_rationale(self) -> list[int]:
        return [c.position for c in self.rationale if c.stream == TARGET]


@dataclass
class SequenceRationales:
    """Rationales of every rationalized target token of one sequence."""

    method: str
    target_ids: list[int]
    source_ids: list[int] | None
    rationales: list[TargetRationale]
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        """The interactive viewer (:mod:`sequential_rationales.html`) for notebooks; tokens show
        as ``extra["target_text"]`` / ``extra["source_text"]`` when attached, else as ids."""
        from .html import render_fragment

        return render_fragment([self])


Decoder = Callable[[int], str]


def _step_entry(step: SearchStep, decode: Decoder, decode_context: Callable[[ContextToken], str],
                conditional: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"rationale_size": step.rationale_size}
    if step.added is not None:
        entry["added_token_position"] = step.added.position
        entry["added_token_text"] = decode_context(step.added)
        if conditional:
            entry["from"] = step.added.stream
    if step.subset is not None:
        entry["subset"] = [c.position for c in step.subset]
        if conditional:
            entry["subset_from"] = [c.stream for c in step.subset]
    entry["prediction"] = decode(step.prediction)
    entry["prediction_prob"] = step.prediction_prob
    entry["true_token_prob"] = step.true_token_prob
    return entry


def _target_entry(r: TargetRationale, target_text: list[str], decode: Decoder,
                  decode_context: Callable[[ContextToken], str], conditional: bool
                  ) -> dict[str, Any]:
    """One target's entry of a seed log; translation logs split the rationale by stream."""
    entry: dict[str, Any] = {
        "target_position": r.target_position,
        "goal_word": target_text[r.target_position],
        "log": [_step_entry(s, decode, decode_context, conditional) for s in r.steps],
    }
    if conditional:
        entry["source_rationale"] = r.source_rationale
        entry["target_rationale"] = r.target_rationale
    else:
        entry["rationale"] = r.target_rationale
    entry["reached_argmax"] = r.reached_argmax
    return entry


def lm_log(result: SequenceRationales, decode: Decoder) -> dict[str, Any]:
    """The seed's language-model log: ``input_ids``, ``input_text``, ``rationalization``,
    ``all_rationales``, ``duration`` (plus ``method``)."""
    text = [decode(i) for i in result.target_ids]

    def context_text(c: ContextToken) -> str:
        return text[c.position]

    rationalization = [_target_entry(r, text, decode, context_text, False)
                       for r in result.rationales]
    return {
        "input_ids": list(result.target_ids),
        "input_text": text,
        "rationalization": rationalization,
        "all_rationales": [r.target_rationale for r in result.rationales],
        "duration": result.duration,
        "method": result.method,
        **_precision_fields(result),
    }


def conditional_log(result: SequenceRationales, decode_source: Decoder,
                    decode_target: Decoder, source_ids: list[int] | None = None
                    ) -> dict[str, Any]:
    """The seed's translation log: ``source_tokens(_text)``, ``target_tokens(_text)``,
    ``rationalizations`` (per target: ``source_rationale``, ``target_rationale``, ``log`` whose
    steps say ``from`` which side the token came), ``all_source_rationales``,
    ``all_target_rationales``, ``duration``. ``source_ids``: the source as given, when it is
    longer than the rationalized one (fairseq's final ``</s>``, always visible)."""
    source_ids = result.source_ids if source_ids is None else source_ids
    assert source_ids is not None
    src_text = [decode_source(i) for i in source_ids]
    tgt_text = [decode_target(i) for i in result.target_ids]

    def context_text(c: ContextToken) -> str:
        return (src_text if c.stream == SOURCE else tgt_text)[c.position]

    rationalizations = [_target_entry(r, tgt_text, decode_target, context_text, True)
                        for r in result.rationales]
    return {
        "source_tokens": list(source_ids),
        "target_tokens": list(result.target_ids),
        "source_tokens_text": src_text,
        "target_tokens_text": tgt_text,
        "rationalizations": rationalizations,
        "all_source_rationales": [r.source_rationale for r in result.rationales],
        "all_target_rationales": [r.target_rationale for r in result.rationales],
        "duration": result.duration,
        "method": result.method,
        **_precision_fields(result),
    }


def _precision_fields(result: SequenceRationales) -> dict[str, Any]:
    """The precision the search ran in and what its screen did, where recorded (``extra``)."""
    return {key: result.extra[key] for key in ("precision", "screening") if key in result.extra}


def write_jsonl(records: Iterable[dict[str, Any]], path: str | os.PathLike,
                append: bool = False) -> int:
    """Write one JSON object per line; returns the number written. Each line is flushed, so an
    interrupted run keeps every finished record."""
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            n += 1
    return n


def write_json_atomic(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Write ``record`` to a temporary file, then rename it to ``path``: an interrupted run
    never leaves a partial file that a resumed run would take for a finished one."""
    tmp = f"{os.fspath(path)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Read the records of a JSONL file; a truncated last line (interrupted run) is skipped."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                return
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from None

