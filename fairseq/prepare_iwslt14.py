"""Prepare IWSLT14 De-En like fairseq's examples/translation/prepare-iwslt14.sh, without perl.

Downloads ``de-en.tgz`` (or reads ``--archive``), then tokenizes (Moses rules via sacremoses),
cleans (ratio 1.5, 1-175 tokens), lowercases, splits every 23rd training line off as valid,
builds test from dev2010 + TEDX.dev2012 + tst2010-2012, learns joint BPE (10,000 merges) and
applies it. Output: ``OUT/{train,valid,test}.{de,en}`` and ``OUT/code`` (intermediate files in
``OUT/tmp``), ready for::

    fairseq-preprocess --source-lang de --target-lang en \\
        --trainpref OUT/train --validpref OUT/valid --testpref OUT/test \\
        --destdir data-bin/iwslt14.tokenized.de-en --workers 20

``--gold-dir DIR`` instead encodes the RWTH gold alignment text with ``OUT/code``: ``DIR/de``
and ``DIR/en`` (ISO-8859-1, converted to ``gold.de``/``gold.en`` unless those exist) are
tokenized and lowercased into ``tmp_gold.*`` and BPE'd into ``gold_bpe.*``.

Run from the repository root: ``python fairseq/prepare_iwslt14.py [--archive de-en.tgz]``.
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.prepare_iwslt14 import main

if __name__ == "__main__":
    run_program(main)
