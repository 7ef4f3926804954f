"""The fairseq plugin's translation checkpoints as a text model of
:mod:`sequential_rationales.text`: every target token is a target, its rationale drawn from the
source and the earlier target tokens."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sequential_rationales import SequenceRationales, rationalize_translation
from sequential_rationales.text import Input, Job, refuse_language_model_options
from sequential_rationales.validation import InputError

# Greedy translations stop at </s> or after 2 * source length (with its </s>) + 10 tokens
# (an untrained model may never emit </s>; fairseq's default of 200 would make it costly).
MAX_LEN_A, MAX_LEN_B = 2, 10
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


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
        from sequential_rationales_integrations.fairseq import load_hub_model

        if not data.is_dir():
            raise InputError(f"--data {data} is not a directory")
        logging.getLogger().setLevel(logging.WARNING)  # fairseq's import set it to DEBUG
        try:
            hub = load_hub_model(checkpoint.parent, checkpoint.name, str(data.resolve()))
        except (FileNotFoundError, ValueError) as e:
            raise InputError(str(e).splitlines()[0]) from None
        if not hasattr(hub, "generate") or not hasattr(unwrap_model(hub), "encoder"):
            raise InputError(f"{checkpoint} is not a translation model (fairseq language "
                             "models are not supported by this command; see "
                             "fairseq/rationalization.py)")
        hub = hub.to(device)
        if dtype in ("bfloat16", "float16"):
            hub = hub.to(DTYPES[dtype])
        return cls(hub.eval())

    def adapter_for(self, problem: Any) -> Any:
        """The adapter of one rationalization problem (fairseq's depends on the source length:
        the rationalized source plus its final ``</s>``)."""
        from sequential_rationales.adapters.fairseq import FairseqTranslationModel

        return FairseqTranslationModel(self.hub, source_length=problem.num_source + 1)

    def jobs(self, inputs: list[Input], start_step: int | None, generate: int | None,
             options: dict[str, Any], chat: bool = False, system: str | None = None
             ) -> list[Job]:
        refuse_language_model_options(start_step, generate, chat, system)
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
            raise InputError(f"input {item.index}: the target has {len(unknown)} piece(s) "
                             "outside the model's target dictionary "
                             f"({', '.join(map(repr, unknown[:5]))}), which would be read as "
                             "<unk>; fix the target, or leave it out to "
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
