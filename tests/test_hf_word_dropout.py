"""Word dropout for Hugging Face causal LMs: the collator's masks and their use by models."""

import pickle

import pytest
import torch

transformers = pytest.importorskip("transformers")

from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoConfig,
    AutoModelForCausalLM,
    TrainingArguments,
    default_data_collator,
)

from sequential_rationales.word_dropout import (  # noqa: E402
    WordDropout,
    self_attention_mask,
    word_dropout_keep_mask,
)
from sequential_rationales_integrations.huggingface.word_dropout import (  # noqa: E402
    KEEP_KWARG,
    WORD_DROPOUT_FLEX,
    WordDropoutCollator,
    WordDropoutTrainer,
    choose_word_dropout_attention,
    num_attention_heads,
    use_word_dropout_flex,
    word_dropout_block_layout,
    word_dropout_block_mask,
    word_dropout_flex_attention,
)

# On CPU the flex tests run torch's eager (unfused) flex attention on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

VOCAB = 40
CONFIGS = {
    "gpt2": "n_layer=2,n_embd=32,n_head=4,n_positions=32",
    "llama": "num_hidden_layers=2,hidden_size=32,num_attention_heads=4,num_key_value_heads=2,"
             "intermediate_size=64,max_position_embeddings=32",
}


def tiny_model(model_type: str) -> torch.nn.Module:
    config = AutoConfig.for_model(model_type)
    config.update_from_string(CONFIGS[model_type] + f",vocab_size={VOCAB}")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def features(batch: int = 3, length: int = 10, seed: int = 0,
             lengths: list[int] | None = None) -> list[dict[str, torch.Tensor]]:
    """Examples with input_ids/labels and, when ``lengths`` is given, right padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    out = []
    for b in range(batch):
        example = {"input_ids": ids[b], "labels": ids[b].clone()}
        if lengths is not None:
            mask = (torch.arange(length) < lengths[b]).long()
            example["input_ids"] = ids[b].masked_fill(mask == 0, 0)
            example["labels"] = ids[b].masked_fill(mask == 0, -100)
            example["attention_mask"] = mask
        out.append(example)
    return out


def collator(mixture: float = 1.0, kind: str = "uniform_length", per_head: bool | None = None,
             heads: int = 4, seed: int = 0, attention: str = "mask") -> WordDropoutCollator:
    return WordDropoutCollator(default_data_collator, WordDropout(mixture, kind, per_head),
                               heads, seed, attention)


@pytest.mark.parametrize("kind, per_head, heads_dim", [
    ("uniform_length", None, 1), ("inverse_length", None, 4),
    ("uniform_length", True, 4), ("inverse_length", False, 1)])
def test_mask_shape_causal_and_diagonal(kind, per_head, heads_dim):
    col = collator(kind=kind, per_head=per_head)
    for seed in range(5):
        mask = col(features(seed=seed))["attention_mask"]
        assert mask.dtype == torch.bool and mask.shape == (3, heads_dim, 10, 10)
        assert not (mask & ~torch.ones(10, 10, dtype=torch.bool).tril()).any(), "not causal"
        assert mask.diagonal(dim1=-2, dim2=-1).all(), "a token must always see itself"


def test_masks_actually_drop_tokens():
    # With keep probability 1/T, almost every earlier key is hidden from the last query.
    mask = collator(kind="inverse_length")(features(batch=4, length=20))["attention_mask"]
    assert mask[..., -1, :-1].float().mean() < 0.5
    full = collator(kind="uniform_length")(features(batch=4, length=20))["attention_mask"]
    assert not full.all()


def test_padding_is_never_attended_by_real_tokens():
    lengths = [10, 6, 3]
    col = collator(kind="uniform_length", per_head=True)
    for seed in range(10):
        feats = features(lengths=lengths, seed=seed)
        mask = col(feats)["attention_mask"]
        for b, n in enumerate(lengths):
            assert not mask[b, :, :n, n:].any(), "real query attends to padding"
            # Padding queries see only themselves, so no attention row is empty.
            assert mask[b].any(-1).all()


def test_mixture_zero_never_and_one_always_masks():
    never, always = collator(mixture=0.0), collator(mixture=1.0)
    for seed in range(20):
        feats = features(lengths=[10, 7, 4], seed=seed)
        base = default_data_collator(feats)
        out = never(feats)
        assert out.keys() == base.keys()
        for key in base:
            assert torch.equal(out[key], base[key])
        assert always(feats)["attention_mask"].dim() == 4


def test_mixture_half_drops_some_batches():
    col = collator(mixture=0.5)
    dims = [col(features(seed=s)).get("attention_mask", torch.ones(1, 1)).dim()
            for s in range(40)]
    assert 5 < dims.count(4) < 35


def test_same_seed_same_masks_different_seed_different_masks():
    def draws(seed):
        col = collator(mixture=0.5, kind="inverse_length", seed=seed)
        return [col(features(seed=s)).get("attention_mask") for s in range(10)]

    a, b, c = draws(7), draws(7), draws(8)
    assert all((x is None and y is None) or torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any((x is None) != (y is None) or (x is not None and not torch.equal(x, y))
               for x, y in zip(a, c, strict=True))


def test_collator_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    collator(mixture=0.5)(features())
    assert torch.equal(torch.rand(3), expected)


def test_dataloader_workers_draw_different_masks():
    col = collator(kind="inverse_length", per_head=False)
    example = features(batch=1, length=16)[0]
    # Pickling drops the generator; it is rebuilt from the seed (spawned workers need this).
    assert pickle.loads(pickle.dumps(col)).seed == col.seed
    loader = DataLoader([example] * 8, batch_size=2, num_workers=2, collate_fn=col)
    masks = [batch["attention_mask"] for batch in loader]
    # Batches alternate between the two workers; their first draws must differ.
    assert not torch.equal(masks[0], masks[1])


def test_bad_inputs():
    with pytest.raises(ValueError, match="num_heads"):
        WordDropoutCollator(default_data_collator, WordDropout(1.0), 0, 0)
    with pytest.raises(ValueError, match="attention_mask"):
        collator()([{"input_ids": torch.arange(4), "attention_mask": torch.ones(3)}])


def test_num_attention_heads():
    gpt2 = AutoConfig.for_model("gpt2")
    gpt2.update_from_string("n_head=3")
    assert num_attention_heads(gpt2) == 3
    assert num_attention_heads(AutoConfig.for_model("llama")) == 32
    with pytest.raises(ValueError, match="num_attention_heads"):
        num_attention_heads(transformers.PreTrainedConfig())


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["uniform_length", "inverse_length"])
def test_model_honours_collated_mask(model_type, kind):
    model = tiny_model(model_type)
    col = collator(kind=kind, heads=num_attention_heads(model.config))
    batch = col(features(batch=2, length=12, seed=1))
    mask = batch["attention_mask"]
    out = model(**batch)
    assert torch.isfinite(out.loss)
    # Changing a token that the last query cannot see leaves its prediction unchanged ...
    hidden = (~mask[0, :, -1, :-1].any(0)).nonzero()
    assert len(hidden) > 0
    ids = batch["input_ids"].clone()
    ids[0, hidden[0, 0]] = (ids[0, hidden[0, 0]] + 1) % VOCAB
    with torch.no_grad():
        same = model(input_ids=ids, attention_mask=mask).logits[0, -1]
        # ... while without word dropout the same change does reach it.
        full_a = model(input_ids=batch["input_ids"]).logits[0, -1]
        full_b = model(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(same, out.logits[0, -1].detach())
    assert not torch.allclose(full_a, full_b)


def test_trainer_drops_words_in_training_batches_only(tmp_path):
    # Llama: transformers 5.23's Trainer mis-normalizes GPT-2's eval loss (see run_clm.py).
    model = tiny_model("llama")
    data = features(batch=8, length=12)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4,
                             per_device_eval_batch_size=4, report_to="none", use_cpu=True)
    trainer = WordDropoutTrainer(model=model, args=args, train_dataset=data, eval_dataset=data,
                                 data_collator=default_data_collator,
                                 train_data_collator=collator(heads=4))
    train_batches = list(trainer.get_train_dataloader())
    eval_batches = list(trainer.get_eval_dataloader())
    assert train_batches and eval_batches
    assert all(b["attention_mask"].dim() == 4 for b in train_batches)
    assert all("attention_mask" not in b for b in eval_batches)
    assert trainer.data_collator is default_data_collator
    metrics = trainer.evaluate()
    with torch.no_grad():
        full = torch.stack([model(**default_data_collator(data[i:i + 4])).loss
                            for i in (0, 4)]).mean()
    assert metrics["eval_loss"] == pytest.approx(full.item(), rel=1e-5)


# --- Flex attention: compact keep masks and the "word_dropout_flex" attention function. ---

NO_DROPOUT = {"gpt2": ",attn_pdrop=0.0,resid_pdrop=0.0,embd_pdrop=0.0", "llama": ""}
PADDED = [16, 11, 6]  # lengths of a right-padded batch of 3 x 16 tokens
DRAWS = [("uniform_length", None), ("inverse_length", None), ("inverse_length", False)]


def model_pair(model_type: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two copies of a tiny model without dropout: SDPA (dense masks) and word_dropout_flex."""
    models = []
    for _ in range(2):
        config = AutoConfig.for_model(model_type)  # one config each: switching mutates it
        config.update_from_string(CONFIGS[model_type] + NO_DROPOUT[model_type]
                                  + f",vocab_size={VOCAB}")
        torch.manual_seed(0)
        models.append(AutoModelForCausalLM.from_config(config))
    return models[0], use_word_dropout_flex(models[1])


