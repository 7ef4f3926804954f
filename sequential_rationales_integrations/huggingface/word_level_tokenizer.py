"""A whitespace word-level tokenizer built from a corpus, for offline experiments and tests.

Saved with ``save_pretrained`` it loads with ``AutoTokenizer.from_pretrained(path)`` like any
Hugging Face tokenizer, so ``run_clm.py --tokenizer_name path`` works without a model hub.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import WhitespaceSplit
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = {"unk_token": "<unk>", "pad_token": "<pad>", "bos_token": "<s>",
                  "eos_token": "</s>"}


def build_word_level_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Vocabulary: the special tokens, then every whitespace-separated word in first-seen
    order (deterministic ids for a given corpus)."""
    vocab: dict[str, int] = {}
    for token in SPECIAL_TOKENS.values():
        vocab.setdefault(token, len(vocab))
    for text in texts:
        for word in text.split():
            vocab.setdefault(word, len(vocab))
    core = Tokenizer(WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
