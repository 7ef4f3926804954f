"""Rationalize the final word of the annotated Lambada passages (the paper's Table 2).

``annotated_lambada.json`` (JSON lines: ``lambadaIndex``, ``text``, ``rationale`` = list of
``[start, end)`` character spans) holds 107 passages with human rationales for their last
word. The last word (the text after the last whitespace) is the target: all of its sub-word
tokens are rationalized (``start_step`` is the position before its first piece). The human
spans are mapped to token positions with the tokenizer's character offsets (a token belongs
if it overlaps a span), so a fast tokenizer is required.

One JSON file per passage, ``<row>.json`` in ``--out`` (``row`` = line number in the file,
from 0): the rationalization log plus ``human_subword_rationale`` (human token positions),
``target_positions`` (the last word's tokens), ``lambada_index`` and the text. Existing files
are skipped, so an interrupted run resumes where it stopped.

    python huggingface/rationalize_annotated_lambada.py --checkpoint_dir $CHECKPOINT_DIR \
        --method greedy
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from huggingface.rationalize_analogies import (  # noqa: E402
    DEFAULT_DATA_DIR,
    HelpFormatter,
    add_model_arguments,
    add_run_arguments,
    load_model_and_tokenizer,
    missing_data_error,
    output_dir,
    run_method,
    write_json_atomic,
)
from sequential_rationales.metrics import character_spans_to_token_positions  # noqa: E402

LAMBADA_FILE = "annotated_lambada.json"


def read_annotated_lambada(path: str | Path) -> list[dict[str, Any]]:
    """The passages, one dict per JSON line, checked for ``text`` and ``rationale``."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("text"), str) or not isinstance(row.get("rationale"), list):
            raise ValueError(f"{path}:{number}: expected 'text' and a 'rationale' span list")
        rows.append(row)
    return rows


def last_word_start(text: str) -> int:
    """Character index where the last whitespace-separated word starts."""
    stripped = text.rstrip()
    if not stripped:
        raise ValueError("empty passage")
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
        raise ValueError("the last word must follow at least one token")
    return {"ids": ids, "target_positions": target,
            "human": character_spans_to_token_positions(offsets, spans)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    add_model_arguments(p)
    add_run_arguments(p, "lambada")
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR),
                   help=f"folder with {LAMBADA_FILE} (default: data/ under the repository "
                        "root; see scripts/download_data.py)")
    args = p.parse_args(argv)
    if args.max_examples is not None and args.max_examples < 1:
        p.error("--max_examples must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, int]:
    from tqdm import tqdm

    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not (data_dir / LAMBADA_FILE).is_file():
        raise missing_data_error(data_dir / LAMBADA_FILE, data_dir)
    rows = read_annotated_lambada(data_dir / LAMBADA_FILE)
    if args.max_examples is not None:
        rows = rows[:args.max_examples]
    model, tokenizer = load_model_and_tokenizer(args, need_offsets=True)
    max_positions = next((int(v) for k in ("n_positions", "max_position_embeddings")
                          if (v := getattr(model.config, k, None))), None)
    out = output_dir(args, "lambada")
    counts = {"written": 0, "existing": 0, "too_long": 0}
    bar = tqdm(list(enumerate(rows)), desc=f"lambada/{args.method}", unit="passage")
    for row_number, row in bar:
        path = out / f"{row_number}.json"
        if path.exists():
            counts["existing"] += 1
            continue
        tokens = tokenize_passage(tokenizer, row["text"], row["rationale"])
        if max_positions is not None and len(tokens["ids"]) > max_positions:
            counts["too_long"] += 1
            continue
        ids = torch.tensor(tokens["ids"], dtype=torch.long)
        _, log = run_method(model, ids, tokenizer, args,
                            start_step=tokens["target_positions"][0] - 1)
        record = {**log,
                  "human_subword_rationale": tokens["human"],
                  "target_positions": tokens["target_positions"],
                  "lambada_index": row.get("lambadaIndex"),
                  "row": row_number,
                  "text": row["text"]}
        write_json_atomic(record, path)
        counts["written"] += 1
        bar.set_postfix(counts, refresh=False)
    bar.close()
    print(f"{len(rows)} passages; {counts}; results in {out}")
    return counts


if __name__ == "__main__":
    main()
