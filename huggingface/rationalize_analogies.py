"""Rationalize templated analogies with a causal LM (the paper's Table 1).

Word pairs come from Mikolov et al. (2013) (``questions-words.txt``: ``: category`` headers,
then ``a b c d`` lines, i.e. the pairs ``(a, b)`` and ``(c, d)``); the unique pairs of each
category, in first-seen order, whose two words are single tokens (``" " + word``) are placed
into the category's template (``analogy_templates.json``: ``[A]``/``[B]`` placeholders and a
parenthetical distractor clause). The placeholder that ends the template is the target word,
the other one its antecedent. An example is rationalized only if the model predicts the
target (argmax of the last token) both with and without the distractor clause (``--no_filter``
turns this off), and only the last token is rationalized (``start_step = len - 2``).

One JSON file per example, ``<category_index>_<pair_index>.json`` in ``--out``: the
rationalization log (``sequential_rationales.results.lm_log``) plus ``antecedent_positions``,
``distractor_positions`` (token positions), the seed's ``antecedent_index``,
``distractor_start``/``distractor_end`` (inclusive), ``checked_correct`` (whether the
correctness filter was applied), the words and the text. Existing files are skipped, so an
interrupted run resumes where it stopped (delete files to recompute them).

``--method exhaustive`` searches a random third of the examples, as the paper's code did
(``--exhaustive_fraction``); an exhaustive result that found no sufficient subset within
``--max_steps`` is written with ``reached_argmax: false`` and left out of the Ratio.

    python huggingface/rationalize_analogies.py --checkpoint_dir $CHECKPOINT_DIR --method greedy
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    # Run as a script (``python huggingface/rationalize_analogies.py``): make the repository
    # root importable.
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from sequential_rationales import list_methods  # noqa: E402
from sequential_rationales.metrics import character_spans_to_token_positions  # noqa: E402

ANALOGIES_FILE = "questions-words.txt"
TEMPLATES_FILE = "analogy_templates.json"
DEFAULT_DATA_DIR = REPO / "data"
DEFAULT_RESULTS_DIR = REPO / "rationalization_results"
DEFAULT_MAX_STEPS = {"exhaustive": 6}  # every other method: 1024 (the seed's defaults)
# The paper's code capitalized two currency words (so that they are read as currencies).
CAPITALIZED = {"currency": {"euro": "Euro", "won": "Won"}}


# -- shared command-line helpers (also used by the other GPT-2 scripts) -----------------------
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` unless the help already states the default or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_model_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--checkpoint_dir`` | ``--model_name_or_path``, ``--tokenizer``, ``--device``."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--checkpoint_dir",
                       help="checkpoint folder as in the seed: the model is loaded from "
                            "CHECKPOINT_DIR/compatible_gpt2 if that exists, else from "
                            "CHECKPOINT_DIR itself (a Hugging Face model directory)")
    group.add_argument("--model_name_or_path",
                       help="a Hugging Face model directory (or hub name, which needs network)")
    parser.add_argument("--tokenizer", default=None,
                        help="tokenizer directory or name (default: the model's own folder)")
    parser.add_argument("--device", default=None,
                        help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")


def resolve_model_path(checkpoint_dir: str | None, model_name_or_path: str | None) -> str:
    if model_name_or_path:
        return model_name_or_path
    root = Path(checkpoint_dir or "")
    if not root.is_dir():
        raise SystemExit(f"error: --checkpoint_dir {root} is not a directory")
    nested = root / "compatible_gpt2"
    return str(nested if (nested / "config.json").is_file() else root)


def load_model_and_tokenizer(args: argparse.Namespace, need_offsets: bool = False):
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` (eval mode, on ``args.device``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(args.checkpoint_dir, args.model_name_or_path)
    tokenizer_path = args.tokenizer or path
    try:
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: could not load a causal LM from {path!r}: {e}\nPass a local "
                         "model directory (no model hub is reachable offline).") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: could not load a tokenizer from {tokenizer_path!r}: {e}\n"
                         "Pass --tokenizer DIR (e.g. the folder of the base model).") from None
    if need_offsets and not getattr(tokenizer, "is_fast", False):
        raise SystemExit("error: this script needs a fast tokenizer (character offsets); "
                         f"{type(tokenizer).__name__} is not one")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device).eval(), tokenizer


def add_run_arguments(parser: argparse.ArgumentParser, task: str) -> None:
    """``--method``, ``--out``, ``--max_examples``, ``--max_steps`` and batching options."""
    parser.add_argument("--method", default="greedy", choices=list_methods(),
                        help="rationalization method: greedy, exhaustive, or a baseline "
                             "ordering")
    parser.add_argument("--out", default=None,
                        help=f"output folder (default: rationalization_results/{task}/<method> "
                             "under the repository root)")
    parser.add_argument("--max_examples", type=int, default=None,
                        help="stop after this many examples (default: all)")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="largest rationale size searched (default: 6 for exhaustive, "
                             "1024 otherwise)")
    parser.add_argument("--max_tokens_per_batch", type=int, default=None,
                        help="tokens per forward pass of candidate subsets (default: 2048 on CPU, "
                        "32768 on CUDA); results do not depend on it")
    parser.add_argument("--integrated_gradient_steps", type=int, default=100,
                        help="path steps of integrated gradients")
    parser.add_argument("--verbose", action="store_true",
                        help="print every rationale as it is found")


def output_dir(args: argparse.Namespace, task: str) -> Path:
    out = Path(args.out) if args.out else DEFAULT_RESULTS_DIR / task / args.method
    out.mkdir(parents=True, exist_ok=True)
    return out


def run_method(model: Any, ids: torch.Tensor, tokenizer: Any, args: argparse.Namespace,
               start_step: int) -> tuple[list[list[int]], dict[str, Any]]:
    """Rationalize the targets after ``start_step`` with ``args.method``."""
    from huggingface.rationalization import (
        baseline_rationalize_lm,
        exhaustive_rationalize_lm,
        rationalize_lm,
    )

    max_steps = args.max_steps or DEFAULT_MAX_STEPS.get(args.method, 1024)
    common = dict(verbose=args.verbose, max_steps=max_steps, start_step=start_step,
                  max_tokens_per_batch=args.max_tokens_per_batch)
    if args.method == "greedy":
        return rationalize_lm(model, ids, tokenizer, **common)
    if args.method == "exhaustive":
        return exhaustive_rationalize_lm(model, ids, tokenizer, **common)
    return baseline_rationalize_lm(model, ids, tokenizer, args.method,
                                   integrated_gradient_steps=args.integrated_gradient_steps,
                                   **common)


def write_json_atomic(record: dict[str, Any], path: Path) -> None:
    """Write then rename, so an interrupted run never leaves a partial file to be skipped."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def missing_data_error(path: Path, data_dir: Path) -> SystemExit:
    return SystemExit(
        f"error: {path.name} not found in {data_dir}.\nGet the data with "
        "`python scripts/download_data.py` (or copy it from a local folder: "
        "`python scripts/download_data.py --source ../shared/data`), or point --data_dir at "
        "a folder that has it, e.g. --data_dir ../shared/data")


