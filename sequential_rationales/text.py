"""Text in, rationales out: the front door for a model folder or a model already loaded.

    import sequential_rationales as sr
    r = sr.load("path/to/model")                       # a Hugging Face causal LM folder
    out = r.rationalize("The Supreme Court on", generate=8)
    out.show()                                         # the viewer in a notebook, text elsewhere

A *text model* (:class:`~sequential_rationales_integrations.huggingface.text.CausalLM`, or the
fairseq plugin's :class:`~sequential_rationales_integrations.fairseq.text.FairseqTranslator`)
tokenizes an input, checks that it fits the model and turns it into a :class:`Job`; this module
runs jobs and keeps what they return. Frameworks are imported by :func:`load`, never by
``import sequential_rationales``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from .render import format_rationales
from .results import SequenceRationales
from .validation import InputError


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


def as_inputs(texts: str | dict[str, str] | Iterable[str | dict[str, str]]) -> list[Input]:
    """A text, a ``{"text"|"source": ..., "target": ...}`` record, or a list of them."""
    items = [texts] if isinstance(texts, (str, dict)) else list(texts)
    inputs = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            inputs.append(Input(index, item))
            continue
        text = item.get("text", item.get("source")) if isinstance(item, dict) else None
        target = item.get("target") if isinstance(item, dict) else None
        if not isinstance(text, str) or not (target is None or isinstance(target, str)):
            raise TypeError(f"input {index} must be a string or a record with a string 'text' "
                            f"(or 'source') and an optional string 'target', got {item!r}")
        inputs.append(Input(index, text, target))
    if not inputs:
        raise InputError("no input: pass a text or a list of texts")
    for item in inputs:
        if not item.text.strip():
            raise InputError(f"input {item.index} is empty")
    return inputs


class Rationales:
    """The rationales of a call's inputs, in input order: ``records`` (the seed's log of each
    input plus ``input_index`` and ``text``; a skipped input has ``skipped``) and ``results``
    (the typed :class:`~sequential_rationales.results.SequenceRationales`, ``None`` when
    skipped). ``len``, indexing and iteration give the records."""

    def __init__(self, records: list[dict[str, Any]],
                 results: list[SequenceRationales | None],
                 describe: Callable[..., str]) -> None:
        self.records, self.results = records, results
        self._describe = describe

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.records)

    def __str__(self) -> str:
        return self.text()

    def text(self, color: bool = False) -> str:
        """Every input and, per target, its rationale (``color``: ANSI styles)."""
        parts = []
        for record, result in zip(self.records, self.results, strict=True):
            head = f"[input {record['input_index']}] {record['text']}"
            body = (f"skipped: {record['skipped']}" if result is None
                    else self._describe(result, color=color))
            parts.append(f"{head}\n{body}")
        return "\n\n".join(parts)

    def __repr__(self) -> str:
        targets = sum(len(r.rationales) for r in self.results if r is not None)
        return f"<Rationales: {len(self)} input(s), {targets} target(s)>"

    def _repr_html_(self) -> str:
        from .html import render_fragment

        return render_fragment(self._shown())

    def _shown(self) -> list[dict[str, Any]]:
        return [record for record in self.records if "skipped" not in record]

    def show(self) -> None:
        """The interactive viewer in a notebook; the rationales as text elsewhere (coloured on a
        terminal)."""
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self._repr_html_()))
        else:
            print(self.text(color=sys.stdout.isatty()))

    def to_json(self) -> str:
        """The records as JSON lines (one per input), as ``rationalize --out`` writes them."""
        return "".join(json.dumps(record) + "\n" for record in self.records)

    def save_html(self, path: str | os.PathLike) -> Path:
        """One self-contained page showing every rationale (as ``rationalize --html``)."""
        from .html import write_html

        write_html(self._shown(), path)
        return Path(path)


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Rationalizer:
    """A text model ready to rationalize text (see :func:`load`)."""

    def __init__(self, text_model: Any) -> None:
        self.text_model = text_model

    @property
    def kind(self) -> str:
        """``language model`` or ``translation model``."""
        return self.text_model.kind

    def jobs(self, inputs: list[Input], *, start_step: int | None = None,
             generate: int | None = None, options: dict[str, Any] | None = None,
             chat: bool = False, system: str | None = None) -> list[Job]:
        """One job per input, every input checked before any runs."""
        return self.text_model.jobs(inputs, start_step, generate, dict(options or {}),
                                    chat=chat, system=system)

    def describe(self, result: SequenceRationales, color: bool = False) -> str:
        """One line per target: the predicted token and its rationale."""
        model = self.text_model
        decode_target = getattr(model, "decode_target", None) or model.decode
        return format_rationales(result, decode_target, getattr(model, "decode_source", None),
                                 color)

    def rationalize(self, texts: str | dict[str, str] | Iterable[str | dict[str, str]], *,
                    generate: int | None = None, method: str = "greedy",
                    start_step: int | None = None, chat: bool = False,
                    system: str | None = None, **options: Any) -> Rationales:
        """Rationalize every token of each text after ``start_step`` (default: the first
        token's successor; with ``generate=N``, the N tokens the model continues the text
        with, greedily). ``chat=True``: each text is the user turn of the tokenizer's chat
        template (after the ``system`` turn when given) and the answer the model generates
        (``generate=N`` tokens at most) is rationalized. A translation model takes source
        texts, or records with ``source`` and ``target``, and rationalizes the target (its own
        greedy translation when none is given). ``options`` go to
        :func:`~sequential_rationales.methods.rationalize` (``max_steps``,
        ``max_tokens_per_batch``, ``progress``, ...)."""
        jobs = self.jobs(as_inputs(texts), start_step=start_step, generate=generate,
                         options={"method": method, **options}, chat=chat, system=system)
        results, records = [], []
        for job in jobs:
            result, record = job.run()
            results.append(result)
            records.append(record)
        return Rationales(records, results, self.describe)


def load(model: str | os.PathLike | nn.Module | Any, tokenizer: Any = None, *,
         device: str | None = None, dtype: str | None = None,
         data: str | os.PathLike | None = None,
         base_model: str | os.PathLike | None = None,
         device_map: str | dict | None = None) -> Rationalizer:
    """A :class:`Rationalizer` for ``model``: a Hugging Face causal LM folder (with its
    tokenizer, or ``tokenizer`` a folder or a loaded tokenizer), a PEFT adapter folder (its
    base model the one its ``adapter_config.json`` names, or ``base_model``; the adapter is
    merged into the weights), a loaded Hugging Face model with its ``tokenizer`` (a PEFT model
    too, left as it is), or a fairseq translation checkpoint of the plugin (a ``.pt`` file or
    a folder of them) with ``data``, its binarized data folder. ``device``: ``cpu``, ``cuda``,
    ``cuda:1`` ... (default: CUDA when available; a loaded model stays where it is), or
    ``device_map`` (``auto``, ``balanced``, a dict): accelerate spreads a Hugging Face model over
    the devices it names (a model loaded with ``device_map`` yourself works as well);
    ``dtype``: ``float32``, ``bfloat16``, ``float16`` (default: the checkpoint's)."""
    if isinstance(model, nn.Module):
        if hasattr(model, "config"):
            from sequential_rationales_integrations.huggingface.text import CausalLM

            if tokenizer is None:
                raise InputError("a loaded Hugging Face model needs its tokenizer: "
                                 "sr.load(model, tokenizer)")
            if isinstance(tokenizer, (str, os.PathLike)):
                from sequential_rationales_integrations.huggingface.text import load_tokenizer

                tokenizer = load_tokenizer(Path(tokenizer))
            if callable(getattr(model, "get_base_model", None)):  # a PEFT model
                model = model.get_base_model()  # the transformers model, its adapters active
            return Rationalizer(CausalLM(model.eval(), tokenizer))
        raise TypeError(f"sr.load takes a model folder or a loaded Hugging Face model, got "
                        f"{type(model).__name__}")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"sr.load takes a model folder or a loaded model, got "
                        f"{type(model).__name__}")
    from sequential_rationales_integrations.models import load_text_model

    return Rationalizer(load_text_model(model, tokenizer, device, dtype, data, base_model,
                                        device_map))
