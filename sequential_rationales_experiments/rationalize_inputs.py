"""What the ``rationalize`` command rationalizes: its inputs (texts, a text file, JSONL) and its
model (a Hugging Face causal LM directory or a fairseq translation checkpoint), turned into one
:class:`Job` per input.

Everything that can be checked before the first forward pass is checked here (the model and
tokenizer files, empty inputs, lengths, ``--start-step``), so that a bad run stops at once with
one line that names the problem, not hours in with a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sequential_rationales import SequenceRationales, rationalize_sequence, rationalize_translation
from sequential_rationales.validation import InputError, utf8_lines

from .cli import first_line

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model",
                   "spiece.model", "vocab.txt")
# Greedy translations stop at </s> or after 2 * source length (with its </s>) + 10 tokens
# (an untrained model may never emit </s>; fairseq's default of 200 would make it costly).
MAX_LEN_A, MAX_LEN_B = 2, 10
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Input:
    """One input: a prompt (language model) or a source sentence (translation) with an
    optional given translation."""

    index: int
    text: str
    target: str | None = None


@dataclass
class Job:
    """One input ready to run: ``run`` returns the typed result (``None`` when skipped) and
    the record to store; ``targets`` is the expected number of targets (progress bar)."""

    index: int
    text: str
    targets: int | None
    run: Callable[[], tuple[SequenceRationales | None, dict[str, Any]]]


def fail(message: str) -> SystemExit:
    """A one-line error for the user (``raise fail(...)``): no traceback."""
    return SystemExit(f"error: {message}")


# -- inputs ---------------------------------------------------------------------------------
def read_inputs(texts: list[str] | None, path: str | None) -> list[Input]:
    """``--text`` values, or the lines of ``--input``: JSONL (``.jsonl`` or a first line that
    starts with ``{``) with ``text`` or ``source`` (and optional ``target``) fields, else plain
    text, one input per non-blank line."""
    if texts is not None:
        items = [Input(i, text) for i, text in enumerate(texts)]
    else:
        file = Path(path or "")
        if not file.is_file():
            raise fail(f"--input {file} is not a file")
        lines = [(number, line) for number, line in enumerate(utf8_lines(file), 1)
                 if line.strip()]
        if file.suffix == ".jsonl" or (lines and lines[0][1].lstrip().startswith("{")):
            items = [_json_input(i, line, file, number)
                     for i, (number, line) in enumerate(lines)]
        else:
            items = [Input(i, line.strip()) for i, (_, line) in enumerate(lines)]
    empty = [item.index for item in items if not item.text.strip()]
    if not items:
        raise fail("no input: pass --text TEXT or --input FILE with at least one non-blank line")
    if empty:
        raise fail(f"input {empty[0]} is empty")
    return items


def _json_input(index: int, line: str, file: Path, number: int) -> Input:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise fail(f"{file}:{number} is not valid JSON ({e.msg})") from None
    text = row.get("text", row.get("source")) if isinstance(row, dict) else None
    if not isinstance(text, str):
        raise fail(f"{file}:{number} has no string field 'text' (or 'source')")
    target = row.get("target")
    if target is not None and not isinstance(target, str):
        raise fail(f"{file}:{number}: 'target' must be a string")
    return Input(index, text, target)


# -- devices --------------------------------------------------------------------------------
# -- models ---------------------------------------------------------------------------------
def load_model(model: str, data: str | None, tokenizer: str | None, device: str,
               dtype: str) -> CausalLM | FairseqTranslator:
    """A Hugging Face model directory (it has ``config.json``) or a fairseq checkpoint (a
    ``.pt`` file, or a folder with ``checkpoint_best.pt``, ``checkpoint_last.pt`` or one
    ``.pt`` file), which needs ``data``."""
    path = Path(model)
    if not path.exists():
        raise fail(f"--model {path} does not exist")
    if path.is_dir() and (path / "config.json").is_file():
        if data is not None:
            raise fail(f"--data is the binarized data folder of a fairseq checkpoint; the "
                       f"Hugging Face model {path} takes none (leave --data out)")
        return CausalLM.load(path, Path(tokenizer) if tokenizer else path, device, dtype)
    checkpoint = _fairseq_checkpoint(path)
    if checkpoint is None:
        raise fail(f"--model {path} is neither a Hugging Face model directory (no config.json) "
                   "nor a fairseq checkpoint (.pt)")
    if tokenizer is not None:
        raise fail(f"--tokenizer is for Hugging Face models; the fairseq checkpoint "
                   f"{checkpoint} reads its dictionaries from --data (leave --tokenizer out)")
    if data is None:
        raise fail(f"--model {checkpoint} is a fairseq checkpoint: pass --data, its binarized "
                   "data directory (with the dictionaries)")
    return FairseqTranslator.load(checkpoint, Path(data), device, dtype)


def _fairseq_checkpoint(path: Path) -> Path | None:
    if path.is_file():
        return path if path.suffix == ".pt" else None
    for name in ("checkpoint_best.pt", "checkpoint_last.pt"):
        if (path / name).is_file():
            return path / name
    found = sorted(path.glob("*.pt"))
    return found[0] if len(found) == 1 else None


class CausalLM:
    """A Hugging Face causal LM and its tokenizer: every token after ``--start-step`` of a
    text (or of its greedy continuation) is a target."""

    kind = "language model"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

        self.model, self.tokenizer = model, tokenizer
        try:
            self.adapter = HuggingFaceCausalLM(model)
        except (TypeError, ValueError) as error:
            raise fail(str(error)) from None
        size = len(tokenizer)
        if size > self.adapter.vocab_size:
            raise fail(f"the tokenizer has {size:,} tokens but the model's vocabulary only "
                       f"{self.adapter.vocab_size:,}: they do not belong together; pass the "
                       "model's own tokenizer with --tokenizer")

    @classmethod
    def load(cls, path: Path, tokenizer_path: Path, device: str, dtype: str) -> CausalLM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from sequential_rationales_integrations.huggingface.locations import from_pretrained

        if not tokenizer_path.is_dir():
            raise fail(f"--tokenizer {tokenizer_path} is not a directory")
        if not any((tokenizer_path / name).is_file() for name in TOKENIZER_FILES):
            raise fail(f"no tokenizer files in {tokenizer_path} (tokenizer.json, "
                       "tokenizer_config.json, vocab.json, ...): save the tokenizer there with "
                       "tokenizer.save_pretrained(DIR) or pass --tokenizer DIR")
        try:
            model = from_pretrained(
                AutoModelForCausalLM, path, dtype=DTYPES.get(dtype, "auto"))
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        except InputError:
            raise
        except (OSError, ValueError) as e:
            raise fail(f"could not load a causal LM and tokenizer from {path}: "
                       f"{first_line(e)}") from None
        return cls(model.to(device).eval(), tokenizer)

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def jobs(self, inputs: list[Input], start_step: int | None, generate: int | None,
             options: dict[str, Any]) -> list[Job]:
        """Tokenize every input and check it fits: the errors come before any work."""
        limit = self.adapter.max_positions
        jobs = []
        for item in inputs:
            if item.target is not None:
                raise fail(f"input {item.index} has a 'target': targets are for translation "
                           "models, a language model rationalizes its text")
            ids = [int(i) for i in self.tokenizer(item.text)["input_ids"]]
            self._check_known(item, ids)
            length = len(ids) + (generate or 0)
            if limit is not None and length > limit:
                raise fail(f"input {item.index} needs {length} positions, more than the "
                           f"model's {limit}")
            start = (len(ids) - 1 if generate else 0) if start_step is None else start_step
            if length < 2:
                raise fail(f"input {item.index} is one token: nothing to rationalize (the "
                           "first token has no context); add text or use --generate")
            if not 0 <= start <= length - 2:
                raise fail(f"input {item.index} has {length} tokens: --start-step must be in "
                           f"[0, {length - 2}] (got {start}); nothing to rationalize otherwise")
            jobs.append(Job(item.index, item.text, length - 1 - start,
                            self._runner(item, ids, start, generate, options)))
        return jobs

    def _check_known(self, item: Input, ids: list[int]) -> None:
        """Stop when the tokenizer knows none of an input's words: the model would explain a
        row of unknown-token markers (a tokenizer of another vocabulary)."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        special = set(getattr(self.tokenizer, "all_special_ids", ())) - {unk}
        words = [i for i in ids if i not in special]
        if unk is not None and words and all(i == unk for i in words):
            raise fail(f"input {item.index}: every token is unknown to the tokenizer "
                       f"({self.tokenizer.unk_token}); is --tokenizer the model's own?")

    def _runner(self, item: Input, ids: list[int], start: int, generate: int | None,
                options: dict[str, Any]) -> Callable[[], tuple[SequenceRationales, dict]]:
        def run() -> tuple[SequenceRationales, dict[str, Any]]:
            full = self.continue_greedily(ids, generate) if generate else ids
            result, log = rationalize_sequence(self.adapter, torch.tensor(full), self.decode,
                                               start_step=start, **options)
            record = {"input_index": item.index, "text": item.text, **log}
            if generate:
                record["prompt_length"] = len(ids)
                record["generated_text"] = self.tokenizer.decode(full[len(ids):])
            return result, record

        return run

    def continue_greedily(self, ids: list[int], new_tokens: int) -> list[int]:
        """``ids`` and the model's greedy continuation of at most ``new_tokens`` tokens (it
        stops early at the end-of-sequence token)."""
        device = self.adapter.device
        prompt = torch.tensor([ids], device=device)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                                      max_new_tokens=new_tokens,
                                      do_sample=False, num_beams=1, pad_token_id=pad)
        return [int(i) for i in out[0]]


