"""IWSLT14 preparation, distractors and gold-alignment mapping on small local fixtures.

Nothing here touches the network: downloads are monkeypatched, archives are built in tmp_path.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from sequential_rationales_experiments import alignments, distractors, iwslt14
from sequential_rationales_experiments.commands import (
    create_distractor_dataset,
    map_alignments_to_bpe,
    prepare_iwslt14,
)

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "fairseq"


# ---------------------------------------------------------------------------------------------
# A tiny IWSLT-style archive with hand-known expected outputs.

META = {
    "de": ["<url>http://www.ted.com/talks/lang/de/jane_doe.html</url>",
           "<keywords>talks, science</keywords>",
           "<speaker>Jane Doe</speaker>",
           "<talkid>{talk}</talkid>",
           "<title>Jane Doe: Ein Titel</title>",
           "<description>TED Talk Subtitles and Transcript: Eine Beschreibung.</description>"],
    "en": ["<url>http://www.ted.com/talks/jane_doe.html</url>",
           "<keywords>talks, science</keywords>",
           "<speaker>Jane Doe</speaker>",
           "<talkid>{talk}</talkid>",
           "<title>Jane Doe: A title</title>",
           "<description>TED Talk Subtitles and Transcript: A description.</description>"],
}
# What survives of META (tokenized, lowercased) in the order of the file.
META_KEPT = [
    ("&lt; speaker &gt; jane doe &lt; / speaker &gt;",
     "&lt; speaker &gt; jane doe &lt; / speaker &gt;"),
    ("jane doe : ein titel", "jane doe : a title"),
    ("ted talk subtitles and transcript : eine beschreibung .",
     "ted talk subtitles and transcript : a description ."),
]
SPEAKER = META_KEPT[0]
# prepare-iwslt14.sh: cat dev2010 TEDX.dev2012 tst2010 tst2011 tst2012 > test.$l
TEST_SETS = ["IWSLT14.TED.dev2010", "IWSLT14.TEDX.dev2012", "IWSLT14.TED.tst2010",
             "IWSLT14.TED.tst2011", "IWSLT14.TED.tst2012"]


def talk(talk_id: int, first: int, count: int):
    """Raw de/en lines of one talk and the expected cleaned (tokenized, lowercased) pairs."""
    raw = {lang: [m.format(talk=talk_id) for m in META[lang]] for lang in ("de", "en")}
    expected = list(META_KEPT)
    for i in range(first, first + count):
        raw["de"].append(f"Satz Nummer {i}: Das Haus ist grün.")
        raw["en"].append(f"Sentence number {i}: The house's green.")
        expected.append((f"satz nummer {i} : das haus ist grün .",
                         f"sentence number {i} : the house &apos;s green ."))
    return raw, expected


def make_train():
    raw = {"de": [], "en": []}
    expected = []
    for talk_id, (first, count) in enumerate([(0, 20), (20, 25)], 1):
        part, part_expected = talk(talk_id, first, count)
        for lang in raw:
            raw[lang] += part[lang]
        expected += part_expected
        # Pairs clean-corpus must drop: ratio 5/2 > 1.5, 176 tokens, empty; and one to keep at
        # exactly 175 tokens.
        raw["de"] += ["Ja.", " ".join(["Wort"] * 175) + ".", "   ", " ".join(["Wort"] * 174) + "."]
        raw["en"] += ["Yes, of course.", " ".join(["word"] * 175) + ".", "",
                      " ".join(["word"] * 174) + "."]
        expected.append((" ".join(["wort"] * 174) + " .", " ".join(["word"] * 174) + " ."))
    return raw, expected


def xml_file(name: str, lang: str) -> str:
    tag = name.split(".", 1)[1].replace(".", "")  # e.g. TEDXdev2012
    segs = {
        "de": [f"Satz aus {tag} eins.", "Ich bin’s, sagte sie."],
        "en": [f"Sentence from {tag} one.", "It’s me, she said."],
    }[lang]
    body = "\n".join(f'<seg id="{k}">  {text}  </seg>' for k, text in enumerate(segs, 1))
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<mteval>\n'
        f'<srcset setid="iwslt2014-{tag}" srclang="{lang}">\n<doc docid="1" genre="lectures">\n'
        "<url>http://www.ted.com/talks/x.html</url>\n<talkid>1</talkid>\n"
        "<title>Ein Titel</title>\n"
        f"{body}\n</doc>\n</srcset>\n</mteval>\n"
    )


def expected_test(lang: str) -> list[str]:
    out = []
    for name in TEST_SETS:
        tag = name.split(".", 1)[1].replace(".", "").lower()
        if lang == "de":
            out += [f"satz aus {tag} eins .", "ich bin &apos; s , sagte sie ."]
        else:
            out += [f"sentence from {tag} one .", "it &apos;s me , she said ."]
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A de-en.tgz laid out like the official one (files under de-en/)."""
    root = tmp_path_factory.mktemp("iwslt")
    raw, expected = make_train()
    path = root / "de-en.tgz"
    with tarfile.open(path, "w:gz") as tar:
        files = {f"de-en/train.tags.de-en.{lang}": "\n".join(raw[lang]) + "\n"
                 for lang in ("de", "en")}
        for name in TEST_SETS + ["IWSLT14.TED.tst2013"]:  # an extra set must be ignored
            for lang in ("de", "en"):
                files[f"de-en/{name}.de-en.{lang}.xml"] = xml_file(name, lang)
        files["de-en/README"] = "not used\n"
        for member, text in files.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(member)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, expected