# -- data ---------------------------------------------------------------------------------------
def read_analogy_pairs(path: str | os.PathLike) -> dict[str, list[tuple[str, str]]]:
    """Unique word pairs per category, in first-seen order: each ``a b c d`` line gives the
    pairs ``(a, b)`` and ``(c, d)``."""
    pairs: dict[str, list[tuple[str, str]]] = {}
    category = None
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            category = line[1:].strip()
            pairs.setdefault(category, [])
            continue
        words = line.split()
        if category is None or len(words) != 4:
            raise ValueError(f"{path}:{number}: expected ': category' or 'a b c d', got {line!r}")
        for pair in ((words[0], words[1]), (words[2], words[3])):
            if pair not in pairs[category]:
                pairs[category].append(pair)
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
    distractor clause, and ends with the target placeholder."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    templates = {}
    for category, text in raw.items():
        if text.count("[A]") != 1 or text.count("[B]") != 1:
            raise ValueError(f"{path}: template {category!r} needs exactly one [A] and one [B]")
        if not re.search(r"\([^()]*\)", text):
            raise ValueError(f"{path}: template {category!r} has no parenthetical distractor")
        target = "A" if text.index("[A]") > text.index("[B]") else "B"
        if not text.rstrip().endswith(f"[{target}]"):
            raise ValueError(f"{path}: template {category!r} must end with its target "
                             f"placeholder [{target}]")
        templates[category] = Template(category, text.rstrip(), target)
    return templates


