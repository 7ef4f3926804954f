"""Map gold word alignments to BPE pieces for the paper's Table 4 (IWSLT14, Section 8.2).

Inputs: the BPE'd gold source/target text (``gold_bpe.de`` / ``gold_bpe.en``, one sentence per
line, ``@@`` continuation marker) and the word alignment file: RWTH's ``alignmentDeEn``
(``SENT: n`` blocks of ``S i j`` / ``P i j`` lines, German position first, 0-based) or Pharaoh
lines (``i-j`` sure, ``i?j`` / ``ipj`` possible). Output: JSONL, one object per sentence::

    {"index": 0, "sentence_id": "0",
     "source_word_index": [...], "target_word_index": [...],   # word of each BPE piece
     "sure": [[src_piece, tgt_piece], ...],                    # BPE-level sure links
     "possible": [[src_piece, tgt_piece], ...],                # BPE-level, includes sure
     "word_sure": [[src_word, tgt_word], ...], "word_possible": [...]}

Piece positions are 0-based over the BPE tokens of the line (fairseq's ``</s>`` excluded).
Example::

    python fairseq/map_alignments_to_bpe.py \\
        --source data/iwslt14.tokenized.de-en/gold_labels/gold_bpe.de \\
        --target data/iwslt14.tokenized.de-en/gold_labels/gold_bpe.en \\
        --alignments data/iwslt14.tokenized.de-en/gold_labels/alignmentDeEn \\
        --out data/iwslt14.tokenized.de-en/gold_labels/bpe_alignments.jsonl
"""

from sequential_rationales_experiments.cli import run_program
from sequential_rationales_experiments.commands.map_alignments_to_bpe import main

if __name__ == "__main__":
    run_program(main)