def paired_batches(kind: str, per_head: bool | None, mixture: float = 1.0, seed: int = 3):
    """The same padded examples and draws, collated for the dense and for the flex path."""
    data = features(batch=3, length=16, seed=seed, lengths=PADDED)
    dense, flex = (collator(mixture, kind, per_head, seed=seed, attention=a)(data)
                   for a in ("mask", "flex"))
    return dense, flex


def tiles(mask: torch.Tensor, block: int, rows_past_end: bool) -> torch.Tensor:
    """``[B, H, T, T]`` -> ``[B, H, N, N, block * block]``, padded up to ``N * block``; padded
    keys are never seen, padded query rows are filled with ``rows_past_end``."""
    t = mask.shape[-1]
    extra = -t % block
    mask = torch.nn.functional.pad(mask, (0, 0, 0, extra), value=rows_past_end)
    mask = torch.nn.functional.pad(mask, (0, extra), value=False)
    n = (t + extra) // block
    return mask.view(*mask.shape[:2], n, block, n, block).transpose(3, 4).flatten(-2)


@pytest.mark.parametrize("per_head", [False, True])
@pytest.mark.parametrize("block", [4, 8])
def test_block_layout_matches_the_dense_mask(per_head, block):
    # T = 37 is not a multiple of the block size; padding, all-kept and all-dropped blocks.
    t = 37
    valid = torch.arange(t) < torch.tensor([[37], [30], [12]])
    keep = word_dropout_keep_mask(valid, "uniform_length", torch.Generator().manual_seed(0),
                                  3 if per_head else None)
    keep[0, ..., :2 * block] = True
    keep[1, ..., 2 * block:4 * block] = False
    dense = self_attention_mask(keep if per_head else keep[:, None])  # [B, H, T, T]
    n = -(-t // block)
    # A block may be skipped iff no query sees any of its keys; it may skip mask_mod (full)
    # iff every query sees every key (query rows past T do not exist: they count as seeing).
    seen = tiles(dense, block, rows_past_end=False).any(-1)
    all_seen = tiles(dense, block, rows_past_end=True).all(-1)

    partial, full = word_dropout_block_layout(keep if per_head else keep[:, None], block)
    assert torch.equal(partial | full, seen)
    assert not (partial & full).any()
    below = torch.ones(n, n, dtype=torch.bool).tril(-1)
    assert torch.equal(full, all_seen & below)  # diagonal blocks always go through mask_mod
    assert full.any() and (~seen).any()

    block_mask = word_dropout_block_mask(keep, block)
    assert block_mask.shape == (3, 3 if per_head else 1, t, t)
    assert torch.equal(block_mask.to_dense().bool(), seen)
    assert int(block_mask.full_kv_num_blocks.sum()) == int(full.sum())


@pytest.mark.parametrize("window", [1, 3, 8, 13])
@pytest.mark.parametrize("block", [4, 8])
def test_block_layout_with_a_sliding_window(window, block):
    t = 37
    valid = torch.arange(t) < torch.tensor([[37], [30], [12]])
    keep = word_dropout_keep_mask(valid, "uniform_length", torch.Generator().manual_seed(1), 2)
    keep[0, :, :3 * block] = True
    dense = self_attention_mask(keep, window=window)
    seen = tiles(dense, block, rows_past_end=False).any(-1)
    all_seen = tiles(dense, block, rows_past_end=True).all(-1)
    # Blocks some causal query-key pair of which lies within the window.
    n = -(-t // block)
    near = self_attention_mask(torch.ones(1, 1, t, dtype=torch.bool), window=window)
    reachable = tiles(near, block, rows_past_end=False).any(-1)

    partial, full = word_dropout_block_layout(keep, block, window)
    assert not (partial & full).any()
    assert not ((seen | full) & ~(partial | full)).any(), "a block with visible keys skipped"
    assert not ((partial | full) & ~reachable).any(), "a block beyond the window not skipped"
    below = torch.ones(n, n, dtype=torch.bool).tril(-1)
    assert torch.equal(full, all_seen & below)
    block_mask = word_dropout_block_mask(keep, block, window)
    dense_blocks = block_mask.to_dense().bool()
    assert torch.equal(dense_blocks | seen, dense_blocks)
    assert (below & ~reachable).any()  # there were blocks to skip
    if window <= block:  # no block is wholly inside the window; two blocks back is beyond it
        assert not full.any() and not (partial | full)[..., below.tril(-2)].any()


@pytest.mark.parametrize("per_head", [False, True])
def test_flex_attention_applies_the_layer_window(per_head):
    # The window comes from the module's `sliding_window` keyword (Mistral passes it) or its
    # attribute (Qwen2, Gemma, ...); forward through flex and, with gradients, dense SDPA.
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 20, 8, generator=g) for _ in range(3))
    keep = word_dropout_keep_mask(torch.ones(2, 20, dtype=torch.bool), "uniform_length", g,
                                  4 if per_head else None)
    mask = self_attention_mask(keep if per_head else keep[:, None], window=5)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    expected = expected.transpose(1, 2)
    module = torch.nn.Module()
    got = word_dropout_flex_attention(module, q, k, v, None, word_dropout_keep=keep,
                                      sliding_window=5)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    module.sliding_window = 5
    got = word_dropout_flex_attention(module, q.requires_grad_(), k, v, None,
                                      word_dropout_keep=keep)[0]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_flex_collator_hands_over_the_keep_mask():
    for kind, per_head in DRAWS:
        dense, flex = paired_batches(kind, per_head)
        keep = flex[KEEP_KWARG]
        assert keep.dtype == torch.bool and keep.shape == (
            (3, 4, 16) if kind == "inverse_length" and per_head is None else (3, 16))
        assert torch.equal(flex["attention_mask"], dense["input_ids"].ne(0).long())
        assert not (keep & ~flex["attention_mask"].bool().view(3, *[1] * (keep.dim() - 2), 16)
                    ).any(), "padding kept"
        # Same draws as the dense path, which is tested against its definition above.
        expected = self_attention_mask(keep)
        assert torch.equal(dense["attention_mask"],
                           expected if expected.dim() == 4 else expected[:, None])


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("kind, per_head", DRAWS)
def test_flex_matches_dense_masks(model_type, kind, per_head):
    dense_model, flex_model = model_pair(model_type)
    dense, flex = paired_batches(kind, per_head)
    with torch.no_grad():  # forward only: torch's flex attention kernel (eager on CPU)
        expected = dense_model.eval()(**dense).logits
        got = flex_model.eval()(**flex).logits
        full_context = flex_model(**{k: v for k, v in flex.items() if k != KEEP_KWARG}).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # The keep mask really reached every attention layer: the context did shrink.
    assert not torch.allclose(got, full_context, atol=1e-3)

    # Training: same loss and gradients. (torch has no flex backward on CPU, so here the
    # function expands the same mask_mod densely; on CUDA the fused kernel runs.)
    loss_dense = dense_model.train()(**dense).loss
    loss_flex = flex_model.train()(**flex).loss
    loss_dense.backward()
    loss_flex.backward()
    torch.testing.assert_close(loss_flex, loss_dense)
    for (name, a), b in zip(dense_model.named_parameters(), flex_model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_flex_model_without_word_dropout_is_the_standard_model(model_type):
    standard, flex_model = model_pair(model_type)
    # Mixture 0: the flex collator adds no keep mask and the batch takes the SDPA path.
    _, flex = paired_batches("uniform_length", None, mixture=0.0)
    assert KEEP_KWARG not in flex and flex["attention_mask"].dim() == 2
    a = standard.train()(**flex)
    b = flex_model.train()(**flex)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=0)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)


