"""The analogy experiment's examples (the paper's Table 1): Mikolov et al.'s word pairs placed
into one template per category, tokenized, with the token positions of the antecedent word and
of the distractor clause that the table's metrics need.

Kept free of command-line code so that the analogy runner and the timing comparison build the
same examples.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sequential_rationales.metrics import character_spans_to_token_positions
from sequential_rationales.validation import InputError, read_utf8, utf8_lines

ANALOGIES_FILE = "questions-words.txt"
TEMPLATES_FILE = "analogy_templates.json"
# The paper's code capitalized two currency words (so that they are read as currencies).
CAPITALIZED = {"currency": {"euro": "Euro", "won": "Won"}}


def read_analogy_pairs(path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """Unique word pairs per category, in first-seen order: each ``a b c d`` line gives the
    pairs ``(a, b)`` and ``(c, d)``."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    category = None
    for number, line in enumerate(utf8_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            category = line[1:].strip()
            pairs.setdefault(category, [])
            continue
        words = line.split()
        if category is None or len(words) != 4:
            raise InputError(f"{path}:{number}: expected ': category' or 'a b c d', got {line!r}")
        for pair in ((words[0], words[1]), (words[2], words[3])):
            if pair not in pairs[category]:
                pairs[category].append(pair)
    if not any(pairs.values()):
        raise InputError(f"{path} holds no word pairs (expected ': category' lines followed by "
                         "'a b c d' lines)")
    return pairs


@dataclass(frozen=True)
class Template:
    """A category template: ``target`` is the placeholder (``"A"`` or ``"B"``) ending it."""

    category: str
    text: str
    target: str

    @property
    def antecedent(self) -> str:
        return "B" if self.target == "A" else "A"


def read_templates(path: str | os.PathLike) -> dict[str, Template]:
    """``{category: template}``; each template has one ``[A]``, one ``[B]``, one ``( ... )``
    distractor clause, and ends with the target placeholder. Errors name the file and the
    line or category."""
    try:
        raw = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise InputError(f"{path}:{e.lineno}: invalid JSON ({e.msg}, column {e.colno})"
                         ) from None
    if not isinstance(raw, dict) or not raw:
        raise InputError(f"{path}: expected a non-empty JSON object {{category: template}}, "
                         f"got {type(raw).__name__ if raw else 'nothing'}")
    templates = {}
    for category, text in raw.items():
        if not isinstance(text, str):
            raise InputError(f"{path}: template {category!r} must be a string, got "
                             f"{type(text).__name__}")
        if text.count("[A]") != 1 or text.count("[B]") != 1:
            raise InputError(f"{path}: template {category!r} needs exactly one [A] and one [B]")
        if not re.search(r"\([^()]*\)", text):
            raise InputError(f"{path}: template {category!r} has no parenthetical distractor")
        target = "A" if text.index("[A]") > text.index("[B]") else "B"
        if not text.rstrip().endswith(f"[{target}]"):
            raise InputError(f"{path}: template {category!r} must end with its target "
                             f"placeholder [{target}]")
        templates[category] = Template(category, text.rstrip(), target)
    return templates


@dataclass
class AnalogyExample:
    """One filled template; spans are ``[start, end)`` character offsets into ``text``."""

    category: str
    category_index: int
    pair_index: int
    word_a: str
    word_b: str
    target_word: str
    antecedent_word: str
    text: str
    antecedent_span: tuple[int, int]
    target_span: tuple[int, int]
    distractor_span: tuple[int, int]  # from "(" to after ")"
    text_without_distractor: str

    @property
    def name(self) -> str:
        return f"{self.category_index}_{self.pair_index}"


def fill_template(template: Template, word_a: str, word_b: str) -> tuple[str, dict[str, tuple]]:
    """The sentence and the character spans of the two words."""
    words = {"A": word_a, "B": word_b}
    pieces = re.split(r"(\[A\]|\[B\])", template.text)
    text, spans = "", {}
    for piece in pieces:
        if piece in ("[A]", "[B]"):
            key = piece[1]
            spans[key] = (len(text), len(text) + len(words[key]))
            text += words[key]
        else:
            text += piece
    return text, spans


def remove_distractor(text: str, span: tuple[int, int]) -> str:
    """The sentence without its parenthetical clause: the clause and the spaces before it go,
    and so does a ``.`` right after ``)`` when the text before already ends a sentence
    (``"asleep. (I had ...). I was"`` -> ``"asleep. I was"``)."""
    start, end = span
    before = text[:start].rstrip()
    after = text[end:]
    if after.startswith(".") and before[-1:] in (".", "?", "!"):
        after = after[1:]
    return before + after


def build_examples(pairs: dict[str, list[tuple[str, str]]], templates: dict[str, Template],
                   is_single_token, categories: Sequence[str] | None = None
                   ) -> list[AnalogyExample]:
    """Fill the templates with every pair whose words are single tokens."""
    unknown = [c for c in (categories or []) if c not in templates]
    if unknown:
        raise SystemExit(f"error: unknown categories {unknown}; available: {list(templates)}")
    examples = []
    for category_index, (category, category_pairs) in enumerate(pairs.items()):
        if category not in templates or (categories and category not in categories):
            continue
        template = templates[category]
        fixes = CAPITALIZED.get(category, {})
        kept = [(fixes.get(a, a), fixes.get(b, b)) for a, b in category_pairs]
        kept = [(a, b) for a, b in kept if is_single_token(a) and is_single_token(b)]
        for pair_index, (a, b) in enumerate(kept):
            text, spans = fill_template(template, a, b)
            open_paren = text.index("(")
            distractor = (open_paren, text.index(")", open_paren) + 1)
            words = {"A": a, "B": b}
            examples.append(AnalogyExample(
                category=category, category_index=category_index, pair_index=pair_index,
                word_a=a, word_b=b, target_word=words[template.target],
                antecedent_word=words[template.antecedent], text=text,
                antecedent_span=spans[template.antecedent], target_span=spans[template.target],
                distractor_span=distractor,
                text_without_distractor=remove_distractor(text, distractor)))
    return examples


def single_token_checker(tokenizer: Any):
    """``word -> bool``: the word (with a leading space, as inside a sentence) is one known
    token of ``tokenizer``."""
    unk = getattr(tokenizer, "unk_token_id", None)

    def check(word: str) -> bool:
        ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        return len(ids) == 1 and (unk is None or ids[0] != unk)
    return check


def tokenize_example(tokenizer: Any, example: AnalogyExample) -> dict[str, Any] | None:
    """Token ids and the positions of the antecedent, distractor and target tokens, or
    ``None`` if the target word is not exactly the last token of the sentence."""
    enc = tokenizer(example.text, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    target = character_spans_to_token_positions(offsets, [example.target_span])
    if target != [len(ids) - 1]:
        return None
    return {
        "ids": ids,
        "antecedent_positions": character_spans_to_token_positions(
            offsets, [example.antecedent_span]),
        "distractor_positions": character_spans_to_token_positions(
            offsets, [example.distractor_span]),
    }


@torch.no_grad()
def predicts_last_token(model: Any, ids: Sequence[int]) -> bool:
    """Whether the model's argmax after ``ids[:-1]`` is ``ids[-1]`` (the full context)."""
    device = next(model.parameters()).device
    x = torch.as_tensor(list(ids), dtype=torch.long, device=device)[None]
    logits = model(input_ids=x[:, :-1]).logits[0, -1]
    return int(logits.argmax()) == int(ids[-1])


def example_record(example: AnalogyExample, tokens: dict[str, Any], log: dict[str, Any],
                   filtered: bool) -> dict[str, Any]:
    """The example's JSON record: the rationalization log plus what Table 1 is computed from
    (and the seed's own keys for the same positions)."""
    distractor = tokens["distractor_positions"]
    antecedent = tokens["antecedent_positions"]
    return {
        **log,
        "category": example.category,
        "category_index": example.category_index,
        "pair_index": example.pair_index,
        "word_a": example.word_a,
        "word_b": example.word_b,
        "target_word": example.target_word,
        "antecedent_word": example.antecedent_word,
        "text": example.text,
        "antecedent_positions": antecedent,
        "distractor_positions": distractor,
        # The seed's keys: the antecedent token and the inclusive distractor range.
        "antecedent_index": antecedent[-1] if antecedent else None,
        "distractor_start": min(distractor) if distractor else None,
        "distractor_end": max(distractor) if distractor else None,
        "checked_correct": filtered,
    }