@pytest.fixture(scope="module")
def prepared(archive, tmp_path_factory):
    path, expected = archive
    out = tmp_path_factory.mktemp("prepared") / "iwslt14.tokenized.de-en"
    rc = prepare_iwslt14.main(["--archive", str(path), "--out", str(out),
                               "--bpe-merges", "60"])
    assert rc == 0
    return out, expected


def unbpe(line: str) -> str:
    return (line + " ").replace("@@ ", "").rstrip(" ")


# ---------------------------------------------------------------------------------------------
# Individual steps.


def test_tokenize_and_lowercase_known_sentences():
    en = ["Don't worry, it's 5,300 \"dollars\".", "A well-known fact & [more] | less.", "  "]
    assert iwslt14.lowercase(iwslt14.moses_tokenize(en, "en")) == [
        "don &apos;t worry , it &apos;s 5,300 &quot; dollars &quot; .",
        "a well-known fact &amp; &#91; more &#93; &#124; less .",  # no -a: hyphen kept
        "",
    ]
    de = ["Das ist z.B. Herrn Müllers Haus, nicht wahr?", "Er sagt's."]
    assert iwslt14.lowercase(iwslt14.moses_tokenize(de, "de")) == [
        "das ist z.b. herrn müllers haus , nicht wahr ?",
        "er sagt &apos; s .",  # non-English apostrophes are split on both sides
    ]
    # tokenizer.perl (since 2018) splits the final period even after a non-breaking prefix;
    # plain sacremoses does not.
    final = ["So am I.", "He lives in the U.S.", "Mr. Smith came."]
    assert iwslt14.moses_tokenize(final, "en") == ["So am I .", "He lives in the U.S .",
                                                   "Mr. Smith came ."]
    assert iwslt14.moses_tokenize(final, "en", split_final_period=False) == [
        "So am I.", "He lives in the U.S.", "Mr. Smith came ."]


def test_tokenize_in_several_processes_gives_the_same_output(monkeypatch):
    lines = [f"Satz {i}: Er sagt's, z.B. im Jahr {2000 + i}." for i in range(9)] + [""]
    monkeypatch.setattr(iwslt14.moses, "_CHUNK", 3)
    assert iwslt14.moses_tokenize(lines, "de", workers=2) == iwslt14.moses_tokenize(lines, "de")


def test_train_tags_filter_follows_the_script():
    lines = ["<url>x</url>", "  <keywords>a</keywords>", "<talkid>3</talkid>",
             "<title>T: x</title>", "<description>D.</description>", "<speaker>S</speaker>",
             '<reviewer href="r">R</reviewer>', "text <url> inside", "Plain text."]
    assert iwslt14.filter_train_tags_lines(lines) == [
        "T: x", "D.", "<speaker>S</speaker>", '<reviewer href="r">R</reviewer>', "Plain text."]
    assert iwslt14.filter_train_tags_lines(lines, drop_extra_meta=True) == ["T: x", "D.",
                                                                            "Plain text."]


def test_xml_segments_are_extracted_and_apostrophes_normalized():
    lines = ['<doc docid="1">', '<seg id="1">  It’s here.  </seg>', "<title>x</title>",
             '<seg id="22">Zwei</seg>  ', '<seg id="3"></seg>']
    assert iwslt14.extract_xml_segments(lines) == ["It's here.", "Zwei", ""]


