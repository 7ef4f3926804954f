"""Table 4: do the source parts of rationales find the gold word alignments?

Reads the logs of ``fairseq/rationalize_iwslt.py --task alignments`` (one JSON per example,
``<results_dir>/<method>/<index>.json``; ``--top_1`` runs in ``<method>_top_1``) and the gold
links of ``fairseq/map_alignments_to_bpe.py`` (JSONL: per sentence the word of each BPE piece
and the sure / possible piece links; possible includes sure).

Metrics are per target **word**: its rationale is the union of its pieces' source rationales
(the source ``</s>`` is never part of one), its gold set the source pieces linked to any of
its pieces. Words without any gold link are skipped. Per method: **Length** (source tokens in
the rationale), **AER** (``1 - (|A∩P| + |A∩S|) / (|S| + |A|)``, mean over words; the pooled
corpus value is in the CSV/JSON as ``AER (corpus)``), **IOU**, **F1** (over all (target word,
source position) pairs), and with ``--top_1`` **Top1** (the first source token added is
aligned), read from the ``<method>_top_1`` runs.

    python analysis/evaluate_alignment_rationales.py --baseline gradient_norm --top_1 \
        --alignments data/iwslt14.tokenized.de-en/gold_labels/bpe_alignments.jsonl
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.evaluate_alignment_rationales import main

if __name__ == "__main__":
    run_program(main)
