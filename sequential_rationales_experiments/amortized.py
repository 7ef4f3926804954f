"""The pieces the learned rationale extractor's experiments share: compatible GPT-2 models of
synthetic tasks (Majority Class after filler words, copying), greedy teachers, cached
extractors, and forward tokens counted where the model's body runs.

The models here are trained on the loss of the tokens that are rationalized only (with word
dropout): after 64 filler tokens, a GPT-2 trained on every token's loss
(``huggingface/run_clm.py``) left the Majority Class label at chance for 10,000 steps, while
the label's loss alone reaches its optimum under word dropout within 2,000.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from sequential_rationales import RationalizationProblem, rationalize
from sequential_rationales.adapter import ModelAdapter
from sequential_rationales.extractor import (
    ExtractorConfig,
    Objectives,
    RationaleExtractor,
    TeacherSequence,
    train_extractor,
)
from sequential_rationales.metrics import mean

BITS = 17
FILLER_WORDS = ("a", "b", "c", "d")
TEACHER_FILE = "teacher.json"


# -- Majority Class after filler tokens --------------------------------------------------------
def label_sentences(n: int, filler: tuple[int, int], generator: torch.Generator) -> list[str]:
    """Majority Class sentences (``BITS`` bits, ``=``, the label), each after a number of
    random filler words drawn from ``filler`` (inclusive range)."""
    from sequential_rationales_experiments.majority_class import majority_class_sentences

    lines = majority_class_sentences(n, BITS, generator)
    lengths = torch.randint(filler[0], filler[1] + 1, (n,), generator=generator).tolist()
    return [" ".join([*(FILLER_WORDS[int(w)] for w in torch.randint(
        len(FILLER_WORDS), (k,), generator=generator)), line])
        for k, line in zip(lengths, lines, strict=True)]


def label_problem(tokenizer: Any, sentence: str) -> RationalizationProblem:
    """The label (the last word) is the target."""
    ids = torch.tensor(tokenizer(sentence)["input_ids"])
    return RationalizationProblem(ids, targets=[len(sentence.split()) - 1])


def train_label_model(folder: Path, filler: tuple[int, int], steps: int, seed: int,
                      log: Callable[[str], None] = print) -> tuple[Any, Any]:
    """A compatible GPT-2 for Majority Class after ``filler`` filler words (reused when
    ``folder/model`` holds one), trained on the label's loss, one filler length per batch."""
    def batch(tokenizer: Any, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        length = int(torch.randint(filler[0], filler[1] + 1, (), generator=generator))
        lines = label_sentences(64, (length, length), generator)
        return torch.tensor([tokenizer(line)["input_ids"] for line in lines]), length + BITS + 1

    return train_compatible_gpt2(folder, ["0", "1", "=", *FILLER_WORDS],
                                 filler[1] + BITS + 2, batch, steps, seed, log)


COPY_WORDS = tuple(f"t{i}" for i in range(16))


def copy_sentences(n: int, half: int, generator: torch.Generator) -> list[str]:
    """``half`` random words, then the same words again."""
    words = torch.randint(len(COPY_WORDS), (n, half), generator=generator).tolist()
    return [" ".join(COPY_WORDS[w] for w in row + row) for row in words]


def copy_problem(tokenizer: Any, sentence: str) -> RationalizationProblem:
    """Every word of the repetition is a target."""
    ids = torch.tensor(tokenizer(sentence)["input_ids"])
    return RationalizationProblem(ids, targets=range(len(ids) // 2, len(ids)))


def train_copy_model(folder: Path, half: int, steps: int, seed: int,
                     log: Callable[[str], None] = print) -> tuple[Any, Any]:
    """A compatible GPT-2 that continues ``half`` random words by their repetition (reused
    when ``folder/model`` holds one), trained on the repetition's loss."""
    def batch(tokenizer: Any, generator: torch.Generator) -> tuple[torch.Tensor, int]:
        lines = copy_sentences(32, half, generator)
        return torch.tensor([tokenizer(line)["input_ids"] for line in lines]), half

    return train_compatible_gpt2(folder, list(COPY_WORDS), 2 * half, batch, steps, seed, log)


def train_compatible_gpt2(folder: Path, words: Sequence[str], positions: int,
                          batch: Callable[[Any, torch.Generator], tuple[torch.Tensor, int]],
                          steps: int, seed: int, log: Callable[[str], None] = print
                          ) -> tuple[Any, Any]:
    """A GPT-2 (2 layers, width 64) over a word-level vocabulary, every batch word-dropped
    (``uniform_length``) and fresh: ``batch(tokenizer, generator)`` gives ids ``[B, T]`` and
    the first position whose token the loss covers. Reused when ``folder/model`` holds one."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from sequential_rationales.word_dropout import self_attention_mask, word_dropout_keep_mask
    from sequential_rationales_integrations.huggingface.word_dropout import additive_mask
    from sequential_rationales_integrations.huggingface.word_level_tokenizer import (
        build_word_level_tokenizer,
    )

    model_dir = folder / "model"
    if (model_dir / "config.json").is_file():
        return (AutoModelForCausalLM.from_pretrained(model_dir).eval(),
                AutoTokenizer.from_pretrained(model_dir))
    tokenizer = build_word_level_tokenizer([" ".join(words)])
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_layer=2,
                        n_embd=64, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 100)
                                                 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    generator = torch.Generator().manual_seed(seed)
    running = None
    for step in range(steps):
        ids, first = batch(tokenizer, generator)
        keep = word_dropout_keep_mask(torch.ones_like(ids, dtype=torch.bool), "uniform_length",
                                      generator)
        mask = additive_mask(self_attention_mask(keep)[:, None], model)
        logits = model(ids, attention_mask=mask).logits[:, first - 1:-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, first:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if (step + 1) % 500 == 0:
            log(f"  step {step + 1}/{steps}: loss {running:.3f} (word-dropped)")
    model.eval()
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model, tokenizer


# -- teachers and extractors -------------------------------------------------------------------
AdapterFor = Callable[[RationalizationProblem], ModelAdapter]


def greedy_teacher(adapter_for: AdapterFor, problems: Sequence[RationalizationProblem]
                   ) -> tuple[list[TeacherSequence], dict[str, Any]]:
    """Greedy rationales of ``problems``, the default teacher (the targets whose rationale
    reached the argmax), and what they were like: sequences, targets, the share that reached
    the argmax, the mean rationale length and context of those."""
    teacher, reached, total = [], 0, 0
    for problem in problems:
        result = rationalize(adapter_for(problem), problem, "greedy", progress=False)
        teacher.append(TeacherSequence.from_result(problem, result))
        reached += len(teacher[-1].orders)
        total += len(result.rationales)
    pairs = [(s, t) for s in teacher for t in s.orders]
    info = {"sequences": len(teacher), "targets": total, "reached_argmax": reached / total,
            "mean_length": mean(len(s.orders[t]) for s, t in pairs),
            "mean_context_tokens": mean(s.problem.context_size(t) for s, t in pairs)}
    return teacher, info


def cached_extractor(folder: Path, adapter_for: AdapterFor,
                     problems: Sequence[RationalizationProblem], steps: int, seed: int,
                     objectives: Objectives | None = None, rank: int = 32, lr: float = 1e-2
                     ) -> tuple[RationaleExtractor, dict[str, Any]]:
    """The extractor trained on greedy's rationales of ``problems`` (kept in ``folder`` and
    reused), and what its teacher was like (``folder/teacher.json``, see
    :func:`greedy_teacher`)."""
    if (folder / "extractor.json").is_file() and (folder / TEACHER_FILE).is_file():
        return RationaleExtractor.load(folder), json.loads((folder / TEACHER_FILE).read_text())
    teacher, info = greedy_teacher(adapter_for, problems)
    extractor = train_extractor(adapter_for, teacher, ExtractorConfig(0, rank=rank),
                                steps=steps, lr=lr, seed=seed, objectives=objectives)
    extractor.save(folder)
    (folder / TEACHER_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return extractor, info


def top_k_for(teacher: dict[str, Any]) -> int:
    """The one-pass mode's k: the teacher's mean rationale length rounded up (1 without one)."""
    length = teacher["mean_length"]
    return max(1, math.ceil(length)) if length == length else 1


def translation_pairs(hub: Any, split: str, n: int) -> list[tuple[str, RationalizationProblem]]:
    """``(index, problem)`` of the first ``n`` pairs of a split: the source without its
    ``</s>``, the decoder input ``</s>`` then the reference without its ``</s>``."""
    hub.task.load_dataset(split)
    dataset = hub.task.dataset(split)
    eos = hub.task.target_dictionary.eos()
    pairs = []
    for i in range(min(n, len(dataset))):
        example = dataset[i]
        target = torch.cat([torch.tensor([eos]), example["target"][:-1]])
        pairs.append((str(i), RationalizationProblem(target, example["source"][:-1])))
    return pairs


# -- counting the model's work -----------------------------------------------------------------
class ForwardTokens:
    """Counts the tokens the model's body runs through: a pre-hook on each of ``modules`` (the
    ones that take token ids or embeddings: a Hugging Face base model, fairseq's encoder and
    decoder) adds the rows x columns of its input. Prefixes a cache serves are not run again,
    so they are not counted."""

    def __init__(self, modules: Sequence[torch.nn.Module]) -> None:
        self.tokens = 0
        self.handles = [m.register_forward_pre_hook(self._count, with_kwargs=True)
                        for m in modules]

    def _count(self, _module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        inputs = next((kwargs[k] for k in ("input_ids", "inputs_embeds", "src_tokens",
                                           "prev_output_tokens") if kwargs.get(k) is not None),
                      args[0] if args else None)
        if isinstance(inputs, torch.Tensor):
            self.tokens += int(inputs.shape[0] * inputs.shape[1])

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


def counted_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules :class:`ForwardTokens` watches for ``model``."""
    inner = model.models[0] if hasattr(model, "models") else model  # a fairseq hub's model
    if hasattr(inner, "base_model"):  # Hugging Face
        return [inner.base_model]
    return [inner.encoder, inner.decoder] if hasattr(inner, "encoder") else [inner.decoder]