def test_clean_corpus_ratio_lengths_and_normalization():
    src = ["a b", "a b", "a  b   c ", "", " ".join(["x"] * 175), " ".join(["x"] * 176),
           "y" * 1001, "a|b c"]
    tgt = ["a b c", "a b c d", "a b c", "z", " ".join(["x"] * 175), " ".join(["x"] * 176),
           "y", "d e"]
    kept_src, kept_tgt, kept = iwslt14.clean_corpus(src, tgt, ratio=1.5, min_len=1, max_len=175)
    # 3/2 = 1.5 is not > 1.5 (kept); 4/2 is; empty side; 175 kept, 176 dropped; a 1001-char
    # word is dropped; '|' is deleted when the first pair has none.
    assert kept == [0, 2, 4, 7]
    assert kept_src == ["a b", "a b c", " ".join(["x"] * 175), "ab c"]
    assert kept_tgt == ["a b c", "a b c", " ".join(["x"] * 175), "d e"]
    with pytest.raises(iwslt14.IWSLTFormatError, match="parallel"):
        iwslt14.clean_corpus(["a"], [])


def test_every_23rd_line_goes_to_valid():
    lines = [str(i) for i in range(1, 51)]
    train, valid = iwslt14.split_train_valid(lines)
    assert valid == ["23", "46"]
    assert train == [x for x in lines if x not in ("23", "46")]


def test_bpe_learn_and_apply_roundtrip(tmp_path):
    corpus = tmp_path / "train"
    iwslt14.write_lines(corpus, ["lower lowest newer newest"] * 3 + ["low new wide"] * 2)
    codes = tmp_path / "code"
    iwslt14.learn_joint_bpe([corpus], codes, num_merges=5)
    merges = iwslt14.read_lines(codes)
    assert merges[0].startswith("#version") and 1 <= len(merges) - 1 <= 5
    applied = iwslt14.apply_bpe(["lowest widest", "newer"], codes)
    assert [unbpe(x) for x in applied] == ["lowest widest", "newer"]
    assert "@@ " in applied[0]  # 'widest' is unseen, so it must be split


# ---------------------------------------------------------------------------------------------
# The whole pipeline on the fake archive.


def test_pipeline_intermediate_files(prepared):
    out, expected = prepared
    tmp = out / "tmp"
    assert iwslt14.read_lines(tmp / "train.tags.de-en.de") == [de for de, _ in expected]
    assert iwslt14.read_lines(tmp / "train.tags.de-en.en") == [en for _, en in expected]
    # 2 talks x 4 bad/boundary pairs: 3 dropped each, the 175-token pair kept.
    assert len(iwslt14.read_lines(tmp / "train.tags.de-en.tok.de")) == len(expected) + 6
    for lang, idx in (("de", 0), ("en", 1)):
        cleaned = [pair[idx] for pair in expected]
        assert iwslt14.read_lines(tmp / f"valid.{lang}") == cleaned[22::23]
        assert iwslt14.read_lines(tmp / f"train.{lang}") == [
            x for n, x in enumerate(cleaned, 1) if n % 23]
        assert iwslt14.read_lines(tmp / f"test.{lang}") == expected_test(lang)
    assert iwslt14.read_lines(tmp / "train.en-de") == (iwslt14.read_lines(tmp / "train.de")
                                                       + iwslt14.read_lines(tmp / "train.en"))


def test_pipeline_bpe_outputs(prepared):
    out, _ = prepared
    codes = iwslt14.read_lines(out / "code")
    assert codes[0].startswith("#version") and 1 <= len(codes) - 1 <= 60
    segmentation: dict[str, str] = {}
    for split in ("train", "valid", "test"):
        for lang in ("de", "en"):
            bpe = iwslt14.read_lines(out / f"{split}.{lang}")
            assert [unbpe(x) for x in bpe] == iwslt14.read_lines(out / "tmp" / f"{split}.{lang}")
            for line in bpe:
                for word, pieces in zip(unbpe(line).split(), _words(line)):
                    # one segmentation per word type across all splits
                    assert segmentation.setdefault(word, pieces) == pieces
    assert any("@@" in line for line in iwslt14.read_lines(out / "test.en"))


