"""sequential-rationales: rationales for sequence models (Vafa et al., EMNLP 2021).

    import sequential_rationales as sr
    out = sr.load("path/to/model").rationalize("The Supreme Court on", generate=8)
    out.show()

The core is framework-free (torch and numpy only); framework code lives in
``sequential_rationales_integrations`` and the paper's experiments in
``sequential_rationales_experiments``. Models are reached through
:class:`~sequential_rationales.adapter.ModelAdapter`; ready adapters live in
``sequential_rationales.adapters``.
"""

from .adapter import AttentionMaps, Embeddings, ModelAdapter, SubsetBatch, eval_mode
from .extractor import RationaleExtractor, train_extractor
from .html import render_html, write_html
from .methods import (
    BASELINE_METHODS,
    get_method,
    list_methods,
    rationalize,
    register_method,
)
from .render import format_rationales
from .results import (
    ContextToken,
    SearchStep,
    SequenceRationales,
    TargetRationale,
    conditional_log,
    lm_log,
    read_jsonl,
    write_json_atomic,
    write_jsonl,
)
from .search import (
    RationalizationProblem,
    exhaustive_search,
    greedy_search,
    ordered_search,
    score_subsets,
)
from .sequences import (
    conditional_problem,
    lm_problem,
    rationalize_sequence,
    rationalize_translation,
)
from .text import Rationales, Rationalizer, load
from .validation import InputError
from .word_dropout import (
    WORD_DROPOUT_TYPES,
    WordDropout,
    self_attention_mask,
    word_dropout_keep_mask,
)

__version__ = "0.1.0"

__all__ = [
    "AttentionMaps", "BASELINE_METHODS", "ContextToken", "Embeddings", "InputError",
    "ModelAdapter", "RationaleExtractor", "Rationales", "RationalizationProblem", "Rationalizer",
    "SearchStep",
    "SequenceRationales", "SubsetBatch", "TargetRationale", "WORD_DROPOUT_TYPES", "WordDropout",
    "conditional_log", "conditional_problem", "eval_mode", "exhaustive_search",
    "format_rationales", "get_method", "greedy_search", "list_methods", "lm_log", "lm_problem",
    "load", "ordered_search", "rationalize", "rationalize_sequence", "rationalize_translation",
    "read_jsonl", "register_method", "render_html", "score_subsets", "self_attention_mask",
    "train_extractor",
    "word_dropout_keep_mask", "write_html", "write_json_atomic", "write_jsonl"
]
