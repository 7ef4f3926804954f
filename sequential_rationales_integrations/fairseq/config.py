"""Word-dropout command-line options shared by the fairseq models of the plugin.

``--word-dropout-mixture P``: probability that a training batch is word-dropped (0 = standard
training). ``--word-dropout-type``: ``uniform_length`` (kept count uniform on 0..T; for LMs)
or ``inverse_length`` (each token kept with probability 1/T; for translation).
``--word-dropout-per-head`` / ``--word-dropout-per-example``: whether every attention head
draws its own keep-set; neither flag = the type's default (per-head for ``inverse_length``,
as in the paper's code).
"""

# No `from __future__ import annotations`: fairseq reads the dataclass field types at runtime.
import argparse
from dataclasses import dataclass, field

from fairseq.dataclass import ChoiceEnum, FairseqDataclass

from sequential_rationales.validation import check_choice, check_probability
from sequential_rationales.word_dropout import WORD_DROPOUT_TYPES, WordDropout

WORD_DROPOUT_DEFAULTS = {
    "word_dropout_mixture": 0.0,
    "word_dropout_type": "uniform_length",
    "word_dropout_per_head": False,
    "word_dropout_per_example": False,
}


@dataclass
class WordDropoutConfig(FairseqDataclass):
    word_dropout_mixture: float = field(
        default=0.0,
        metadata={"help": "probability in [0, 1] that a training batch is word-dropped "
                          "(attention masks hide context tokens); 0 = standard training"})
    word_dropout_type: ChoiceEnum(WORD_DROPOUT_TYPES) = field(  # type: ignore[valid-type]
        default="uniform_length",
        metadata={"help": "uniform_length: number of kept tokens uniform on 0..T (language "
                          "models); inverse_length: each token kept with probability 1/T "
                          "(translation)"})
    word_dropout_per_head: bool = field(
        default=False,
        metadata={"help": "every attention head draws its own keep-set (default for "
                          "inverse_length)"})
    word_dropout_per_example: bool = field(
        default=False,
        metadata={"help": "all attention heads of an example share one keep-set (default "
                          "for uniform_length)"})


def set_word_dropout_defaults(args) -> None:
    """Architecture-function helper: fill missing word-dropout options with their defaults."""
    for name, value in WORD_DROPOUT_DEFAULTS.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)


def word_dropout_from_cfg(cfg) -> WordDropout:
    """Validate the word-dropout options of a model config (Namespace or DictConfig).

    Raises ``ValueError`` naming the command-line flag, so ``fairseq-train`` stops while it
    builds the model, before any training step.
    """
    mixture = getattr(cfg, "word_dropout_mixture", None)
    mixture = check_probability(0.0 if mixture is None else mixture, "--word-dropout-mixture")
    kind = getattr(cfg, "word_dropout_type", None) or "uniform_length"
    kind = check_choice(str(getattr(kind, "value", kind)), "--word-dropout-type",
                        WORD_DROPOUT_TYPES)
    per_head = bool(getattr(cfg, "word_dropout_per_head", False))
    per_example = bool(getattr(cfg, "word_dropout_per_example", False))
    if per_head and per_example:
        raise ValueError("--word-dropout-per-head and --word-dropout-per-example exclude each "
                         "other; pass at most one")
    return WordDropout(mixture, kind, True if per_head else False if per_example else None)


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1], got {text}")
    return value


def check_word_dropout_flags(parser) -> None:
    """Have the fairseq command lines reject bad word-dropout flags while they parse them
    (``fairseq-train: error: argument --word-dropout-mixture: ...``, exit status 2) rather
    than with a traceback once the model is built; :func:`word_dropout_from_cfg` stays the
    check for configs that bypass the command line."""
    actions = {action.dest: action for action in parser._actions}
    if "word_dropout_mixture" in actions:
        actions["word_dropout_mixture"].type = _probability
    exclusive = [actions.get("word_dropout_per_head"), actions.get("word_dropout_per_example")]
    if None in exclusive or any(set(exclusive) <= set(group._group_actions)
                                for group in parser._mutually_exclusive_groups):
        return
    # argparse offers no public way to group options another function added.
    parser.add_mutually_exclusive_group()._group_actions.extend(exclusive)
