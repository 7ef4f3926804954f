"""A synthetic German-like -> English-like translation task with gold word alignments.

Real gold alignments (RWTH De-En) cannot be downloaded here, so the alignment and distractor
experiments also run on a task whose true alignments are known by construction. Each pair
is generated from a small grammar together with its **sure** and **possible** links, and
exercises what makes alignment hard:

* **one-to-one** content words (``Hund -> dog``) and function words (``der -> the``);
* **local reordering**: source adjectives follow their noun (``Hund rot``), target adjectives
  precede it (``red dog``);
* **one-to-many**: compounds (``Haustür -> front door``) and contracted prepositions
  (``im -> in the``);
* **many-to-one** with a long-distance link: separable verbs whose particle ends the clause
  (``ruft ... an -> calls``); both source tokens are sure links of ``calls``. Their stems are
  also plain verbs (``ruft -> shouts``), so the verb's translation needs the particle;
* **unaligned / possible links**: the filler particle ``ja`` has no translation; it is only a
  possible link of the verb. Articles are also possible links of their noun's translation.

Sentences are one or two clauses (``und`` joins them), 5-20 tokens per side.
Alignment links are ``(source_index, target_index)`` pairs; ``possible`` includes ``sure``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

NOUNS = {
    "Hund": "dog", "Katze": "cat", "Mann": "man", "Frau": "woman", "Kind": "child",
    "Lehrer": "teacher", "Arzt": "doctor", "Vogel": "bird", "Bauer": "farmer",
    "Koch": "cook", "Apfel": "apple", "Buch": "book", "Brief": "letter", "Tisch": "table",
    "Auto": "car", "Baum": "tree", "Ball": "ball", "Hut": "hat", "Brot": "bread",
    "Stein": "stone",
}
COMPOUNDS = {  # one source word, two target words
    "Haustür": ("front", "door"), "Feuerwehr": ("fire", "brigade"),
    "Spielzeug": ("toy", "box"), "Zeitung": ("news", "paper"),
}
ADJECTIVES = {
    "rot": "red", "groß": "big", "klein": "small", "alt": "old", "neu": "new",
    "grün": "green", "müde": "tired", "schnell": "fast",
}
VERBS = {
    "sieht": "sees", "findet": "finds", "kauft": "buys", "malt": "paints",
    "hört": "hears", "liebt": "loves", "trägt": "carries", "sucht": "seeks",
    # Stems shared with separable verbs: the translation depends on the clause-final particle.
    "ruft": "shouts", "räumt": "clears", "holt": "fetches",
}
SEPARABLE_VERBS = {  # (verb, particle at the clause end) -> one target verb
    ("ruft", "an"): "calls", ("räumt", "auf"): "tidies", ("holt", "ab"): "collects",
    ("sieht", "an"): "watches",
}
PLACES = {"Garten": "garden", "Haus": "house", "Park": "park", "Wald": "forest"}
ARTICLES = {"der": "the", "ein": "a"}
FILLER = "ja"


@dataclass
class AlignedPair:
    """A sentence pair with gold links ``(source_index, target_index)``."""

    source: list[str]
    target: list[str]
    sure: set[tuple[int, int]] = field(default_factory=set)
    possible: set[tuple[int, int]] = field(default_factory=set)

    def add(self, src: str | list[str], tgt: str | list[str], sure: bool = True) -> None:
        """Append source and target words, linking every new source word to every new
        target word (sure links are also possible links)."""
        src_words = [src] if isinstance(src, str) else src
        tgt_words = [tgt] if isinstance(tgt, str) else tgt
        s0, t0 = len(self.source), len(self.target)
        self.source.extend(src_words)
        self.target.extend(tgt_words)
        for i in range(s0, s0 + len(src_words)):
            for j in range(t0, t0 + len(tgt_words)):
                self.possible.add((i, j))
                if sure:
                    self.sure.add((i, j))

    def link(self, src_index: int, tgt_index: int, sure: bool) -> None:
        self.possible.add((src_index, tgt_index))
        if sure:
            self.sure.add((src_index, tgt_index))

    def to_dict(self) -> dict:
        return {"source": " ".join(self.source), "target": " ".join(self.target),
                "sure": sorted(self.sure), "possible": sorted(self.possible)}


def _choice(options: list, gen: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=gen))]


def _coin(p: float, gen: torch.Generator) -> bool:
    return bool(torch.rand((), generator=gen) < p)


def _noun_phrase(pair: AlignedPair, gen: torch.Generator) -> None:
    """ART NOUN [ADJ] -> ART [ADJ] NOUN (adjective reordered), or a compound."""
    article = _choice(list(ARTICLES), gen)
    art_src, art_tgt = len(pair.source), len(pair.target)
    pair.add(article, ARTICLES[article])
    if _coin(0.2, gen):
        compound = _choice(list(COMPOUNDS), gen)
        pair.add(compound, list(COMPOUNDS[compound]))
        for j in range(len(COMPOUNDS[compound])):
            pair.link(art_src, art_tgt + 1 + j, sure=False)
        return
    noun = _choice(list(NOUNS), gen)
    if _coin(0.4, gen):
        adjective = _choice(list(ADJECTIVES), gen)
        s = len(pair.source)
        t = len(pair.target)
        pair.source.extend([noun, adjective])
        pair.target.extend([ADJECTIVES[adjective], NOUNS[noun]])
        pair.link(s, t + 1, sure=True)      # noun
        pair.link(s + 1, t, sure=True)      # adjective, swapped
        pair.link(art_src, t + 1, sure=False)
    else:
        pair.add(noun, NOUNS[noun])
        pair.link(art_src, art_tgt + 1, sure=False)


def _clause(pair: AlignedPair, gen: torch.Generator) -> None:
    _noun_phrase(pair, gen)
    separable = _coin(0.25, gen)
    if separable:
        verb, particle = _choice(list(SEPARABLE_VERBS), gen)
        verb_tgt = len(pair.target)
        pair.add(verb, SEPARABLE_VERBS[(verb, particle)])
    else:
        verb = _choice(list(VERBS), gen)
        verb_tgt = len(pair.target)
        pair.add(verb, VERBS[verb])
    if _coin(0.3, gen):
        pair.source.append(FILLER)  # untranslated: only a possible link of the verb
        pair.link(len(pair.source) - 1, verb_tgt, sure=False)
    _noun_phrase(pair, gen)
    if _coin(0.4, gen):
        place = _choice(list(PLACES), gen)
        if _coin(0.5, gen):
            pair.add("im", ["in", "the"])  # contraction: one source word, two target words
        else:
            pair.add("in", "in")
            pair.add("dem", "the")
        pair.add(place, PLACES[place])
    if separable:
        pair.source.append(particle)
        pair.link(len(pair.source) - 1, verb_tgt, sure=True)


def synthetic_translation_pair(gen: torch.Generator) -> AlignedPair:
    """One sentence pair (one or two clauses) with its gold alignment."""
    pair = AlignedPair([], [])
    _clause(pair, gen)
    if _coin(0.3, gen):
        pair.add("und", "and")
        _clause(pair, gen)
    return pair


def synthetic_translation_corpus(num_pairs: int, seed: int = 0) -> list[AlignedPair]:
    """``num_pairs`` generated pairs; the same seed gives the same corpus."""
    gen = torch.Generator().manual_seed(seed)
    return [synthetic_translation_pair(gen) for _ in range(num_pairs)]


def write_reversal_corpus(directory: Path, sizes: Iterable[tuple[str, int]], seed: int = 0,
                          vocabulary: int = 10, lengths: tuple[int, int] = (3, 7)) -> None:
    """A simpler task without alignments, for timing and plumbing: source ``s3 s7 s1`` ->
    target ``t1 t7 t3`` (a lexicon mapping plus reversal).

    Writes ``DIRECTORY/SPLIT.src`` and ``.tgt`` for each ``(split, lines)`` of ``sizes``: words
    ``s0 .. s{vocabulary-1}``, ``lengths[0]`` to ``lengths[1]`` per line, from one
    ``random.Random(seed)``.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        sources, targets = [], []
        for _ in range(n):
            words = [rng.randrange(vocabulary) for _ in range(rng.randint(*lengths))]
            sources.append(" ".join(f"s{w}" for w in words))
            targets.append(" ".join(f"t{w}" for w in reversed(words)))
        (directory / f"{split}.src").write_text("\n".join(sources) + "\n")
        (directory / f"{split}.tgt").write_text("\n".join(targets) + "\n")
