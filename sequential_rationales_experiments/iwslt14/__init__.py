"""IWSLT14 De-En preparation that reproduces fairseq's ``examples/translation/prepare-iwslt14.sh``
in pure Python, without perl or a mosesdecoder checkout.

* train: from ``train.tags.de-en.{de,en}`` drop every line that *contains* ``<url>``,
  ``<talkid>`` or ``<keywords>`` (``grep -v``), delete the ``<title>``/``</title>``/
  ``<description>``/``</description>`` tags but keep their text (``sed``), tokenize, clean
  (``clean-corpus-n.perl -ratio 1.5 ... 1 175``), lowercase;
* valid = every 23rd line of the cleaned train data (``awk 'NR%23 == 0'``), train = the rest;
* test = the ``<seg id=...>`` text of ``IWSLT14.TED.dev2010``, ``IWSLT14.TEDX.dev2012``,
  ``IWSLT14.TED.tst2010``, ``tst2011``, ``tst2012`` in that order (the order of the script's
  ``cat``), with ``’`` replaced by ``'`` before tokenizing, then lowercased (never cleaned);
* joint BPE: ``learn_bpe`` with 10,000 merges on ``train.de`` followed by ``train.en``, then
  ``apply_bpe`` to every split.

Tokenization uses ``sacremoses.MosesTokenizer`` with the defaults of
``tokenizer.perl -threads 8 -l LANG``: HTML escaping **on** (``'`` -> ``&apos;``, ``"`` ->
``&quot;``, ...; the fairseq IWSLT14 data famously contains ``&apos;``), aggressive hyphen
splitting **off** (no ``-a``), no protected patterns, the language's non-breaking prefixes,
and XML-looking lines tokenized like any other (``-x`` is not given). One rule is added to
sacremoses: since mosesdecoder PR #204 (2018), which the script's ``git clone`` gets,
tokenizer.perl always splits the period of the *last* word (``"So am I."`` ->
``"So am I ."``) while sacremoses keeps it after non-breaking prefixes. Whitespace-only
lines become empty lines. Lowercasing is ``str.lower`` (``lowercase.perl`` is perl's ``lc``).

The script keeps lines such as ``<speaker>...</speaker>`` or ``<reviewer ...>`` if an
archive has them (it only filters url/talkid/keywords); ``drop_extra_meta=True`` also drops
lines starting with ``<speaker``, ``<reviewer``, ``<translator``, ``<doc`` or ``</doc``
(what fairseq's IWSLT17 scripts do). It is off by default because any extra dropped line
shifts the every-23rd-line valid split away from the data the paper used.

Modules, one per concern: :mod:`.lines` (line I/O and the tag/XML filters), :mod:`.moses`
(tokenize, lowercase, clean, split), :mod:`.bpe` (learn/apply), :mod:`.archive` (download,
md5, reading the archive) and :mod:`.prepare` (the whole pipeline, the gold text). Only the
standard library is imported at module level; ``sacremoses`` and ``subword_nmt`` are imported
inside the functions that need them.
"""

from .archive import (
    ARCHIVE_NAME,
    IWSLT14_TEST_SETS,
    IWSLT14_URLS,
    PAIR,
    SRC,
    TGT,
    DownloadError,
    download_iwslt14,
    read_iwslt14_archive,
)
from .bpe import apply_bpe, learn_joint_bpe
from .lines import (
    IWSLTFormatError,
    decode_lines,
    extract_xml_segments,
    filter_train_tags_lines,
    read_lines,
    write_lines,
)
from .moses import clean_corpus, lowercase, moses_tokenize, split_train_valid
from .prepare import encode_gold, prepare_iwslt14

__all__ = [
    "ARCHIVE_NAME", "DownloadError", "IWSLT14_TEST_SETS", "IWSLT14_URLS", "IWSLTFormatError",
    "PAIR", "SRC", "TGT", "apply_bpe", "clean_corpus", "decode_lines", "download_iwslt14",
    "encode_gold", "extract_xml_segments", "filter_train_tags_lines", "learn_joint_bpe",
    "lowercase", "moses_tokenize", "prepare_iwslt14", "read_iwslt14_archive", "read_lines",
    "split_train_valid", "write_lines",
]
