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

The ``hard`` variant (:func:`hard_translation_pair`) makes most target words depend on more
than one source word, so that a method must find several sure links per word:

* **agreement**: the source article carries definiteness and number (``der`` / ``ein``
  singular, ``die`` plural); the target determiner's form also needs the noun's gender
  (``le la un une les``), the target noun's number needs the article (``dog`` / ``dogs``), and
  the verb agrees with its subject's article across the subject phrase (``sees`` / ``see``);
* **word sense from context**: ``Bank`` is ``bench`` next to a park or garden and ``bank`` in
  a city or market: the place noun at the end of the clause is a sure link of the word;
* **repeated words**: a second clause often repeats a noun phrase of the first, so a source
  word occurs twice and only the occurrence in the word's own clause is linked.

Separable verbs, the filler ``ja`` and noun-adjective reordering are kept.
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


# -- the hard variant -------------------------------------------------------------------------
HARD_NOUNS = {  # source noun -> (target noun, its gender in the target language)
    "Hund": ("dog", "m"), "Katze": ("cat", "f"), "Lehrer": ("teacher", "m"),
    "Vogel": ("bird", "m"), "Bauer": ("farmer", "f"), "Apfel": ("apple", "f"),
    "Buch": ("book", "m"), "Brief": ("letter", "f"), "Tisch": ("table", "f"),
    "Baum": ("tree", "m"), "Ball": ("ball", "f"), "Stein": ("stone", "m"),
}
HARD_ARTICLES = {"der": "def", "ein": "indef", "die": "plural"}  # number lives in the article
DETERMINERS = {("def", "m"): "le", ("def", "f"): "la", ("indef", "m"): "un",
               ("indef", "f"): "une", ("plural", "m"): "les", ("plural", "f"): "les"}
HARD_VERBS = {  # source verb -> (singular, plural) target forms
    "sieht": ("sees", "see"), "findet": ("finds", "find"), "kauft": ("buys", "buy"),
    "malt": ("paints", "paint"), "hört": ("hears", "hear"), "liebt": ("loves", "love"),
    "ruft": ("shouts", "shout"),
}
HARD_SEPARABLE_VERBS = {("ruft", "an"): ("calls", "call"), ("sieht", "an"): ("watches", "watch")}
AMBIGUOUS = "Bank"  # feminine, singular only; its sense comes from the clause's place
HARD_PLACES = {  # place -> (its translation, the sense of Bank in that clause)
    "Park": ("park", "bench"), "Garten": ("garden", "bench"),
    "Stadt": ("city", "bank"), "Markt": ("market", "bank"),
}
VARIANTS = ("standard", "hard")


@dataclass
class _Phrase:
    """What a noun phrase chose (to repeat it) and where its article went (for agreement)."""

    article: str
    noun: str
    adjective: str | None
    article_index: int = -1


def _draw_phrase(gen: torch.Generator, ambiguous: bool = False) -> _Phrase:
    if ambiguous:
        return _Phrase(_choice(["der", "ein"], gen), AMBIGUOUS, None)
    article = _choice(list(HARD_ARTICLES), gen)
    noun = _choice(list(HARD_NOUNS), gen)
    adjective = _choice(list(ADJECTIVES), gen) if _coin(0.4, gen) else None
    return _Phrase(article, noun, adjective)