def test_flex_with_gradient_checkpointing():
    dense_model, flex_model = model_pair("llama")
    flex_model.gradient_checkpointing_enable()
    dense, flex = paired_batches("inverse_length", None)
    dense_model.train()(**dense).loss.backward()
    flex_model.train()(**flex).loss.backward()
    for a, b in zip(dense_model.parameters(), flex_model.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-6)


def test_flex_trainer_needs_a_flex_model(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    data = features(batch=4, length=12)
    dense_model, flex_model = model_pair("llama")
    with pytest.raises(ValueError, match=WORD_DROPOUT_FLEX):
        WordDropoutTrainer(model=dense_model, args=args, train_dataset=data,
                           train_data_collator=collator(attention="flex"))
    trainer = WordDropoutTrainer(model=flex_model, args=args, train_dataset=data,
                                 train_data_collator=collator(attention="flex"))
    assert all(KEEP_KWARG in b for b in trainer.get_train_dataloader())


def test_choose_word_dropout_attention():
    llama, gpt2 = AutoConfig.for_model("llama"), AutoConfig.for_model("gpt2")
    assert choose_word_dropout_attention("mask", "cpu", llama)[0] == "mask"
    assert choose_word_dropout_attention("auto", "cpu", llama)[0] == "mask"
    assert choose_word_dropout_attention("flex", "cpu", llama)[0] == "flex"
    with pytest.raises(ValueError, match="attention dropout 0.1"):
        choose_word_dropout_attention("flex", "cpu", gpt2)
    with pytest.raises(ValueError, match="one of auto, flex, mask"):
        choose_word_dropout_attention("fast", "cpu", llama)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            choose_word_dropout_attention("flex", "cuda", llama)


def test_flex_bad_inputs():
    with pytest.raises(ValueError, match="attention must be"):
        collator(attention="dense")
    with pytest.raises(ValueError, match="attention dropout"):
        use_word_dropout_flex(tiny_model("gpt2"))  # GPT-2's default attn_pdrop is 0.1
    with pytest.raises(ValueError, match="keep must be"):
        word_dropout_block_mask(torch.ones(2, 5))
    q = torch.zeros(1, 2, 5, 8)
    keep = torch.ones(1, 5, dtype=torch.bool)
    module = torch.nn.Module()
    with pytest.raises(ValueError, match="attention dropout"):
        word_dropout_flex_attention(module, q, q, q, None, dropout=0.1, word_dropout_keep=keep)
    with pytest.raises(ValueError, match="causal self-attention"):
        word_dropout_flex_attention(module, q, q[:, :, :4], q[:, :, :4], None,
                                    word_dropout_keep=keep)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_trainer_makes_the_mask_additive_for_eager_attention(model_type, tmp_path):
    # transformers 5 hands a 4-D mask to eager attention as it is, which adds it to the
    # scores: a boolean mask must become additive there, or every allowed score shifts by one.
    sdpa = tiny_model(model_type)
    eager = tiny_model(model_type)
    eager.config._attn_implementation = "eager"
    batch = collator(heads=num_attention_heads(sdpa.config))(features(batch=2, length=12))
    expected = sdpa(**batch).loss
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    trainer = WordDropoutTrainer(model=eager, args=args, train_dataset=[])
    torch.testing.assert_close(trainer.compute_loss(eager, batch), expected)
    assert not torch.allclose(eager(**batch).loss, expected)  # the boolean mask as it is