def _words(bpe_line: str) -> list[str]:
    words, current = [], []
    for piece in bpe_line.split():
        current.append(piece)
        if not piece.endswith("@@"):
            words.append(" ".join(current))
            current = []
    return words


def test_gold_text_is_converted_tokenized_and_bpe_encoded(prepared, tmp_path):
    out, _ = prepared
    gold = tmp_path / "gold_labels"
    gold.mkdir()
    (gold / "de").write_bytes("Das Haus ist grün, sagt Müller.\n".encode("latin-1"))
    (gold / "en").write_bytes("The house's green, says Mr. Müller.\n".encode("latin-1"))
    rc = prepare_iwslt14.main(["--out", str(out), "--gold-dir", str(gold)])
    assert rc == 0
    assert iwslt14.read_lines(gold / "gold.de") == ["Das Haus ist grün, sagt Müller."]
    assert iwslt14.read_lines(gold / "tmp_gold.de") == ["das haus ist grün , sagt müller ."]
    assert iwslt14.read_lines(gold / "tmp_gold.en") == [
        "the house &apos;s green , says mr. müller ."]
    for lang in ("de", "en"):
        bpe = iwslt14.read_lines(gold / f"gold_bpe.{lang}")
        assert [unbpe(x) for x in bpe] == iwslt14.read_lines(gold / f"tmp_gold.{lang}")
        assert bpe == iwslt14.apply_bpe(iwslt14.read_lines(gold / f"tmp_gold.{lang}"), out / "code")


def test_gold_mode_without_codes_fails_clearly(tmp_path, capsys):
    rc = prepare_iwslt14.main(["--out", str(tmp_path / "none"),
                               "--gold-dir", str(tmp_path)])
    assert rc == 2 and "BPE codes" in capsys.readouterr().err


def test_extra_meta_lines_option(archive, tmp_path):
    path, expected = archive
    counts = iwslt14.prepare_iwslt14(path, tmp_path / "out", bpe_merges=20,
                                     drop_extra_meta=True, log=lambda _: None)
    kept = iwslt14.read_lines(tmp_path / "out" / "tmp" / "train.tags.de-en.en")
    assert SPEAKER[1] not in kept
    assert kept == [en for de, en in expected if (de, en) != SPEAKER]
    assert counts["cleaned"] == len(expected) - 2


def test_archive_as_extracted_folder_and_missing_files(archive, tmp_path):
    path, _ = archive
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    files = iwslt14.read_iwslt14_archive(tmp_path / "x")
    assert set(files) == set(iwslt14.archive._required_iwslt_files())
    (tmp_path / "x" / "de-en" / "IWSLT14.TED.tst2012.de-en.en.xml").unlink()
    with pytest.raises(iwslt14.IWSLTFormatError, match=r"missing IWSLT14\.TED\.tst2012\.de-en\.en"):
        iwslt14.read_iwslt14_archive(tmp_path / "x")


