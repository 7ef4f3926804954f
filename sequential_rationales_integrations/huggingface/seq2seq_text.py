"""Hugging Face encoder-decoder translation models (Marian, BART, T5, ...) as a text model of
:mod:`sequential_rationales.text`: every target token is a target, its rationale drawn from the
source and the earlier target tokens, as for the fairseq plugin's translation checkpoints."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import SequenceRationales, rationalize_translation
from sequential_rationales.text import Input, Job, refuse_language_model_options
from sequential_rationales.validation import InputError

from .text import check_known_tokens, load_model_and_tokenizer

# Greedy translations stop at </s> or after 2 * source length (with its </s>) + 10 tokens, as
# the fairseq plugin's do (an untrained model may never emit </s>).
MAX_LEN_A, MAX_LEN_B = 2, 10
SEQ2SEQ_TASK = "SEQ_2_SEQ_LM"  # a PEFT adapter's task type for encoder-decoders


def is_encoder_decoder(path: Path, base: str | None = None) -> bool:
    """Whether a Hugging Face model folder holds an encoder-decoder (its ``config.json`` says
    ``is_encoder_decoder``).

    Args:
        path: the model folder, or a PEFT adapter folder.
        base: the adapter's base model (a folder or a hub id), `None` for a plain model folder.

    Returns:
        `True` for an encoder-decoder: the config of the model (of the base, for an adapter)
        says so, or, for a base without a local config, the adapter's task type is
        `SEQ_2_SEQ_LM`. `False` otherwise, also for a config that cannot be read (the loader
        then reports it).
    """
    folder = path if base is None else Path(base).expanduser()
    config = _json(folder / "config.json")
    if config is not None:
        return config.get("is_encoder_decoder") is True
    if base is not None:
        adapter = _json(path / "adapter_config.json")
        return adapter is not None and adapter.get("task_type") == SEQ2SEQ_TASK
    return False


def _json(file: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class Seq2SeqTranslator:
    """A Hugging Face encoder-decoder and its tokenizer: every target token is a target, its
    rationale drawn from the source and the earlier target tokens.

    The source is the tokenizer's encoding of the input's text, which must end with `</s>`
    (Marian, BART and T5 tokenizers end every text so; one that puts a language code after it
    is refused). The target is the input's given `target`, encoded as the tokenizer encodes
    labels (`text_target`), or else the model's greedy translation (`generate` with
    `do_sample=False`, `num_beams=1` and the rest of the model's generation config), of at
    most `MAX_LEN_A * source length + MAX_LEN_B` tokens. The decoder's input is its start token
    followed by the translation without the final `</s>`, so, as for the fairseq plugin, the
    translation's tokens are the targets and its final `</s>` is not; an empty translation is
    skipped.

    Args:
        model: an encoder-decoder with a language-model head (`AutoModelForSeq2SeqLM`), in
            eval mode.
        tokenizer: its tokenizer.

    Raises:
        InputError: `model` is not an encoder-decoder the adapter can rationalize exactly, or
            the tokenizer has more tokens than the model's vocabulary.

    Attributes:
        kind (str): `"translation model"`.
        model (Any): the model.
        tokenizer (Any): the tokenizer.
        vocab_size (int): the model's output vocabulary size.
        max_positions (int | None): the most positions of a source or a target (the config's
            `max_position_embeddings`), `None` for models with relative positions (T5).
        device (torch.device): where inputs go.
    """

    kind = "translation model"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

        self.model, self.tokenizer = model, tokenizer
        try:
            probe = HuggingFaceSeq2Seq(model, source_length=2)  # checks the model
        except TypeError as error:
            raise InputError(str(error)) from None
        self.vocab_size, self.max_positions = probe.vocab_size, probe.max_positions
        self.device = probe.device
        self.eos, self.start = probe.source_eos, probe.target_bos
        self.source_pad, self.target_pad = probe.source_pad, probe.pad
        size = len(tokenizer)
        if size > self.vocab_size:
            raise InputError(f"the tokenizer has {size:,} tokens but the model's vocabulary only "
                             f"{self.vocab_size:,}: they do not belong together; pass the "
                             "model's own tokenizer with --tokenizer")

    @classmethod
    def load(cls, path: Path, tokenizer: Path | Any, device: str, dtype: str | None,
             base: str | None = None, device_map: str | dict | None = None
             ) -> Seq2SeqTranslator:
        """Load a model folder (or an adapter folder on its base model) with its tokenizer.

        Args:
            path: the model folder, or a PEFT adapter folder (merged into its base's weights).
            tokenizer: a tokenizer folder or a loaded tokenizer.
            device: where the model goes (`"cpu"`, `"cuda"`, ...), unless `device_map`.
            dtype: `"float32"`, `"bfloat16"` or `"float16"`; `None`: the checkpoint's.
            base: the adapter's base model, `None` for a plain model folder.
            device_map: accelerate's device map (`"auto"`, ...) spreading the model over the
                devices it names, instead of `device`.

        Returns:
            The translator, its model in eval mode.

        Raises:
            InputError: the tokenizer or the model cannot be loaded, or they do not fit (see
                the class).
        """
        from transformers import AutoModelForSeq2SeqLM

        return cls(*load_model_and_tokenizer(
            AutoModelForSeq2SeqLM, "a translation model (AutoModelForSeq2SeqLM)", path,
            tokenizer, device, dtype, base, device_map))

    def decode(self, token_id: int) -> str:
        """The text of one token id (source and target alike, as the seed's functions).

        Args:
            token_id: a token id.

        Returns:
            The tokenizer's decoding of the id alone.
        """
        return self.tokenizer.decode([token_id])

    decode_source = decode_target = decode

    def adapter_for(self, problem: Any) -> Any:
        """The adapter of one rationalization problem (it depends on the source length).

        Args:
            problem: a translation's `RationalizationProblem`; its source lacks the final
                `</s>`.

        Returns:
            A `HuggingFaceSeq2Seq` for the source plus its final `</s>`.
        """
        from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

        return HuggingFaceSeq2Seq(self.model, source_length=problem.num_source + 1)

    def jobs(self, inputs: list[Input], start_step: int | None, generate: int | None,
             options: dict[str, Any], chat: bool = False, system: str | None = None
             ) -> list[Job]:
        """Encode every input and check it fits: the errors come before any work.

        Args:
            inputs: source texts, each with an optional given target.
            start_step: must be `None` (a translation model rationalizes every target token).
            generate: must be `None` or 0 (the translation is greedy when no target is given).
            options: the method and the options of the core.
            chat: must be `False`.
            system: must be `None`.

        Returns:
            One job per input, in input order.

        Raises:
            InputError: a language model's option, or an input that does not fit the model
                (its source does not end with `</s>`, is too long or holds padding, or its
                given target has pieces the tokenizer reads as unknown).
        """
        refuse_language_model_options(start_step, generate, chat, system)
        jobs = []
        for item in inputs:
            source = self._encode_source(item)
            target = None if item.target is None else self._encode_target(item)
            jobs.append(Job(item.index, item.text, None,
                            self._runner(item, source, target, options)))
        return jobs

    def _encode_source(self, item: Input) -> list[int]:
        """The source ids, ending with ``</s>``."""
        ids = [int(i) for i in self.tokenizer(item.text)["input_ids"]]
        if not ids or ids[-1] != self.eos:
            raise InputError(f"input {item.index}: the tokenizer does not end the source with "
                             f"</s> (id {self.eos}), which the model's rationales need as the "
                             "source's always-visible end")
        if len(ids) < 2:
            raise InputError(f"input {item.index}: the source holds no token before </s>")
        if self.source_pad in ids:
            raise InputError(f"input {item.index}: the source holds the padding token "
                             f"{self.tokenizer.decode([self.source_pad])!r}")
        if self.max_positions is not None and len(ids) > self.max_positions:
            raise InputError(f"input {item.index}: the source has {len(ids)} tokens, more than "
                             f"the model's {self.max_positions} positions")
        check_known_tokens(self.tokenizer, item, ids, "source token")
        return ids

    def _encode_target(self, item: Input) -> list[int]:
        """The given target's ids as the tokenizer encodes labels, without a final ``</s>``;
        a piece the tokenizer lacks would silently become ``<unk>``, so it is an error."""
        assert item.target is not None
        ids = [int(i) for i in self.tokenizer(text_target=item.target)["input_ids"]]
        unknown = self._unknown_pieces(item.target, ids)
        if unknown:
            raise InputError(f"input {item.index}: the target has {len(unknown)} piece(s) "
                             "outside the tokenizer's vocabulary "
                             f"({', '.join(map(repr, unknown[:5]))}), which would be read as "
                             f"{self.tokenizer.unk_token}; fix the target, or leave it out to "
                             "rationalize the model's own translation")
        if ids and ids[-1] == self.eos:
            ids = ids[:-1]
        if self.target_pad in ids:
            raise InputError(f"input {item.index}: the target holds the padding token "
                             f"{self.tokenizer.decode([self.target_pad])!r}")
        if self.max_positions is not None and len(ids) + 1 > self.max_positions:
            raise InputError(f"input {item.index}: the target needs {len(ids) + 1} positions "
                             f"(its decoder start token included), more than the model's "
                             f"{self.max_positions}")
        return ids

    def _unknown_pieces(self, text: str, ids: list[int]) -> list[str]:
        """The pieces of ``text`` that became the unknown token (the unknown token written
        out as such excepted): their spans in a fast tokenizer, else the words that alone
        encode to it."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None or unk not in ids:
            return []
        literal = self.tokenizer.unk_token
        if getattr(self.tokenizer, "is_fast", False):
            spans = self.tokenizer(text_target=text, return_offsets_mapping=True)
            pieces = [text[start:end] for i, (start, end)
                      in zip(spans["input_ids"], spans["offset_mapping"], strict=True)
                      if i == unk and end > start]
        else:
            pieces = [word for word in text.split() if unk in self.tokenizer(
                text_target=word, add_special_tokens=False)["input_ids"]]
        return [piece for piece in pieces if piece.strip() != literal]

    def translate(self, source: list[int]) -> list[int]:
        """The model's greedy translation of a source.

        Args:
            source: the source ids, ending with `</s>`.

        Returns:
            The translation's ids, without the decoder's start token and without the final
            `</s>` (and anything after it): at most `MAX_LEN_A * len(source) + MAX_LEN_B`
            tokens, and fewer than the model's positions.
        """
        new_tokens = MAX_LEN_A * len(source) + MAX_LEN_B
        if self.max_positions is not None:
            new_tokens = min(new_tokens, self.max_positions - 1)
        ids = torch.tensor([source], device=self.device)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                      do_sample=False, num_beams=1, max_new_tokens=new_tokens,
                                      pad_token_id=self.model.config.pad_token_id)
        tokens = [int(i) for i in out[0][1:]]  # after the decoder's start token
        return tokens[:tokens.index(self.eos)] if self.eos in tokens else tokens

    def _runner(self, item: Input, source: list[int], given: list[int] | None,
                options: dict[str, Any]
                ) -> Callable[[], tuple[SequenceRationales | None, dict[str, Any]]]:
        from sequential_rationales.adapters.huggingface_seq2seq import HuggingFaceSeq2Seq

        def run() -> tuple[SequenceRationales | None, dict[str, Any]]:
            translation = self.translate(source) if given is None else given
            record: dict[str, Any] = {
                "input_index": item.index, "text": item.text,
                "target": self.tokenizer.decode(translation, skip_special_tokens=True),
                "target_given": given is not None}
            if not translation:
                return None, {**record, "skipped": "the translation is empty"}
            if self.target_pad in translation:
                return None, {**record, "skipped": "the translation holds the padding token"}
            target = torch.tensor([self.start, *translation], device=self.device)
            adapter = HuggingFaceSeq2Seq(self.model, source_length=len(source))
            result, log = rationalize_translation(
                adapter, torch.tensor(source, device=self.device), target, self.decode,
                self.decode, **options)
            return result, {**record, **log}

        return run
