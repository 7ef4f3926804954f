"""The synthetic translation task: its gold links follow the construction rules."""

from __future__ import annotations

from sequential_rationales_experiments.synthetic_translation import (
    ADJECTIVES,
    COMPOUNDS,
    FILLER,
    NOUNS,
    SEPARABLE_VERBS,
    synthetic_translation_corpus,
)


def test_corpus_is_deterministic_and_links_are_in_range():
    a = synthetic_translation_corpus(300, seed=3)
    b = synthetic_translation_corpus(300, seed=3)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.to_dict() for p in a] != [p.to_dict() for p in synthetic_translation_corpus(300, 4)]
    for p in a:
        assert p.sure <= p.possible
        for i, j in p.possible:
            assert 0 <= i < len(p.source) and 0 <= j < len(p.target)
        # Every target word has at least one sure source word.
        assert {j for _, j in p.sure} == set(range(len(p.target)))


def test_construction_rules_hold():
    seen = set()
    reverse_nouns = {v: k for k, v in NOUNS.items()}
    for p in synthetic_translation_corpus(500, seed=0):
        for i, word in enumerate(p.source):
            targets = sorted(j for s, j in p.sure if s == i)
            if word in ADJECTIVES:
                # Noun-adjective in the source, adjective-noun in the target.
                (j,) = targets
                assert p.target[j] == ADJECTIVES[word]
                assert p.target[j + 1] == NOUNS[p.source[i - 1]]
                assert reverse_nouns[p.target[j + 1]] == p.source[i - 1]
                seen.add("reorder")
            elif word in COMPOUNDS:
                assert [p.target[j] for j in targets] == list(COMPOUNDS[word])
                seen.add("one-to-many")
            elif word == FILLER:
                assert targets == []
                assert len([j for s, j in p.possible if s == i]) == 1
                seen.add("filler")
            elif word in {particle for _, particle in SEPARABLE_VERBS} and i > 0 and any(
                    (verb, word) in SEPARABLE_VERBS for verb in p.source[:i]) and targets:
                (j,) = targets
                verb_sources = [s for s, t in p.sure if t == j]
                assert len(verb_sources) == 2 and max(verb_sources) == i
                verb = p.source[min(verb_sources)]
                assert SEPARABLE_VERBS[(verb, word)] == p.target[j]
                seen.add("many-to-one")
    assert seen == {"reorder", "one-to-many", "filler", "many-to-one"}
