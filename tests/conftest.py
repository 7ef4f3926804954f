"""Tiny models shared by the tests: random-init GPT-2 / Llama, a toy encoder-decoder and a
fairseq translation checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from sequential_rationales import AttentionMaps, Embeddings, SubsetBatch

VOCAB = 12


@pytest.fixture(scope="session")
def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=32,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="session")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=64, vocab_size=VOCAB,
                         max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    return LlamaForCausalLM(config).eval()


class ToySeq2Seq(nn.Module):
    """One encoder layer, one decoder layer (self + cross attention), learned positions.

    Its adapter methods take explicit positions, so sparse subsets are evaluated exactly.
    """

    is_conditional = True

    def __init__(self, vocab: int = VOCAB, dim: int = 16, heads: int = 2, max_len: int = 32):
        super().__init__()
        self.vocab_size, self.max_positions, self.device = vocab, max_len, torch.device("cpu")
        self.src_embed = nn.Embedding(vocab, dim)
        self.tgt_embed = nn.Embedding(vocab, dim)
        self.src_pos = nn.Embedding(max_len, dim)
        self.tgt_pos = nn.Embedding(max_len, dim)
        self.enc = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dec_self = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.dec_cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, vocab)

    def _run(self, batch: SubsetBatch, emb: Embeddings, need_weights: bool = False):
        src = emb.source + self.src_pos(batch.source_positions)
        tgt = emb.target + self.tgt_pos(batch.target_positions)
        src_pad = ~batch.source_mask
        # A row without source tokens attends to one zero "null" key instead of nothing.
        empty = src_pad.all(-1)
        src_pad = src_pad.clone()
        src_pad[empty, 0] = False
        src = src.masked_fill(empty[:, None, None], 0.0)
        enc, enc_w = self.enc(src, src, src, key_padding_mask=src_pad,
                              need_weights=need_weights, average_attn_weights=False)
        enc = src + enc
        lt = tgt.shape[1]
        eye = torch.eye(lt, dtype=torch.bool)
        allowed = (batch.target_mask[:, None, :] | eye) & torch.ones(lt, lt).tril().bool()
        blocked = (~allowed).repeat_interleave(self.dec_self.num_heads, 0)
        h, self_w = self.dec_self(tgt, tgt, tgt, attn_mask=blocked, need_weights=need_weights,
                                  average_attn_weights=False)
        h = tgt + h
        c, cross_w = self.dec_cross(h, enc, enc, key_padding_mask=src_pad,
                                    need_weights=need_weights, average_attn_weights=False)
        h = h + c
        return self.out(h[:, -1]), enc_w, self_w, cross_w

    def embed(self, batch: SubsetBatch) -> Embeddings:
        return Embeddings(self.tgt_embed(batch.target_ids), self.src_embed(batch.source_ids))

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        logits = self._run(batch, embeddings or self.embed(batch))[0]
        return torch.log_softmax(logits, -1)

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        _, enc_w, self_w, cross_w = self._run(batch, self.embed(batch), need_weights=True)
        return AttentionMaps(self_w[0][None], cross_w[0][None], enc_w[0][None])


@pytest.fixture(scope="session")
def toy_seq2seq():
    torch.manual_seed(2)
    return ToySeq2Seq().eval()


@pytest.fixture(scope="session")
def translation_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A plugin ``compatible_transformer`` trained for one update by the real fairseq CLIs."""
    pytest.importorskip("fairseq")
    from .fairseq_helpers import PLUGIN_DIR, run_cli, write_translation_corpus

    root = tmp_path_factory.mktemp("translation")
    write_translation_corpus(root / "text", sizes=(("train", 40), ("valid", 4)))
    run_cli("fairseq-preprocess", "--source-lang", "src", "--target-lang", "tgt",
            "--trainpref", root / "text/train", "--validpref", root / "text/valid",
            "--destdir", root / "data-bin", "--workers", "1")
    run_cli("fairseq-train", root / "data-bin", "--user-dir", PLUGIN_DIR, "--arch",
            "compatible_transformer", "--encoder-layers", "1", "--decoder-layers", "1",
            "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
            "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32",
            "--encoder-attention-heads", "2", "--decoder-attention-heads", "2",
            "--optimizer", "adam", "--lr", "1e-3", "--max-update", "1", "--max-tokens", "256",
            "--save-dir", root / "checkpoints", "--cpu", "--no-progress-bar", "--num-workers",
            "0", "--seed", "1", "--no-epoch-checkpoints", "--disable-validation")
    return root / "checkpoints", root / "data-bin"