class FairseqTranslator:
    """A translation checkpoint of the fairseq plugin: every target token is a target, its
    rationale drawn from the source and the earlier target tokens. The target is the input's
    given ``target`` or else the model's greedy (beam 1) translation, of at most
    ``MAX_LEN_A * source length + MAX_LEN_B`` tokens."""

    kind = "translation model"

    def __init__(self, hub: Any) -> None:
        from sequential_rationales.adapters.fairseq import unwrap_model

        self.hub = hub
        model = unwrap_model(hub)
        self.decode_source = model.encoder.dictionary.__getitem__
        self.decode_target = model.decoder.dictionary.__getitem__
        self.eos = hub.task.target_dictionary.eos()

    @classmethod
    def load(cls, checkpoint: Path, data: Path, device: str, dtype: str) -> FairseqTranslator:
        from sequential_rationales.adapters.fairseq import unwrap_model
        from sequential_rationales_experiments.fairseq_tools import quiet_fairseq_logging
        from sequential_rationales_integrations.fairseq import load_hub_model

        if not data.is_dir():
            raise fail(f"--data {data} is not a directory")
        quiet_fairseq_logging()
        try:
            hub = load_hub_model(checkpoint.parent, checkpoint.name, str(data.resolve()))
        except (FileNotFoundError, ValueError) as e:
            raise fail(str(e).splitlines()[0]) from None
        if not hasattr(hub, "generate") or not hasattr(unwrap_model(hub), "encoder"):
            raise fail(f"{checkpoint} is not a translation model (fairseq language models are "
                       "not supported by this command; see fairseq/rationalization.py)")
        hub = hub.to(device)
        if dtype in ("bfloat16", "float16"):
            hub = hub.to(DTYPES[dtype])
        return cls(hub.eval())

    def jobs(self, inputs: list[Input], start_step: int | None, generate: int | None,
             options: dict[str, Any]) -> list[Job]:
        if generate:
            raise fail("--generate is for language models; a translation model translates "
                       "each source greedily when the input gives no target")
        if start_step is not None:
            raise fail("--start-step is for language models; a translation model "
                       "rationalizes every target token")
        for item in inputs:
            if item.target is not None:
                self._encode_target(item)  # unknown words stop the run before any work
        return [Job(item.index, item.text, None, self._runner(item, options)) for item in inputs]

    def _encode_target(self, item: Input) -> Tensor:
        """The given target as target-dictionary ids (ending with ``</s>``); a word the
        dictionary lacks would silently become ``<unk>``, so it is an error."""
        pieces = self.hub.apply_bpe(self.hub.tokenize(item.target))
        ids = self.hub.tgt_dict.encode_line(pieces, add_if_not_exist=False, append_eos=True)
        unk = self.hub.tgt_dict.unk()
        unknown = [piece for piece, i in zip(pieces.split(), ids.tolist(), strict=False)
                   if i == unk and piece != self.hub.tgt_dict[unk]]
        if unknown:
            raise fail(f"input {item.index}: the target has {len(unknown)} piece(s) outside the "
                       f"model's target dictionary ({', '.join(map(repr, unknown[:5]))}), "
                       "which would be read as <unk>; fix the target, or leave it out to "
                       "rationalize the model's own translation")
        return ids

    def _runner(self, item: Input, options: dict[str, Any]
                ) -> Callable[[], tuple[SequenceRationales | None, dict[str, Any]]]:
        from sequential_rationales.adapters.fairseq import FairseqTranslationModel

        def run() -> tuple[SequenceRationales | None, dict[str, Any]]:
            device = self.hub.device
            source = self.hub.encode(item.text).to(device)  # ends with </s>
            if item.target is None:
                hypothesis = self.hub.generate([source], beam=1, max_len_a=MAX_LEN_A,
                                               max_len_b=MAX_LEN_B, verbose=False)[0][0]["tokens"]
            else:
                hypothesis = self._encode_target(item)
            hypothesis = hypothesis.to(device)  # ends with </s>
            record: dict[str, Any] = {"input_index": item.index, "text": item.text,
                                      "target": self.hub.decode(hypothesis),
                                      "target_given": item.target is not None}
            if len(hypothesis) < 2:
                return None, {**record, "skipped": "the translation is empty"}
            # Decoder input: </s>, then the translation without its final </s>.
            target = torch.cat([torch.tensor([self.eos], device=device), hypothesis[:-1]])
            adapter = FairseqTranslationModel(self.hub, source_length=len(source))
            result, log = rationalize_translation(adapter, source, target, self.decode_source,
                                                  self.decode_target, **options)
            return result, {**record, **log}

        return run

