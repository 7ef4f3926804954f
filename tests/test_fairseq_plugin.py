"""In-process tests of the fairseq plugin: registrations, sparse == masked evaluation, word
dropout in training, attention maps, the empty-source rule, checkpoints."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fairseq")

from fairseq.models import ARCH_MODEL_REGISTRY  # noqa: E402
from fairseq.models.transformer import TransformerModel  # noqa: E402
from fairseq.models.transformer_lm import TransformerLanguageModel  # noqa: E402

from sequential_rationales.word_dropout import WordDropout  # noqa: E402
from sequential_rationales_integrations.fairseq import (  # noqa: E402
    CompatibleTransformerLanguageModel,
    CompatibleTransformerModel,
    compatible_transformer_iwslt_de_en,
    load_hub_model,
    read_checkpoint,
    transformer_lm_majority_class,
    word_dropout_from_cfg,
)
from sequential_rationales_integrations.fairseq.checkpoints import (  # noqa: E402
    FAIRSEQ_CHECKPOINT_GLOBALS,
    allow_fairseq_globals,
)
from sequential_rationales_integrations.fairseq.models import last_token_mask  # noqa: E402

from .fairseq_helpers import REPO_ROOT, random_tokens, tiny_lm, tiny_translation  # noqa: E402

ATOL = 1e-5


def _pack(rows: list[torch.Tensor], pad: int, positions: list[list[int]]):
    """Left-pad token rows into ``[B, L]`` with their original positions."""
    length = max(1, max(len(r) for r in rows))
    tokens = torch.full((len(rows), length), pad, dtype=torch.long)
    pos = torch.zeros(len(rows), length, dtype=torch.long)
    for i, (row, p) in enumerate(zip(rows, positions)):
        if len(row):
            tokens[i, length - len(row):] = row
            pos[i, length - len(row):] = torch.tensor(p)
    return tokens, pos


def _indicator(subsets: list[list[int]], length: int) -> torch.Tensor:
    keep = torch.zeros(len(subsets), length, dtype=torch.bool)
    for i, s in enumerate(subsets):
        keep[i, s] = True
    return keep


def _last_log_probs(out: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(out[:, -1].double(), dim=-1)


# --- registration and options -----------------------------------------------------------------


def test_core_package_does_not_import_fairseq():
    code = ("import sys, sequential_rationales; "
            "assert 'fairseq' not in sys.modules, 'core imported fairseq'; "
            "assert 'sequential_rationales_integrations.fairseq' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


def test_user_dir_folder_never_shadows_the_installed_fairseq():
    import fairseq

    assert not (REPO_ROOT / "fairseq" / "__init__.py").exists()
    assert REPO_ROOT / "fairseq" not in Path(fairseq.__file__).resolve().parents


def test_architectures_are_registered_with_their_sizes():
    assert ARCH_MODEL_REGISTRY["transformer_lm_majority_class"] is \
        CompatibleTransformerLanguageModel
    for arch in ("compatible_transformer", "compatible_transformer_iwslt_de_en"):
        assert ARCH_MODEL_REGISTRY[arch] is CompatibleTransformerModel
    args = argparse.Namespace()
    transformer_lm_majority_class(args)
    assert (args.decoder_layers, args.decoder_embed_dim, args.decoder_ffn_embed_dim,
            args.decoder_attention_heads) == (4, 64, 256, 2)
    assert args.decoder_normalize_before and not args.decoder_learned_pos  # transformer_lm
    assert args.word_dropout_mixture == 0.0 and args.word_dropout_type == "uniform_length"
    args = argparse.Namespace()
    compatible_transformer_iwslt_de_en(args)
    assert (args.encoder_ffn_embed_dim, args.encoder_attention_heads) == (1024, 4)


@pytest.mark.parametrize("options, flag", [
    ({"word_dropout_mixture": 1.5}, "--word-dropout-mixture"),
    ({"word_dropout_mixture": -0.1}, "--word-dropout-mixture"),
    ({"word_dropout_type": "bogus"}, "--word-dropout-type"),
    ({"word_dropout_per_head": True, "word_dropout_per_example": True},
     "--word-dropout-per-example"),
])
def test_bad_word_dropout_options_name_the_flag(options, flag):
    with pytest.raises(ValueError, match=flag):
        word_dropout_from_cfg(argparse.Namespace(**options))
    with pytest.raises(ValueError, match=flag):  # build_model fails before building
        tiny_lm(**options)


@pytest.mark.parametrize("kind, per_head, per_example, expected", [
    ("inverse_length", False, False, True),  # the paper's per-head default
    ("inverse_length", False, True, False),
    ("uniform_length", False, False, False),
    ("uniform_length", True, False, True),
])
def test_per_head_default_follows_the_type(kind, per_head, per_example, expected):
    wd = word_dropout_from_cfg(argparse.Namespace(
        word_dropout_mixture=0.5, word_dropout_type=kind, word_dropout_per_head=per_head,
        word_dropout_per_example=per_example))
    assert wd.independent_heads is expected and wd.mixture == 0.5 and wd.kind == kind


def test_no_parameters_added_to_stock_models():
    model, args, task = tiny_translation()
    stock = TransformerModel.build_model(args, task)
    assert model.state_dict().keys() == stock.state_dict().keys()
    stock.load_state_dict(model.state_dict())  # strict both ways
    model.load_state_dict(stock.state_dict())
    lm, lm_args, lm_task = tiny_lm()
    stock_lm = TransformerLanguageModel.build_model(lm_args, lm_task)
    assert lm.state_dict().keys() == stock_lm.state_dict().keys()


# --- sparse evaluation with original positions == masked full evaluation ----------------------


@pytest.mark.parametrize("learned_pos", [False, True])
def test_lm_sparse_subsets_equal_masked_full_sequence(learned_pos):
    model, _, _ = tiny_lm(learned_pos, heads=2, layers=3)
    pad = model.decoder.padding_idx
    g = torch.Generator().manual_seed(1)
    length = 10
    full = random_tokens(4, length, g)
    subsets = [[0, 2, 5, 9], [4, 9], [9], list(range(length))]
    with torch.no_grad():
        masked = _last_log_probs(model.decoder(full, keep=_indicator(subsets, length))[0])
        tokens, pos = _pack([full[i, s] for i, s in enumerate(subsets)], pad, subsets)
        sparse = _last_log_probs(model.decoder(tokens, positions=pos)[0])
        sparse_keep = _last_log_probs(model.decoder(tokens, positions=pos,
                                                    keep=tokens.ne(pad))[0])
        alone = _last_log_probs(model.decoder(tokens[1:2, -2:], positions=pos[1:2, -2:])[0])
        unmasked = _last_log_probs(model.decoder(full)[0])
    torch.testing.assert_close(sparse, masked, atol=ATOL, rtol=0)
    torch.testing.assert_close(sparse_keep, masked, atol=ATOL, rtol=0)
    torch.testing.assert_close(alone, masked[1:2], atol=ATOL, rtol=0)  # batch-independent
    torch.testing.assert_close(masked[3], unmasked[3], atol=ATOL, rtol=0)  # keep-all == stock
    assert (masked[0] - unmasked[0]).abs().max() > 1e-3  # the mask matters


@pytest.mark.parametrize("learned_pos", [False, True])
def test_lm_original_positions_match_stock_numbering(learned_pos):
    """Positions 0..k given explicitly == fairseq's own numbering of a k+1 prefix, also when the
    row is left-padded (independent check of the padding_idx + 1 offset)."""
    model, args, task = tiny_lm(learned_pos)
    stock = TransformerLanguageModel.build_model(args, task).eval()
    stock.load_state_dict(model.state_dict())
    pad = model.decoder.padding_idx
    prefix = random_tokens(1, 6, torch.Generator().manual_seed(2))
    padded = torch.cat([torch.full((1, 3), pad), prefix], 1)
    pos = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.arange(6)[None]], 1)
    with torch.no_grad():
        reference = stock(prefix)[0][:, -1]
        mine = model.decoder(padded, positions=pos)[0][:, -1]
        shifted = model.decoder(prefix, positions=torch.arange(6)[None] + 1)[0][:, -1]
    torch.testing.assert_close(mine, reference, atol=ATOL, rtol=0)
    assert (shifted - reference).abs().max() > 1e-4  # positions are really used


@pytest.mark.parametrize("learned_pos", [False, True])
@pytest.mark.parametrize("normalize_before", [False, True])
def test_translation_sparse_subsets_equal_masked_full_pair(learned_pos, normalize_before):
    model, _, _ = tiny_translation(learned_pos, enc_heads=4, dec_heads=2,
                                   normalize_before=normalize_before)
    src_pad, tgt_pad = model.encoder.padding_idx, model.decoder.padding_idx
    g = torch.Generator().manual_seed(3)
    src_len, tgt_len = 8, 7
    src, tgt = random_tokens(4, src_len, g), random_tokens(4, tgt_len, g)
    src_sets = [[1, 4, 7], [], [7], list(range(src_len))]  # [] = empty source
    tgt_sets = [[2, 6], [6], [0, 3, 4, 6], list(range(tgt_len))]
    kx, ky = _indicator(src_sets, src_len), _indicator(tgt_sets, tgt_len)
    with torch.no_grad():
        enc = model.encoder(src, keep=kx)
        masked = _last_log_probs(model.decoder(tgt, encoder_out=enc, keep=ky,
                                               source_keep=kx)[0])
        s_tok, s_pos = _pack([src[i, s] for i, s in enumerate(src_sets)], src_pad, src_sets)
        t_tok, t_pos = _pack([tgt[i, s] for i, s in enumerate(tgt_sets)], tgt_pad, tgt_sets)
        enc_sparse = model.encoder(s_tok, positions=s_pos)
        sparse = _last_log_probs(model.decoder(t_tok, encoder_out=enc_sparse, positions=t_pos,
                                               keep=t_tok.ne(tgt_pad))[0])
        full = _last_log_probs(model.decoder(tgt, encoder_out=model.encoder(src))[0])
    assert torch.isfinite(sparse).all()
    torch.testing.assert_close(sparse, masked, atol=ATOL, rtol=0)
    torch.testing.assert_close(masked[3], full[3], atol=ATOL, rtol=0)
    assert (masked[0] - full[0]).abs().max() > 1e-3


def test_translation_prefixes_match_stock_model():
    """Sparse prefixes at positions 0..k == the stock fairseq model on the truncated pair."""
    model, args, task = tiny_translation(learned_pos=True)
    stock = TransformerModel.build_model(args, task).eval()
    stock.load_state_dict(model.state_dict())
    g = torch.Generator().manual_seed(4)
    src, tgt = random_tokens(1, 5, g), random_tokens(1, 4, g)
    pad = model.encoder.padding_idx
    s_tok = torch.cat([torch.full((1, 2), pad), src], 1)  # left-padded, fairseq-style
    s_pos = torch.cat([torch.zeros(1, 2, dtype=torch.long), torch.arange(5)[None]], 1)
    with torch.no_grad():
        reference = stock(src, torch.tensor([5]), tgt)[0][:, -1]
        enc = model.encoder(s_tok, positions=s_pos)
        mine = model.decoder(tgt, encoder_out=enc, positions=torch.arange(4)[None])[0][:, -1]
    torch.testing.assert_close(mine, reference, atol=ATOL, rtol=0)


def test_per_head_keep_with_equal_heads_equals_per_example_keep():
    model, _, _ = tiny_translation(enc_heads=2, dec_heads=2)
    g = torch.Generator().manual_seed(5)
    src, tgt = random_tokens(2, 6, g), random_tokens(2, 5, g)
    kx = torch.rand(2, 6, generator=g) < 0.5
    kx[:, -1] = True
    ky = torch.rand(2, 5, generator=g) < 0.5
    with torch.no_grad():
        a = model.decoder(tgt, encoder_out=model.encoder(src, keep=kx), keep=ky,
                          source_keep=kx)[0]
        kx_h, ky_h = kx[:, None].expand(-1, 2, -1), ky[:, None].expand(-1, 2, -1)
        b = model.decoder(tgt, encoder_out=model.encoder(src, keep=kx_h), keep=ky_h,
                          source_keep=kx_h)[0]
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


# --- stock behaviour without word dropout -------------------------------------------------------


def test_mixture_zero_trains_exactly_like_stock_models():
    lm, lm_args, lm_task = tiny_lm()
    stock_lm = TransformerLanguageModel.build_model(lm_args, lm_task)
    stock_lm.load_state_dict(lm.state_dict())
    g = torch.Generator().manual_seed(6)
    tokens = random_tokens(3, 9, g)
    tokens[0, 6:] = lm.decoder.padding_idx  # right padding, as in fairseq batches
    lm.train(), stock_lm.train()
    torch.testing.assert_close(lm(tokens)[0], stock_lm(tokens)[0], atol=0, rtol=0)

    model, args, task = tiny_translation()
    stock = TransformerModel.build_model(args, task)
    stock.load_state_dict(model.state_dict())
    src, prev = random_tokens(3, 6, g), random_tokens(3, 5, g)
    src[1, :2] = model.encoder.padding_idx  # fairseq left-pads sources
    prev[2, 3:] = model.decoder.padding_idx
    model.train(), stock.train()
    lengths = src.ne(model.encoder.padding_idx).sum(1)
    torch.testing.assert_close(model(src, lengths, prev)[0], stock(src, lengths, prev)[0],
                               atol=0, rtol=0)


def test_evaluation_never_drops_words():
    model, _, _ = tiny_translation(word_dropout_mixture=1.0,
                                   word_dropout_type="inverse_length")
    g = torch.Generator().manual_seed(7)
    src, prev = random_tokens(2, 6, g), random_tokens(2, 5, g)
    lengths = torch.tensor([6, 6])
    with torch.no_grad():
        a, b = model(src, lengths, prev)[0], model(src, lengths, prev)[0]
        plain = model.decoder(prev, encoder_out=model.encoder(src))[0]
    torch.testing.assert_close(a, plain, atol=0, rtol=0)
    torch.testing.assert_close(b, plain, atol=0, rtol=0)


# --- word dropout in training -------------------------------------------------------------------


def _capture_kwargs(module, store: list):
    return module.register_forward_pre_hook(
        lambda _m, _args, kwargs: store.append(kwargs), with_kwargs=True)


def test_lm_word_dropout_masks_are_applied_in_training():
    model, _, _ = tiny_lm(word_dropout_mixture=1.0, word_dropout_type="uniform_length")
    g = torch.Generator().manual_seed(8)
    tokens = random_tokens(8, 12, g)
    tokens[0, 9:] = model.decoder.padding_idx
    seen: list = []
    hook = _capture_kwargs(model.decoder, seen)
    model.train()
    torch.manual_seed(123)
    trained = model(tokens)[0]
    hook.remove()
    keep = seen[0]["keep"]
    assert keep.shape == tokens.shape  # uniform_length: one keep-set per example
    assert not keep[0, 9:].any()  # padding is never kept
    # The same draw, reproduced from the same seed, explains the training output exactly.
    torch.manual_seed(123)
    redrawn = model.word_dropout.sample_keep(tokens.ne(model.decoder.padding_idx), 2)
    assert torch.equal(redrawn, keep)
    model.eval()
    with torch.no_grad():
        masked = model(tokens, keep=keep)[0]
        full = model(tokens)[0]
    torch.testing.assert_close(trained.detach(), masked, atol=ATOL, rtol=0)
    assert (trained.detach() - full).abs().max() > 1e-3


def test_translation_word_dropout_per_head_keeps_source_eos():
    model, _, _ = tiny_translation(enc_heads=4, dec_heads=2, word_dropout_mixture=1.0,
                                   word_dropout_type="inverse_length")
    assert model.word_dropout.independent_heads
    g = torch.Generator().manual_seed(9)
    src, prev = random_tokens(6, 9, g), random_tokens(6, 7, g)
    src[0, :3] = model.encoder.padding_idx
    prev[1, 5:] = model.decoder.padding_idx
    lengths = src.ne(model.encoder.padding_idx).sum(1)
    enc_seen: list = []
    dec_seen: list = []
    hooks = [_capture_kwargs(model.encoder, enc_seen), _capture_kwargs(model.decoder, dec_seen)]
    model.train()
    torch.manual_seed(321)
    trained = model(src, lengths, prev)[0]
    for hook in hooks:
        hook.remove()
    src_keep, tgt_keep = enc_seen[0]["keep"], dec_seen[0]["keep"]
    assert dec_seen[0]["source_keep"] is src_keep  # one source draw for encoder and cross
    assert src_keep.shape == (6, 4, 9) and tgt_keep.shape == (6, 2, 7)  # per head
    assert src_keep[:, :, -1].all()  # the source </s> (last token) is never dropped
    assert not src_keep[0, :, :3].any() and not tgt_keep[1, :, 5:].any()
    assert (src_keep[:, 0] != src_keep[:, 1]).any()  # heads draw independently
    model.eval()
    with torch.no_grad():
        masked = model.decoder(prev, encoder_out=model.encoder(src, keep=src_keep),
                               keep=tgt_keep, source_keep=src_keep)[0]
    torch.testing.assert_close(trained.detach(), masked, atol=ATOL, rtol=0)


def test_word_dropout_is_deterministic_under_the_seed_and_follows_the_mixture():
    model, _, _ = tiny_translation(word_dropout_mixture=0.5, word_dropout_type="inverse_length")
    model.train()
    g = torch.Generator().manual_seed(10)
    src, prev = random_tokens(2, 6, g), random_tokens(2, 5, g)
    lengths = torch.tensor([6, 6])
    outs = []
    for _ in range(2):
        torch.manual_seed(5)
        outs.append(model(src, lengths, prev)[0].detach())
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
    seen: list = []
    hook = _capture_kwargs(model.encoder, seen)
    torch.manual_seed(0)
    with torch.no_grad():
        for _ in range(200):
            model(src, lengths, prev)
    hook.remove()
    dropped = sum(kwargs["keep"] is not None for kwargs in seen)
    assert 60 <= dropped <= 140  # Binomial(200, 0.5): mean 100, sd ~7


def test_last_token_mask_finds_the_source_eos_on_either_side():
    valid = torch.tensor([[False, False, True, True], [True, True, True, False],
                          [False, False, False, False]])
    expected = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(last_token_mask(valid), expected)


# --- attention maps and the empty source --------------------------------------------------------


def test_all_attentions_are_per_head_probabilities_respecting_the_masks():
    model, _, _ = tiny_translation(enc_heads=4, dec_heads=2)
    g = torch.Generator().manual_seed(11)
    src, tgt = random_tokens(2, 6, g), random_tokens(2, 5, g)
    kx = torch.tensor([[1, 0, 1, 0, 0, 1], [0, 1, 1, 1, 0, 1]], dtype=torch.bool)
    ky = torch.tensor([[1, 0, 1, 0, 1], [0, 1, 1, 0, 1]], dtype=torch.bool)
    with torch.no_grad():
        enc = model.encoder(src, keep=kx, return_all_attentions=True)
        _, extra = model.decoder(tgt, encoder_out=enc, keep=ky, source_keep=kx,
                                 return_all_attentions=True)
    assert len(enc["self_attns"]) == 2 and enc["self_attns"][0].shape == (2, 4, 6, 6)
    assert extra["self_attns"][0].shape == (2, 2, 5, 5)
    assert extra["cross_attns"][1].shape == (2, 2, 5, 6)
    for maps in (enc["self_attns"], extra["self_attns"], extra["cross_attns"]):
        for m in maps:
            torch.testing.assert_close(m.sum(-1), torch.ones_like(m.sum(-1)))
    eye5 = torch.eye(5, dtype=torch.bool)
    hidden_self = ~(ky[:, None, None, :] | eye5) | ~torch.ones(5, 5).tril().bool()
    assert (extra["self_attns"][0].masked_select(hidden_self.expand(-1, 2, -1, -1)) == 0).all()
    assert (extra["cross_attns"][0].masked_select(~kx[:, None, None, :].expand(-1, 2, 5, -1))
            == 0).all()
    # fairseq's alignment output: head mean of the last layer's cross-attention
    torch.testing.assert_close(extra["attn"][0], extra["cross_attns"][-1].mean(1))
    lm, _, _ = tiny_lm()
    _, lm_extra = lm.decoder(random_tokens(1, 4, g), return_all_attentions=True)
    assert lm_extra["cross_attns"] == [] and lm_extra["self_attns"][0].shape == (1, 2, 4, 4)


def test_empty_source_contributes_nothing_and_stays_finite():
    model, _, _ = tiny_translation(normalize_before=True)
    pad = model.encoder.padding_idx
    g = torch.Generator().manual_seed(12)
    tgt = random_tokens(2, 4, g)
    empty_src = torch.full((2, 3), pad)
    empty_src[1] = random_tokens(1, 3, g)  # row 0 has no source token at all
    emb = model.decoder.embed_tokens(tgt).detach().requires_grad_(True)
    enc = model.encoder(empty_src)
    out, extra = model.decoder(tgt, encoder_out=enc, token_embeddings=emb,
                               return_all_attentions=True)
    out[:, -1].logsumexp(-1).sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(emb.grad).all()
    assert (extra["cross_attns"][0][0] == 0).all()
    # Row 0 ignores whatever the encoder put at its (padded) positions.
    other = {k: list(v) for k, v in enc.items()}
    other["encoder_out"] = [enc["encoder_out"][0] + 5.0]
    with torch.no_grad():
        again = model.decoder(tgt, encoder_out=other, token_embeddings=emb)[0]
    torch.testing.assert_close(again[0], out[0].detach(), atol=ATOL, rtol=0)
    # and equals hiding every source token of a real source with source_keep
    with torch.no_grad():
        hidden = model.decoder(tgt, encoder_out=model.encoder(empty_src[1:].repeat(2, 1)),
                               token_embeddings=emb,
                               source_keep=torch.zeros(2, 3, dtype=torch.bool))[0]
    torch.testing.assert_close(hidden[0], out[0].detach(), atol=ATOL, rtol=0)


def test_bad_extra_arguments_raise_clear_errors():
    model, _, _ = tiny_lm(learned_pos=True)
    tokens = random_tokens(1, 4, torch.Generator().manual_seed(13))
    with pytest.raises(ValueError, match=">= 0"):
        model.decoder(tokens, positions=torch.tensor([[0, 1, -1, 3]]))
    with pytest.raises(ValueError, match="learned positions"):
        model.decoder(tokens, positions=torch.tensor([[0, 1, 2, 500]]))
    with pytest.raises(ValueError, match="shape"):
        model.decoder(tokens, positions=torch.arange(3)[None])
    with pytest.raises(TypeError, match="bool"):
        model.decoder(tokens, keep=torch.ones(1, 4))
    with pytest.raises(ValueError, match="non-incremental"):
        model.decoder(tokens, incremental_state={}, keep=torch.ones(1, 4, dtype=torch.bool))
    mt, _, _ = tiny_translation()
    enc = mt.encoder(tokens)
    one_head_empty = torch.tensor([[[True, False, False, False], [False] * 4]])
    with pytest.raises(ValueError, match="head without any visible source"):
        mt.decoder(tokens, encoder_out=enc, source_keep=one_head_empty)


# --- checkpoints -------------------------------------------------------------------------------


def test_fairseq_checkpoint_globals_load_safely_and_others_do_not(tmp_path):
    path = tmp_path / "state.pt"
    torch.save({"args": argparse.Namespace(arch="transformer"),
                "metrics": np.array([3, 2, 1, 0], dtype=np.int64)}, path)
    allow_fairseq_globals()  # done at import; again here, as another test may have removed them
    state = torch.load(path)  # weights_only=True is torch's default
    assert state["args"].arch == "transformer" and state["metrics"].tolist() == [3, 2, 1, 0]
    torch.save({"model": {}, "bad": WordDropout()}, path)
    with pytest.raises(Exception, match="WordDropout"):
        torch.load(path)  # the allowlist is not "anything goes"
    with pytest.raises(ValueError, match="state.pt"):
        read_checkpoint(path)


def test_checkpoints_load_after_a_library_removed_the_allowlist(tmp_path):
    # transformers' Trainer wraps its own loads in torch's safe_globals block, whose exit
    # removes the numpy globals again, ours included.
    path = tmp_path / "state.pt"
    torch.save({"model": {}, "metrics": np.array([1, 2], dtype=np.int64)}, path)
    with torch.serialization.safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS):
        pass
    assert read_checkpoint(path)["metrics"].tolist() == [1, 2]


def test_load_hub_model_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_hub_model(tmp_path, "nowhere.pt", str(tmp_path))
    full = tmp_path / "full.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "cfg": {"task": {"_name": "translation"}}},
               full)
    data = full.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated.pt.*corrupt or truncated"):
        load_hub_model(tmp_path, "truncated.pt", str(tmp_path))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_hub_model(tmp_path, "garbage.pt", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no-such-data"):
        load_hub_model(tmp_path, "full.pt", str(tmp_path / "no-such-data"))
