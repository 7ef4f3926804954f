"""Text in, rationales out: the front door for a model folder or a model already loaded.

```python
import sequential_rationales as sr
r = sr.load("path/to/model")                       # a Hugging Face causal LM folder
out = r.rationalize("The Supreme Court on", generate=8)
out.show()                                         # the viewer in a notebook, text elsewhere
```

A *text model* (`sequential_rationales_integrations.huggingface.text.CausalLM`, or the fairseq
plugin's `sequential_rationales_integrations.fairseq.text.FairseqTranslator`) tokenizes an
input, checks that it fits the model and turns it into a [`Job`][sequential_rationales.text.Job];
this module runs jobs and keeps what they return. Frameworks are imported by
[`load`][sequential_rationales.text.load], never by `import sequential_rationales`.
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
    optional given translation.

    Attributes:
        index: the input's position among the inputs of one call, from 0.
        text: the prompt of a language model, or the source sentence of a translation model.
        target: a given translation of `text` (translation models only); `None` lets the
            model translate the source itself.
    """

    index: int
    text: str
    target: str | None = None


@dataclass
class Job:
    """One input ready to run, built by a text model after its checks passed.

    Attributes:
        index: the input's position among the inputs of the call, from 0.
        text: the input's text.
        targets: the expected number of rationalized targets (for a progress bar), `None`
            when it is not known in advance.
        run: runs the rationalization and returns the typed result (`None` when the input
            is skipped) and the record to store (the seed's log plus `input_index` and
            `text`; a skipped input's record has `skipped`).
    """

    index: int
    text: str
    targets: int | None
    run: Callable[[], tuple[SequenceRationales | None, dict[str, Any]]]


def refuse_language_model_options(start_step: int | None, generate: int | None,
                                  chat: bool, system: str | None) -> None:
    """Refuse, for a translation model, the options only a language model has.

    Args:
        start_step: `--start-step`; must be `None`.
        generate: `--generate`; must be `None` or 0.
        chat: `--chat`; must be false.
        system: `--system`; must be `None`.

    Raises:
        InputError: one of them is given; the message says what a translation model takes.
    """
    if chat or system is not None:
        raise InputError("chat templates (--chat, --system) are for causal language models; a "
                         "translation model takes source sentences")
    if generate:
        raise InputError("generating (--generate) is for language models; a translation model "
                         "translates each source greedily when the input gives no target")
    if start_step is not None:
        raise InputError("a start step (--start-step) is for language models; a translation "
                         "model rationalizes every target token")


def as_inputs(texts: str | dict[str, str] | Iterable[str | dict[str, str]]) -> list[Input]:
    """Normalize what a caller passes as text input into a list of numbered inputs.

    Args:
        texts: a text, a record `{"text": ..., "target": ...}` (`"source"` may stand for
            `"text"`; `"target"` is optional), or an iterable of texts and records.

    Returns:
        One [`Input`][sequential_rationales.text.Input] per text, numbered in order from 0.

    Raises:
        TypeError: an item is neither a string nor a record with a string `text` (or
            `source`) and an optional string `target`.
        InputError: there is no input, or an input's text is empty or only whitespace.
    """
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
    """The rationales of a call's inputs, in input order.

    Returned by [`Rationalizer.rationalize`][sequential_rationales.text.Rationalizer.rationalize].
    `len()`, indexing and iteration give the records. In a notebook the object displays as the
    interactive viewer (skipped inputs left out); `str()` gives
    [`text`][sequential_rationales.text.Rationales.text].

    Args:
        records: one record per input (see `records` below).
        results: one typed result per input, `None` for a skipped input.
        describe: formats one typed result as text, with a `color` keyword (see
            [`Rationalizer.describe`][sequential_rationales.text.Rationalizer.describe]).

    Attributes:
        records (list[dict[str, Any]]): per input, the seed's log (as
            [`lm_log`][sequential_rationales.results.lm_log] or
            [`conditional_log`][sequential_rationales.results.conditional_log] builds it) plus
            `input_index` and `text`; a skipped input's record has `skipped`, the reason.
        results (list[SequenceRationales | None]): per input, the typed
            [`SequenceRationales`][sequential_rationales.results.SequenceRationales], `None`
            when the input was skipped.
    """

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
        """Every input and, per target, its rationale, as plain text.

        Args:
            color: style the text with ANSI escape codes, for a terminal.

        Returns:
            One block per input: a head line `[input i] text`, then the method, the tokens and
            one line per target (or the reason the input was skipped).
        """
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
        """Show the rationales: the interactive viewer in a Jupyter notebook, text elsewhere.

        Outside a notebook the text of [`text`][sequential_rationales.text.Rationales.text] is
        printed to standard output, coloured when standard output is a terminal.
        """
        if _in_notebook():
            from IPython.display import HTML, display

            display(HTML(self._repr_html_()))
        else:
            print(self.text(color=sys.stdout.isatty()))

    def to_json(self) -> str:
        """The records as JSON Lines text, as `rationalize --out` writes them.

        Returns:
            One JSON object per line, one line per input, each line ending in a newline.
        """
        return "".join(json.dumps(record) + "\n" for record in self.records)

    def save_html(self, path: str | os.PathLike) -> Path:
        """Write one self-contained HTML page showing every rationale (as `rationalize --html`).

        Skipped inputs are left out. The page needs no network access (see
        [`render_html`][sequential_rationales.html.render_html]).

        Args:
            path: the file to write (UTF-8); an existing file is replaced.

        Returns:
            `path` as a `Path`.
        """
        from .html import write_html

        write_html(self._shown(), path)
        return Path(path)


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


