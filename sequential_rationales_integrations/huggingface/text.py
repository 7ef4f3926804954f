"""The Hugging Face causal LM as a text model of :mod:`sequential_rationales.text`: a model
and its tokenizer, every token after the start step of a text (or of its greedy continuation)
a target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import SequenceRationales, rationalize_sequence
from sequential_rationales.text import Input, Job
from sequential_rationales.validation import InputError

from ..cli import first_line
from .locations import check_tokenizer_location, from_pretrained
from .lora import load_with_adapter

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_tokenizer(path: str | Path) -> Any:
    """``AutoTokenizer`` from a local folder that has tokenizer files."""
    from transformers import AutoTokenizer

    try:
        check_tokenizer_location(str(path), "--tokenizer")
        if not Path(path).is_dir():
            raise InputError(f"--tokenizer {path} is not a directory")
        return AutoTokenizer.from_pretrained(path)
    except FileNotFoundError as e:  # missing, or no tokenizer files: the check's own sentence
        raise InputError(str(e)) from None
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"could not load a tokenizer from {path}: {first_line(e)}") from None


def check_known_tokens(tokenizer: Any, item: Input, ids: list[int], what: str = "token"
                       ) -> None:
    """Stop when the tokenizer knows none of an input's words: the model would explain a row
    of unknown-token markers (a tokenizer of another vocabulary); `what` names the tokens."""
    unk = getattr(tokenizer, "unk_token_id", None)
    special = set(getattr(tokenizer, "all_special_ids", ())) - {unk}
    words = [i for i in ids if i not in special]
    if unk is not None and words and all(i == unk for i in words):
        raise InputError(f"input {item.index}: every {what} is unknown to the tokenizer "
                         f"({tokenizer.unk_token}); is --tokenizer the model's own?")


def load_model_and_tokenizer(auto_class: Any, what: str, path: Path, tokenizer: Path | Any,
                             device: str, dtype: str | None, base: str | None = None,
                             device_map: str | dict | None = None) -> tuple[Any, Any]:
    """A model folder (or an adapter folder on its base) loaded with `auto_class`, in eval mode
    on `device` or spread by accelerate's `device_map`, and its tokenizer (a folder is loaded;
    a loaded tokenizer is kept); `what` names the kind of model in the error message."""
    if isinstance(tokenizer, Path):
        tokenizer = load_tokenizer(tokenizer)
    options: dict[str, Any] = {"dtype": DTYPES.get(dtype or "auto", "auto")}
    if device_map is not None:
        options["device_map"] = device_map
    try:
        model = (from_pretrained(auto_class, path, **options) if base is None else
                 load_with_adapter(auto_class, path, base, **options))
    except InputError:
        raise
    except (OSError, ValueError) as e:
        raise InputError(f"could not load {what} from {base or path}: {first_line(e)}") from None
    return (model if device_map is not None else model.to(device)).eval(), tokenizer


class CausalLM:
    """A Hugging Face causal LM and its tokenizer: every token after ``--start-step`` of a
    text (or of its greedy continuation) is a target."""

    kind = "language model"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        from sequential_rationales.adapters.huggingface import HuggingFaceCausalLM

        self.model, self.tokenizer = model, tokenizer
        try:
            self.adapter = HuggingFaceCausalLM(model)
        except TypeError as error:
            raise InputError(str(error)) from None
        size = len(tokenizer)
        if size > self.adapter.vocab_size:
            raise InputError(f"the tokenizer has {size:,} tokens but the model's vocabulary only "
                             f"{self.adapter.vocab_size:,}: they do not belong together; pass the "
                             "model's own tokenizer with --tokenizer")

    def adapter_for(self, problem: Any) -> Any:
        """The adapter of one rationalization problem (the same for every problem)."""
        return self.adapter

    @classmethod
    def load(cls, path: Path, tokenizer: Path | Any, device: str, dtype: str | None,
             base: str | None = None, device_map: str | dict | None = None) -> CausalLM:
        """The model folder ``path`` (an adapter folder on the model ``base``) with
        ``tokenizer`` (a folder or a loaded tokenizer), on ``device``, or spread by
        accelerate's ``device_map`` (``auto``, ...) over the devices it names."""
        from transformers import AutoModelForCausalLM

        return cls(*load_model_and_tokenizer(AutoModelForCausalLM, "a causal LM", path,
                                             tokenizer, device, dtype, base, device_map))

    def decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def jobs(self, inputs: list[Input], start_step: int | None, generate: int | None,
             options: dict[str, Any], chat: bool = False, system: str | None = None
             ) -> list[Job]:
        """Tokenize every input and check it fits: the errors come before any work. With
        ``chat`` each input is the user turn (after ``system``) of the tokenizer's chat
        template, and only the answer the model generates is rationalized."""
        if chat:
            self._check_chat(generate, start_step)
        elif system is not None:
            raise InputError("a system turn (--system) belongs to a chat (--chat)")
        limit = self.adapter.max_positions
        jobs = []
        for item in inputs:
            if item.target is not None:
                raise InputError(f"input {item.index} has a 'target': targets are for "
                                 "translation models, a language model rationalizes its text")
            turns = None
            if chat:
                ids, turns = self._chat_prompt(item.text, system)
            else:
                ids = [int(i) for i in self.tokenizer(item.text)["input_ids"]]
            self._check_known(item, ids)
            length = len(ids) + (generate or 0)
            if limit is not None and length > limit:
                raise InputError(f"input {item.index} needs {length} positions, more than the "
                                 f"model's {limit}")
            start = (len(ids) - 1 if generate else 0) if start_step is None else start_step
            if length < 2:
                raise InputError(f"input {item.index} is one token: nothing to rationalize (the "
                                 "first token has no context); add text or use --generate")
            if not 0 <= start <= length - 2:
                raise InputError(f"input {item.index} has {length} tokens: --start-step must "
                                 f"be in [0, {length - 2}] (got {start}); nothing to "
                                 "rationalize otherwise")
            jobs.append(Job(item.index, item.text, length - 1 - start,
                            self._runner(item, ids, start, generate, options, turns)))
        return jobs

    def _check_chat(self, generate: int | None, start_step: int | None) -> None:
        if not getattr(self.tokenizer, "chat_template", None):
            raise InputError(f"the tokenizer ({type(self.tokenizer).__name__}) has no chat "
                             "template: --chat needs a chat model's tokenizer (or set "
                             "tokenizer.chat_template)")
        if not generate:
            raise InputError("--chat rationalizes the model's answer: pass --generate N, the "
                             "most answer tokens to generate")
        if start_step is not None:
            raise InputError("--start-step does not apply to --chat: the answer's tokens are "
                             "the targets")

    def _template(self, messages: list[dict[str, str]], answer_follows: bool) -> list[int]:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=answer_follows, tokenize=True, return_dict=True)
        return [int(i) for i in encoded["input_ids"]]

    def _chat_prompt(self, text: str, system: str | None
                     ) -> tuple[list[int], list[tuple[dict[str, str], int]]]:
        """The templated prompt and, per turn, its message and where its tokens start (the
        answer's turn starts at the generation prompt). A template whose shorter
        conversations are not prefixes of the longer ones gets no turn boundaries (-1)."""
        messages = ([{"role": "system", "content": system}] if system is not None else []) + [
            {"role": "user", "content": text}]
        try:
            ids = self._template(messages, answer_follows=True)
        except Exception as error:  # jinja raises its own errors for bad conversations
            raise InputError(f"the chat template refused the conversation: {error}") from None
        starts, start = [], 0
        for k in range(len(messages)):
            starts.append(start)
            try:
                part = self._template(messages[: k + 1], answer_follows=False)
            except Exception:
                part = None
            start = len(part) if part is not None and ids[: len(part)] == part else -1
            if start < 0:
                return ids, [(m, -1) for m in messages] + [({"role": "assistant"}, -1)]
        return ids, [*zip(messages, starts, strict=True), ({"role": "assistant"}, start)]

    def _check_known(self, item: Input, ids: list[int]) -> None:
        check_known_tokens(self.tokenizer, item, ids)

    def _runner(self, item: Input, ids: list[int], start: int, generate: int | None,
                options: dict[str, Any], turns: list[tuple[dict[str, str], int]] | None
                ) -> Callable[[], tuple[SequenceRationales, dict]]:
        def run() -> tuple[SequenceRationales, dict[str, Any]]:
            full = self.continue_greedily(ids, generate) if generate else ids
            result, log = rationalize_sequence(self.adapter, torch.tensor(full), self.decode,
                                               start_step=start, **options)
            record = {"input_index": item.index, "text": item.text, **log}
            if generate:
                record["prompt_length"] = len(ids)
                record["generated_text"] = self.tokenizer.decode(full[len(ids):],
                                                                 skip_special_tokens=bool(turns))
            if turns:
                answer = {"role": "assistant", "content": record["generated_text"]}
                record["chat"] = [message for message, _ in turns[:-1]] + [answer]
                record["chat_starts"] = [begin for _, begin in turns]
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