def test_offline_download_fails_with_instructions(monkeypatch, tmp_path, capsys):
    def offline(url, timeout=None):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    rc = prepare_iwslt14.main(["--out", str(tmp_path / "out"),
                               "--download-dir", str(tmp_path / "orig")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "Could not download the IWSLT14 de-en archive" in err
    assert "--archive" in err and "Name or service not known" in err
    for url in iwslt14.IWSLT14_URLS:
        assert url in err
    assert not list((tmp_path / "orig").iterdir())  # no partial download left behind
    assert not (tmp_path / "out" / "train.de").exists()


def test_download_rejects_html_and_accepts_a_tarball(monkeypatch, archive, tmp_path):
    tarball = archive[0].read_bytes()
    answers = iter([b"<html>moved</html>", tarball])
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda url, timeout=None: io.BytesIO(next(answers)))
    path = iwslt14.download_iwslt14(tmp_path, log=lambda _: None)
    assert path == tmp_path / "de-en.tgz" and path.read_bytes() == tarball
    monkeypatch.setattr(urllib.request, "urlopen", pytest.fail)  # reused, not downloaded
    assert iwslt14.download_iwslt14(tmp_path, log=lambda _: None) == path


# ---------------------------------------------------------------------------------------------
# Distractors.

SOURCES = [f"q{i} w@@ x{i} ." for i in range(12)]
TARGETS = [" ".join(["t"] * (i + 1)) + f" e{i}" for i in range(12)]


def test_distractors_every_example_with_another():
    examples = distractors.make_distractor_dataset(SOURCES, TARGETS, seed=3)
    assert [e.first_index for e in examples] == list(range(12))
    for e in examples:
        assert e.second_index != e.first_index
        i, j = e.first_index, e.second_index
        assert e.source == SOURCES[i] + " " + SOURCES[j]
        assert e.target == TARGETS[i] + " " + TARGETS[j]
        assert e.source_break == 4 and e.target_break == i + 2
        assert e.source.split()[e.source_break:] == SOURCES[j].split()
        assert e.target.split()[e.target_break:] == TARGETS[j].split()
    assert examples == distractors.make_distractor_dataset(SOURCES, TARGETS, seed=3)
    others = [distractors.make_distractor_dataset(SOURCES, TARGETS, seed=s) for s in range(4, 8)]
    assert any(o != examples for o in others)


def test_distractors_two_examples_always_swap():
    examples = distractors.make_distractor_dataset(["a", "b c"], ["x", "y z"], seed=0)
    assert [(e.first_index, e.second_index) for e in examples] == [(0, 1), (1, 0)]
    assert [(e.source_break, e.target_break) for e in examples] == [(1, 1), (2, 2)]


def test_distractors_original_protocol_matches_numpy():
    examples = distractors.make_distractor_dataset(SOURCES, TARGETS, seed=0, num_pairs=5)
    picked = np.random.RandomState(0).choice(12, 10, replace=False)
    assert [e.first_index for e in examples] == list(picked[:5])
    assert [e.second_index for e in examples] == list(picked[5:])
    used = [e.first_index for e in examples] + [e.second_index for e in examples]
    assert len(set(used)) == 10
    with pytest.raises(ValueError, match="2\\*num_pairs"):
        distractors.make_distractor_dataset(SOURCES, TARGETS, num_pairs=7)
    with pytest.raises(ValueError, match="parallel"):
        distractors.make_distractor_dataset(SOURCES, TARGETS[:-1])


def test_distractor_cli_with_fairseq_generate_log(tmp_path):
    iwslt14.write_lines(tmp_path / "test.de", SOURCES)
    log = ["S-1\tsource", "W-1\t0.1 seconds"]
    log += [f"H-{i}\t-0.{i}\t{TARGETS[i]}" for i in reversed(range(12))]
    log += [f"D-{i}\t-0.{i}\tdetok" for i in range(12)]
    iwslt14.write_lines(tmp_path / "gen.txt", log)
    rc = create_distractor_dataset.main([
        "--source", str(tmp_path / "test.de"), "--translations", str(tmp_path / "gen.txt"),
        "--translations-format", "fairseq-generate", "--out-dir", str(tmp_path / "out"),
        "--num-pairs", "all", "--seed", "1"])
    assert rc == 0
    expected = distractors.make_distractor_dataset(SOURCES, TARGETS, seed=1)
    out = tmp_path / "out"
    assert iwslt14.read_lines(out / "distractors.de") == [e.source for e in expected]
    assert iwslt14.read_lines(out / "distractors.en") == [e.target for e in expected]
    assert iwslt14.read_lines(out / "breaks.en") == [str(e.target_break) for e in expected]
    records = [json.loads(x) for x in iwslt14.read_lines(out / "distractors.jsonl")]
    assert [r["second_index"] for r in records] == [e.second_index for e in expected]


def test_distractor_cli_rejects_mismatched_files(tmp_path, capsys):
    iwslt14.write_lines(tmp_path / "a", ["x", "y", "z"])
    iwslt14.write_lines(tmp_path / "b", ["x", "y"])
    rc = create_distractor_dataset.main([
        "--source", str(tmp_path / "a"), "--translations", str(tmp_path / "b"),
        "--out-dir", str(tmp_path / "out"), "--num-pairs", "1"])
    assert rc == 2 and "3 sentences" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Gold alignments.

SRC_BPE = "das hau@@ s ist gr@@ ü@@ n"  # words: das | haus | ist | grün
TGT_BPE = "the house is gre@@ en"  # words: the | house | is | green


def test_bpe_word_index():
    assert alignments.bpe_word_index(SRC_BPE) == [0, 1, 1, 2, 3, 3, 3]
    assert alignments.bpe_word_index(TGT_BPE) == [0, 1, 2, 3, 3]
    assert alignments.bpe_word_index("") == []


def test_map_alignments_multi_piece_words():
    result = alignments.map_word_alignments_to_bpe(SRC_BPE, TGT_BPE, "0-0 1-1 2?2 3-3")
    sure = {(0, 0), (1, 1), (2, 1), (4, 3), (4, 4), (5, 3), (5, 4), (6, 3), (6, 4)}
    assert result.sure == sure
    assert result.possible == sure | {(3, 2)}
    assert result.source_word_index == (0, 1, 1, 2, 3, 3, 3)
    # pairs are taken as sure; 'p' also marks a possible link
    assert alignments.map_word_alignments_to_bpe(SRC_BPE, TGT_BPE, [(1, 3)]).sure == {
        (1, 3), (1, 4), (2, 3), (2, 4)}
    assert alignments.map_word_alignments_to_bpe(SRC_BPE, TGT_BPE, "2p0").possible == {(3, 0)}
    with pytest.raises(iwslt14.IWSLTFormatError, match="out of range.*4 words"):
        alignments.map_word_alignments_to_bpe(SRC_BPE, TGT_BPE, "4-0")
    with pytest.raises(iwslt14.IWSLTFormatError, match="bad alignment link"):
        alignments.parse_pharaoh_alignment("0:1")


def test_parse_rwth_alignments():
    lines = ["SENT: 0", "S 0 0", "P 1 2", "S 1 1", "", "SENT: 1", "SENT: 2", "S 2 0", ""]
    parsed = alignments.parse_rwth_alignments(lines)
    assert [a.sentence_id for a in parsed] == ["0", "1", "2"]
    assert parsed[0].sure == {(0, 0), (1, 1)}
    assert parsed[0].possible == {(0, 0), (1, 1), (1, 2)}
    assert parsed[1].sure == parsed[1].possible == frozenset()
    assert parsed[2].sure == {(2, 0)}
    assert alignments.parse_rwth_alignments(["SENT: 7", "S 1 1"],
                                            one_based=True)[0].sure == {(0, 0)}
    with pytest.raises(iwslt14.IWSLTFormatError, match="line 2"):
        alignments.parse_rwth_alignments(["SENT: 0", "X 1 2"])


def test_map_alignments_cli(tmp_path):
    iwslt14.write_lines(tmp_path / "gold_bpe.de", [SRC_BPE, "ja"])
    iwslt14.write_lines(tmp_path / "gold_bpe.en", [TGT_BPE, "yes", ""])  # trailing blank ignored
    iwslt14.write_lines(tmp_path / "alignmentDeEn",
                   ["SENT: 0", "S 0 0", "S 3 3", "P 2 2", "SENT: 1", "S 0 0", ""])
    iwslt14.write_lines(tmp_path / "gold.de", ["das haus ist grün", "ja"])
    out = tmp_path / "bpe.jsonl"
    # Run as a script from another folder: the thin entry point works from anywhere.
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / "map_alignments_to_bpe.py"),
         "--source", "gold_bpe.de", "--target", "gold_bpe.en", "--alignments", "alignmentDeEn",
         "--source-words", "gold.de", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in iwslt14.read_lines(out)]
    assert records[0]["sure"] == [[0, 0], [4, 3], [4, 4], [5, 3], [5, 4], [6, 3], [6, 4]]
    assert records[0]["possible"] == sorted(records[0]["sure"] + [[3, 2]])
    assert records[0]["word_possible"] == [[0, 0], [2, 2], [3, 3]]
    assert records[1] == {"index": 1, "sentence_id": "1", "source_word_index": [0],
                          "target_word_index": [0], "sure": [[0, 0]], "possible": [[0, 0]],
                          "word_sure": [[0, 0]], "word_possible": [[0, 0]]}


def test_map_alignments_cli_reports_word_count_mismatch(tmp_path, capsys):
    iwslt14.write_lines(tmp_path / "s", [SRC_BPE])
    iwslt14.write_lines(tmp_path / "t", [TGT_BPE])
    iwslt14.write_lines(tmp_path / "a", ["0-0"])
    iwslt14.write_lines(tmp_path / "w", ["das haus ist grün ."])
    rc = map_alignments_to_bpe.main([
        "--source", str(tmp_path / "s"), "--target", str(tmp_path / "t"),
        "--alignments", str(tmp_path / "a"), "--source-words", str(tmp_path / "w"),
        "--out", str(tmp_path / "o.jsonl")])
    assert rc == 2
    assert "sentence 1" in capsys.readouterr().err and not (tmp_path / "o.jsonl").exists()