@dataclass
class AnalogyExample:
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


# -- command line ---------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    add_model_arguments(p)
    add_run_arguments(p, "analogies")
    p.add_argument("--data_dir", default=str(DEFAULT_DATA_DIR),
                   help=f"folder with {ANALOGIES_FILE} and {TEMPLATES_FILE} (default: data/ "
                        "under the repository root; see scripts/download_data.py)")
    p.add_argument("--categories", nargs="+", default=None,
                   help="only these categories (names as in the templates file)")
    p.add_argument("--no_filter", action="store_true",
                   help="rationalize every example, not only those the model completes "
                        "correctly with and without the distractor (the paper filters; use "
                        "this for untrained test models)")
    p.add_argument("--exhaustive_fraction", type=float, default=0.33,
                   help="exhaustive search only: fraction of examples searched, drawn at "
                        "random (the paper's code searched about a third)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random choice of exhaustive examples")
    args = p.parse_args(argv)
    if args.max_examples is not None and args.max_examples < 1:
        p.error("--max_examples must be >= 1")
    if not 0.0 < args.exhaustive_fraction <= 1.0:
        p.error("--exhaustive_fraction must be in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict[str, int]:
    from tqdm import tqdm

    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    for name in (ANALOGIES_FILE, TEMPLATES_FILE):
        if not (data_dir / name).is_file():
            raise missing_data_error(data_dir / name, data_dir)
    pairs = read_analogy_pairs(data_dir / ANALOGIES_FILE)
    templates = read_templates(data_dir / TEMPLATES_FILE)
    model, tokenizer = load_model_and_tokenizer(args, need_offsets=True)
    examples = build_examples(pairs, templates, single_token_checker(tokenizer),
                              args.categories)
    out = output_dir(args, "analogies")
    rng = random.Random(args.seed)
    counts = {"written": 0, "existing": 0, "not_correct": 0, "not_sampled": 0,
              "bad_tokenization": 0}
    bar = tqdm(examples, desc=f"analogies/{args.method}", unit="example")
    for example in bar:
        if args.max_examples is not None and counts["written"] + counts["existing"] >= (
                args.max_examples):
            break
        # Drawn for every candidate, so the chosen examples do not depend on resuming.
        sampled = rng.random() < args.exhaustive_fraction
        if args.method == "exhaustive" and not sampled:
            counts["not_sampled"] += 1
            continue
        path = out / f"{example.name}.json"
        if path.exists():
            counts["existing"] += 1
            continue
        tokens = tokenize_example(tokenizer, example)
        if tokens is None:
            counts["bad_tokenization"] += 1
            continue
        if not args.no_filter:
            short = tokenizer(example.text_without_distractor)["input_ids"]
            if not (predicts_last_token(model, tokens["ids"])
                    and predicts_last_token(model, short)):
                counts["not_correct"] += 1
                continue
        ids = torch.tensor(tokens["ids"], dtype=torch.long)
        _, log = run_method(model, ids, tokenizer, args, start_step=len(ids) - 2)
        write_json_atomic(example_record(example, tokens, log, not args.no_filter), path)
        counts["written"] += 1
        bar.set_postfix(counts, refresh=False)
    bar.close()
    print(f"{len(examples)} candidate examples; {counts}; results in {out}")
    return counts


if __name__ == "__main__":
    main()
