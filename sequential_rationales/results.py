"""Typed rationalization results, the seed-compatible JSON logs built from them, and JSONL I/O.

A search returns one [`TargetRationale`][sequential_rationales.results.TargetRationale] per
target token, collected with the sequence's token ids in a
[`SequenceRationales`][sequential_rationales.results.SequenceRationales].
[`lm_log`][sequential_rationales.results.lm_log] and
[`conditional_log`][sequential_rationales.results.conditional_log] turn a result into the
original project's JSON log.
"""

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
    """One context position, in the source or in the target.

    Attributes:
        stream: `"source"` (the input of a conditional model) or `"target"` (the language
            model's sequence, or the decoder's input).
        position: the token's position in its stream, from 0.
    """

    stream: str
    position: int


@dataclass
class SearchStep:
    """The state after one token was added to a rationale.

    Searches that do not grow one token at a time record whole subsets instead: exhaustive
    search records one step per subset size, with the best subset of that size, and a top-k
    rationale one step with its `k` tokens.

    Attributes:
        rationale_size: the number of tokens in the rationale after this step.
        added: the token added at this step; `None` for searches that record a `subset`.
        prediction: the model's most probable token id given only the rationale.
        prediction_prob: the probability of `prediction`.
        true_token_prob: the probability of the target's true token given only the rationale.
        subset: the whole rationale of this step, for searches that do not grow one token
            at a time; `None` otherwise.
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

    Attributes:
        target_position: the target's position in the target stream.
        goal_id: the token id at `target_position`, the prediction being explained.
        rationale: the context tokens in the order they were added (the previous target
            token first), except for exhaustive search, whose order is the previous token,
            then the source tokens, then the target tokens, each by position.
        steps: the search's state after each step.
        reached_argmax: whether the model, shown only the rationale, predicts the goal token
            as its argmax (the final step's `prediction` is `goal_id`).
    """

    target_position: int
    goal_id: int
    rationale: list[ContextToken]
    steps: list[SearchStep]
    reached_argmax: bool

    @property
    def source_rationale(self) -> list[int]:
        """The positions of the rationale's source tokens, in rationale order."""
        return [c.position for c in self.rationale if c.stream == SOURCE]

    @property
    def target_rationale(self) -> list[int]:
        """The positions of the rationale's target tokens, in rationale order."""
        return [c.position for c in self.rationale if c.stream == TARGET]


@dataclass
class SequenceRationales:
    """Rationales of every rationalized target token of one sequence.

    In a notebook a result displays as the interactive viewer, its tokens shown as
    `extra["target_text"]` and `extra["source_text"]` when attached, else as ids.

    Attributes:
        method: the registered name of the method that produced the rationales.
        target_ids: the token ids of the language model's sequence, or the decoder input of a
            conditional model (starting with its begin token).
        source_ids: a conditional model's source ids (without an end token that is always
            visible, such as fairseq's final `</s>`); `None` for a language model.
        rationales: one rationale per rationalized target, in the order of the problem's
            targets.
        duration: the seconds the method took.
        extra: further facts about the run, e.g. `precision` (the precision used),
            `screening` (what the bfloat16 screen did), `top_k`, and the token texts
            `target_text` and `source_text` when a caller attaches them.
    """

    method: str
    target_ids: list[int]
    source_ids: list[int] | None
    rationales: list[TargetRationale]
    duration: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The result as nested dicts and lists (`dataclasses.asdict`), e.g. for JSON."""
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
    """Build the original project's JSON log of a language model's rationales.

    Args:
        result: the rationales of one sequence of a language model.
        decode: turns a token id into its text.

    Returns:
        A JSON-serializable dict with the seed's keys `input_ids`, `input_text`,
            `rationalization` (per target: `target_position`, `goal_word`, `log` with one
            entry per step, `rationale` and `reached_argmax`), `all_rationales` (the
            positions of each target's rationale, in the order added) and `duration`, plus
            `method`, and `precision` and `screening` where `result.extra` records them.
    """
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
    """Build the original project's JSON log of a translation's rationales.

    Args:
        result: the rationales of one sequence of a conditional (source-target) model.
        decode_source: turns a source token id into its text.
        decode_target: turns a target token id into its text.
        source_ids: the source as given, when it is longer than the rationalized one
            (fairseq's final `</s>`, always visible); `None` takes `result.source_ids`.

    Returns:
        A JSON-serializable dict with the seed's keys `source_tokens`, `source_tokens_text`,
            `target_tokens`, `target_tokens_text`, `rationalizations` (per target:
            `source_rationale`, `target_rationale` and a `log` whose steps say `from` which
            side the added token came), `all_source_rationales`, `all_target_rationales` and
            `duration`, plus `method`, and `precision` and `screening` where `result.extra`
            records them.
    """
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
    """Write records as JSON Lines, one JSON object per line (UTF-8, non-ASCII kept as is).

    Each line is flushed as it is written, so an interrupted run keeps every finished record.

    Args:
        records: the JSON-serializable records to write.
        path: the file to write.
        append: add to the end of an existing file instead of replacing it.

    Returns:
        The number of records written.
    """
    n = 0
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            n += 1
    return n


def write_json_atomic(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Write one JSON record to a file atomically.

    The record is written to `path` with `.tmp` appended, then renamed to `path`: an
    interrupted run never leaves a partial file that a resumed run would take for a finished
    one.

    Args:
        record: the JSON-serializable record.
        path: the file to write; an existing file is replaced.
    """
    tmp = f"{os.fspath(path)}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_jsonl(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Read the records of a JSON Lines file.

    Blank lines are skipped, and so is a truncated last line (an interrupted run).

    Args:
        path: the file to read (UTF-8).

    Yields:
        Each line's JSON value, in file order.

    Raises:
        ValueError: a line other than the last is not valid JSON.
    """
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