def _hard_noun_phrase(pair: AlignedPair, phrase: _Phrase, sense: str | None = None) -> _Phrase:
    """ART NOUN [ADJ] -> DET [ADJ] NOUN. The determiner needs the article and (in the
    singular) the noun's gender; the noun's number needs the article, except ``Bank``, whose
    form (``sense``) needs the place instead (linked by the caller)."""
    number = HARD_ARTICLES[phrase.article]
    ambiguous = phrase.noun == AMBIGUOUS
    gender = "f" if ambiguous else HARD_NOUNS[phrase.noun][1]
    if ambiguous:
        noun_target = sense
    else:
        noun_target = HARD_NOUNS[phrase.noun][0] + ("s" if number == "plural" else "")
    a, t = len(pair.source), len(pair.target)
    pair.source += [phrase.article, phrase.noun] + ([phrase.adjective] if phrase.adjective else [])
    pair.target.append(DETERMINERS[(number, gender)])
    if phrase.adjective:
        pair.target.append(ADJECTIVES[phrase.adjective])
        pair.link(a + 2, t + 1, sure=True)
    noun_t = len(pair.target)
    pair.target.append(noun_target)
    pair.link(a, t, sure=True)                        # determiner <- article
    pair.link(a + 1, t, sure=number != "plural")      # ... and the noun's gender
    pair.link(a + 1, noun_t, sure=True)               # noun
    pair.link(a, noun_t, sure=not ambiguous)          # its number
    return _Phrase(phrase.article, phrase.noun, phrase.adjective, article_index=a)


def _hard_clause(pair: AlignedPair, gen: torch.Generator, subject: _Phrase | None = None
                 ) -> list[_Phrase]:
    """SUBJ VERB [ja] OBJ [PLACE] [PARTICLE]; ``subject`` repeats an earlier phrase."""
    subject = _hard_noun_phrase(pair, subject or _draw_phrase(gen))
    plural = HARD_ARTICLES[subject.article] == "plural"
    separable = _coin(0.25, gen)
    if separable:
        verb, particle = _choice(list(HARD_SEPARABLE_VERBS), gen)
        forms = HARD_SEPARABLE_VERBS[(verb, particle)]
    else:
        verb = _choice(list(HARD_VERBS), gen)
        forms = HARD_VERBS[verb]
    verb_t = len(pair.target)
    pair.add(verb, forms[plural])
    pair.link(subject.article_index, verb_t, sure=True)  # agreement with the subject
    if _coin(0.3, gen):
        pair.source.append(FILLER)
        pair.link(len(pair.source) - 1, verb_t, sure=False)
    ambiguous = _coin(0.35, gen)
    place = _choice(list(HARD_PLACES), gen) if ambiguous or _coin(0.4, gen) else None
    noun_t = len(pair.target) + 1  # Bank has no adjective: DET NOUN
    obj = _hard_noun_phrase(pair, _draw_phrase(gen, ambiguous),
                            HARD_PLACES[place][1] if place else None)
    if place:
        if _coin(0.5, gen):
            pair.add("im", ["in", "the"])
        else:
            pair.add("in", "in")
            pair.add("dem", "the")
        pair.add(place, HARD_PLACES[place][0])
        if ambiguous:
            pair.link(len(pair.source) - 1, noun_t, sure=True)  # the sense of Bank
    if separable:
        pair.source.append(particle)
        pair.link(len(pair.source) - 1, verb_t, sure=True)
    return [subject] + ([] if ambiguous else [obj])


def hard_translation_pair(gen: torch.Generator) -> AlignedPair:
    """One pair of the ``hard`` variant (see the module docstring)."""
    pair = AlignedPair([], [])
    phrases = _hard_clause(pair, gen)
    if _coin(0.6, gen):
        pair.add("und", "and")
        # Half of the second clauses repeat a phrase of the first as their subject.
        repeat = _choice(phrases, gen) if _coin(0.5, gen) else None
        _hard_clause(pair, gen, repeat)
    return pair


def synthetic_translation_corpus(num_pairs: int, seed: int = 0, variant: str = "standard"
                                 ) -> list[AlignedPair]:
    """``num_pairs`` generated pairs of ``variant`` (``standard`` or ``hard``); the same seed
    gives the same corpus."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    make = hard_translation_pair if variant == "hard" else synthetic_translation_pair
    gen = torch.Generator().manual_seed(seed)
    return [make(gen) for _ in range(num_pairs)]


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