class Rationalizer:
    """A text model ready to rationalize text; build one with
    [`load`][sequential_rationales.text.load].

    Args:
        text_model: the framework's text model, which tokenizes inputs, checks them and builds
            jobs (e.g. `sequential_rationales_integrations.huggingface.text.CausalLM`).

    Attributes:
        text_model (Any): the text model given.
    """

    def __init__(self, text_model: Any) -> None:
        self.text_model = text_model

    @property
    def kind(self) -> str:
        """What the model is: `"language model"` or `"translation model"`."""
        return self.text_model.kind

    def jobs(self, inputs: list[Input], *, start_step: int | None = None,
             generate: int | None = None, options: dict[str, Any] | None = None,
             chat: bool = False, system: str | None = None) -> list[Job]:
        """Build one job per input, every input checked before any runs.

        Most callers want [`rationalize`][sequential_rationales.text.Rationalizer.rationalize],
        which builds the jobs and runs them.

        Args:
            inputs: the inputs, e.g. from
                [`as_inputs`][sequential_rationales.text.as_inputs].
            start_step: rationalize the positions after this one; `None` for the text
                model's default (see
                [`rationalize`][sequential_rationales.text.Rationalizer.rationalize]).
            generate: the number of tokens to generate and rationalize, `None` for none.
            options: the method (`"method"`) and the options for
                [`methods.rationalize`][sequential_rationales.methods.rationalize]; copied.
            chat: treat each text as the user turn of the tokenizer's chat template.
            system: a system turn before each user turn (with `chat` only).

        Returns:
            One [`Job`][sequential_rationales.text.Job] per input, in input order.

        Raises:
            InputError: an input does not fit the model or the options (e.g. too long, one
                token only, a `start_step` out of range, `chat` without a chat template).
        """
        return self.text_model.jobs(inputs, start_step, generate, dict(options or {}),
                                    chat=chat, system=system)

    def describe(self, result: SequenceRationales, color: bool = False) -> str:
        """Format a result as text: one line per target, its token and its rationale.

        Tokens are decoded with the text model's tokenizer (see
        [`format_rationales`][sequential_rationales.render.format_rationales]).

        Args:
            result: one input's typed result.
            color: style the text with ANSI escape codes, for a terminal.

        Returns:
            The method and its time, the tokens, then one line per target.
        """
        model = self.text_model
        decode_target = getattr(model, "decode_target", None) or model.decode
        return format_rationales(result, decode_target, getattr(model, "decode_source", None),
                                 color)

    def rationalize(self, texts: str | dict[str, str] | Iterable[str | dict[str, str]], *,
                    generate: int | None = None, method: str = "greedy",
                    start_step: int | None = None, chat: bool = False,
                    system: str | None = None, **options: Any) -> Rationales:
        """Rationalize every token of each text after `start_step`.

        A language model rationalizes the tokens of the text itself, or with `generate=N` the
        `N` tokens it continues the text with, greedily. With `chat=True` each text is the
        user turn of the tokenizer's chat template (after the `system` turn when given) and
        the answer the model generates (`generate=N` tokens at most) is rationalized. A
        translation model takes source texts, or records with `source` and `target`, and
        rationalizes the target (its own greedy translation when none is given). Every input
        is checked before any runs.

        Args:
            texts: a text, a record `{"text": ..., "target": ...}` (`"source"` may stand for
                `"text"`), or an iterable of them.
            generate: the number of tokens to generate greedily after each text and
                rationalize; required with `chat`.
            method: the method's registered name (see
                [`list_methods`][sequential_rationales.methods.list_methods]).
            start_step: rationalize the positions after this one. `None` (the default):
                every token after the first, or with `generate`, the generated tokens only.
                Not allowed with `chat`.
            chat: treat each text as the user turn of the tokenizer's chat template and
                rationalize the model's answer.
            system: a system turn before each user turn (with `chat` only).
            **options: passed on to
                [`methods.rationalize`][sequential_rationales.methods.rationalize]
                (`max_steps`, `max_tokens_per_batch`, `progress`, ...).

        Returns:
            The rationales of every input, in input order.

        Raises:
            InputError: there is no input, an input is empty or does not fit the model, or
                the options do not fit the model (see
                [`jobs`][sequential_rationales.text.Rationalizer.jobs]).
            TypeError: an input is neither a string nor a record with a string `text`.
        """
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
    """Load a model for rationalizing text.

    The framework (transformers, peft or fairseq) is imported here, only when needed.

    Args:
        model: one of

            - a Hugging Face causal LM folder, or an encoder-decoder translation folder
              (Marian, BART, T5, ...: sources in, their targets rationalized), or the Hub
              id of either (`"gpt2"`, `"Qwen/Qwen2.5-0.5B"`): its config, safetensors
              weights and tokenizer are fetched into the Hugging Face cache once, and read
              from there afterwards;
            - a PEFT adapter folder: its base model is the one its `adapter_config.json`
              names, or `base_model`; the adapter is merged into the weights;
            - a loaded Hugging Face model, with its `tokenizer` (a PEFT model too, left as
              it is: its adapters stay active);
            - a fairseq translation checkpoint of the plugin (a `.pt` file or a folder of
              them), with `data`.
        tokenizer: a tokenizer folder or a loaded tokenizer. Required with a loaded model;
            for a folder, `None` takes the tokenizer saved with the model (or, for an
            adapter saved without one, its base model's).
        device: `"cpu"`, `"cuda"`, `"cuda:1"`, ... `None`: CUDA when available. A loaded
            model stays where it is.
        dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None`: the checkpoint's.
        data: a fairseq checkpoint's binarized data folder (fairseq only).
        base_model: the base model of a PEFT adapter folder, instead of the one its
            configuration names.
        device_map: `"auto"`, `"balanced"` or a dict: accelerate spreads a Hugging Face
            model over the devices it names (a model you loaded with `device_map` yourself
            works as well).

    Returns:
        A [`Rationalizer`][sequential_rationales.text.Rationalizer] for the model.

    Raises:
        InputError: the folder does not exist or is not a model, the options do not fit the
            kind of model (e.g. `data` for a Hugging Face model), or a loaded model comes
            without its tokenizer.
        TypeError: `model` is neither a path nor a loaded Hugging Face model.
    """
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
            if getattr(model.config, "is_encoder_decoder", False):  # Marian, BART, T5, ...
                from sequential_rationales_integrations.huggingface.seq2seq_text import (
                    Seq2SeqTranslator,
                )
                return Rationalizer(Seq2SeqTranslator(model.eval(), tokenizer))
            return Rationalizer(CausalLM(model.eval(), tokenizer))
        raise TypeError(f"sr.load takes a model folder or a loaded Hugging Face model, got "
                        f"{type(model).__name__}")
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"sr.load takes a model folder or a loaded model, got "
                        f"{type(model).__name__}")
    from sequential_rationales_integrations.models import load_text_model

    return Rationalizer(load_text_model(model, tokenizer, device, dtype, data, base_model,
                                        device_map))
