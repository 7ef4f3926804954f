"""The synthetic translation task: its gold links follow the construction rules."""

from __future__ import annotations

import json

import pytest

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


def test_standard_variant_is_unchanged():
    # Recorded from the generator before the hard variant was added.
    import hashlib

    pairs = synthetic_translation_corpus(200, seed=7)
    assert pairs[0].to_dict() == {
        "source": "ein Feuerwehr kauft ein Bauer", "target": "a fire brigade buys a farmer",
        "sure": [(0, 0), (1, 1), (1, 2), (2, 3), (3, 4), (4, 5)],
        "possible": [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 3), (3, 4), (3, 5), (4, 5)]}
    assert pairs[1].source == "der Mann klein sieht ja der Baum an".split()
    digest = hashlib.sha256(json.dumps([p.to_dict() for p in pairs]).encode()).hexdigest()
    assert digest == "74fe5b357809b57bcaa9407b4808050a11c2a513a1a401fbf2f76daf89548676"
    assert [p.to_dict() for p in synthetic_translation_corpus(20, 5, variant="standard")] == \
        [p.to_dict() for p in synthetic_translation_corpus(20, 5)]


def test_hard_variant_is_deterministic_with_valid_links():
    a = synthetic_translation_corpus(300, seed=3, variant="hard")
    assert [p.to_dict() for p in a] == [
        p.to_dict() for p in synthetic_translation_corpus(300, seed=3, variant="hard")]
    assert [p.to_dict() for p in a] != [
        p.to_dict() for p in synthetic_translation_corpus(300, seed=4, variant="hard")]
    assert [p.to_dict() for p in a] != [p.to_dict() for p in synthetic_translation_corpus(300, 3)]
    several = 0
    for p in a:
        assert p.sure <= p.possible
        for i, j in p.possible:
            assert 0 <= i < len(p.source) and 0 <= j < len(p.target)
        assert {j for _, j in p.sure} == set(range(len(p.target)))
        several += sum(len({i for i, t in p.sure if t == j}) > 1 for j in range(len(p.target)))
    # Most target words need more than one source word.
    assert several > 0.5 * sum(len(p.target) for p in a)
    with pytest.raises(ValueError, match="variant"):
        synthetic_translation_corpus(1, variant="harder")


def test_hard_phenomena_occur_with_exact_links():
    from sequential_rationales_experiments.synthetic_translation import (
        AMBIGUOUS,
        DETERMINERS,
        HARD_ARTICLES,
        HARD_NOUNS,
        HARD_PLACES,
        HARD_SEPARABLE_VERBS,
        HARD_VERBS,
    )

    verb_forms = {form: plural for forms in [*HARD_VERBS.values(),
                                             *HARD_SEPARABLE_VERBS.values()]
                  for plural, form in enumerate(forms)}
    seen = set()
    for p in synthetic_translation_corpus(400, seed=0, variant="hard"):
        sure = {j: sorted(i for i, t in p.sure if t == j) for j in range(len(p.target))}
        for j, word in enumerate(p.target):
            words = [p.source[i] for i in sure[j]]
            if word in DETERMINERS.values():
                article, *noun = words  # the article, then the noun (singular only)
                number = HARD_ARTICLES[article]
                assert len(noun) == (number != "plural")
                if number == "plural":
                    assert word == "les" and noun == []
                else:
                    gender = "f" if noun[0] == AMBIGUOUS else HARD_NOUNS[noun[0]][1]
                    assert word == DETERMINERS[(number, gender)]
                    seen.add("determiner agreement")
            elif word in verb_forms:
                # The subject's article decides the form, even across an adjective.
                article = next(w for w in words if w in HARD_ARTICLES)
                assert verb_forms[word] == (HARD_ARTICLES[article] == "plural")
                seen.add("verb agreement")
            elif word in {"bench", "bank"}:
                bank, place = words
                assert bank == AMBIGUOUS and HARD_PLACES[place][1] == word
                assert place in p.source[p.source.index(bank, sure[j][0]):]
                seen.add("word sense " + word)
            elif word.rstrip("s") in {t for t, _ in HARD_NOUNS.values()}:
                article, noun = words
                assert HARD_NOUNS[noun][0] + "s" * (HARD_ARTICLES[article] == "plural") == word
                seen.add("noun number")
        # Repeated words: only the occurrence in the word's own clause is linked.
        for noun in {w for w in p.source if w in HARD_NOUNS and p.source.count(w) > 1}:
            occurrences = [i for i, w in enumerate(p.source) if w == noun]
            for i in occurrences:
                linked = {j for s, j in p.possible if s == i}
                assert linked and all(j not in {t for s, t in p.possible if s == other}
                                      for other in occurrences if other != i for j in linked)
            seen.add("repeated words")
    assert seen == {"determiner agreement", "verb agreement", "word sense bench",
                    "word sense bank", "noun number", "repeated words"}


def test_benchmark_writes_the_chosen_variant(tmp_path):
    import argparse

    from sequential_rationales_experiments.commands import run_translation_benchmark as bench

    args = argparse.Namespace(train_pairs=4, test_pairs=3, seed=1, force=False, variant="hard")
    bench.write_corpus(tmp_path / "hard", args)
    expected = synthetic_translation_corpus(3, seed=1002, variant="hard")
    assert (tmp_path / "hard" / "test.en").read_text().splitlines() == [
        " ".join(p.target) for p in expected]
    assert bench.parse_args([]).variant == "standard"
    standard = argparse.Namespace(**{**vars(args), "variant": "standard"})
    bench.write_corpus(tmp_path / "standard", standard)
    # The standard corpus keeps its marker, so corpora written before stay finished.
    assert json.loads((tmp_path / "standard" / "step.done").read_text()) == ["4", "3", "1"]
    assert json.loads((tmp_path / "hard" / "step.done").read_text()) == ["4", "3", "1", "hard"]
