"""The annotated Lambada passages (the paper's Table 2): reading them, and tokenizing a passage
into its token ids, the token positions of its last word (the targets) and those of the human
rationale (character spans mapped through the tokenizer's offsets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sequential_rationales.metrics import character_spans_to_token_positions
from sequential_rationales.validation import InputError, utf8_lines

LAMBADA_FILE = "annotated_lambada.json"


def read_annotated_lambada(path: str | Path) -> list[dict[str, Any]]:
    """The passages, one dict per JSON line, checked for ``text`` and ``rationale`` spans
    ``[start, end]`` inside the text; errors name the file and line."""
    rows = []
    for number, line in enumerate(utf8_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}:{number}: invalid JSON ({e.msg}, column {e.colno})"
                             ) from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or (
                not isinstance(row.get("rationale"), list)):
            raise InputError(f"{path}:{number}: expected 'text' and a 'rationale' span list")
        _check_spans(row["rationale"], len(row["text"]), f"{path}:{number}")
        rows.append(row)
    if not rows:
        raise InputError(f"{path} holds no passages")
    return rows


def _check_spans(spans: list, length: int, where: str) -> None:
    """Each span is ``[start, end]`` with ``0 <= start <= end <= len(text)``: a span outside
    the passage would silently select no tokens, or the wrong ones."""
    for span in spans:
        if not (isinstance(span, list) and len(span) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span)):
            raise InputError(f"{where}: rationale span {span!r} is not [start, end]")
        start, end = span
        if start > end:
            raise InputError(f"{where}: rationale span {span} is inverted (start > end)")
        if start < 0 or end > length:
            raise InputError(f"{where}: rationale span {span} lies outside the passage of "
                             f"{length} characters")


def last_word_start(text: str) -> int:
    """Character index where the last whitespace-separated word starts."""
    stripped = text.rstrip()
    if not stripped:
        raise InputError("empty passage")
    i = len(stripped)
    while i > 0 and not stripped[i - 1].isspace():
        i -= 1
    return i


def tokenize_passage(tokenizer: Any, text: str, spans: list[list[int]]) -> dict[str, Any]:
    """Token ids (trailing zero-width special tokens dropped), the last word's token
    positions, and the human rationale's token positions."""
    enc = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    while offsets and offsets[-1][1] <= offsets[-1][0]:  # e.g. an appended </s>
        ids.pop()
        offsets.pop()
    start = last_word_start(text)
    target = [i for i, (s, e) in enumerate(offsets) if e > s and e > start]
    if not target or target[0] < 1:
        raise InputError("the last word must follow at least one token")
    return {"ids": ids, "target_positions": target,
            "human": character_spans_to_token_positions(offsets, spans)}


def passage_record(row_number: int, row: dict[str, Any], tokens: dict[str, Any],
                   log: dict[str, Any]) -> dict[str, Any]:
    """The passage's JSON record: the rationalization log plus what Table 2 is computed from."""
    return {**log,
            "human_subword_rationale": tokens["human"],
            "target_positions": tokens["target_positions"],
            "lambada_index": row.get("lambadaIndex"),
            "row": row_number,
            "text": row["text"]}
