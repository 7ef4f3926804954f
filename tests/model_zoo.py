"""Tiny random-weight instances of every causal-LM and seq2seq architecture in transformers.

The zoo walks ``MODEL_FOR_CAUSAL_LM_MAPPING_NAMES`` and
``MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES`` and shrinks each architecture's default
config generically (:func:`_shrink`): the same rules apply to every config and every
nested sub-config, keyed on attribute names. Architectures for which a generic rule is
wrong get an entry in the small :data:`_OVERRIDES` table, with a comment saying why.

Run ``python tests/model_zoo.py`` to build every type (eager and sdpa, with and without a
sliding window) and run one forward pass; it prints one line per type.
"""

from __future__ import annotations

import copy
import re
import sys
import time

import torch
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
)

__all__ = [
    "ZooSkip",
    "causal_lm_types",
    "seq2seq_types",
    "sliding_window_types",
    "tiny_causal_lm",
    "tiny_config",
    "tiny_seq2seq",
]


class ZooSkip(Exception):
    """Why a model type cannot be built here (one line), e.g. 'needs the mamba_ssm package'."""


# ---------------------------------------------------------------------------------------
# Target sizes.
HIDDEN = 64
HEADS = 4
KV_HEADS = 2  # where the default config uses grouped-query attention
HEAD_DIM = HIDDEN // HEADS
INTERMEDIATE = 64
VOCAB = 128
LAYERS = 2
POSITIONS = 128
EXPERTS = 4
TOP_K = 2
# A window that never masks anything for sequences up to POSITIONS tokens.
NO_WINDOW = 4096

# Attribute names, grouped by what they mean. Matching is on the exact name.
_HIDDEN_NAMES = {
    "hidden_size", "n_embd", "d_model", "dim", "embed_dim", "embedding_size", "emb_dim",
    "embedding_dim", "word_embed_proj_dim", "lru_width", "hidden_size_global", "d_embed",
    "hidden_dim",
    "input_embedding_size", "output_embedding_size",
}
_LAYER_NAMES = {
    "num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers",
    "decoder_layers", "num_decoder_layers", "num_encoder_layers", "depth", "num_blocks",
}
_HEAD_NAMES = {
    "num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads",
    "decoder_attention_heads", "attention_heads", "num_encoder_attention_heads",
    "num_decoder_attention_heads", "swa_num_attention_heads", "index_n_heads",
    "linear_num_heads", "linear_num_value_heads",
}
_KV_HEAD_NAMES = {
    "num_key_value_heads", "num_kv_heads", "kv_n_heads", "swa_num_key_value_heads",
    "linear_num_key_heads",
}
_HEAD_DIM_NAMES = {
    "head_dim", "d_kv", "kv_channels", "d_head", "dim_head", "attention_head_size",
    "attention_head_dim", "swa_head_dim", "index_head_dim", "linear_key_head_dim",
    "linear_value_head_dim", "linear_head_dim", "v_head_dim",
}
_POSITION_NAMES = {
    "max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "model_max_length",
    "max_target_positions", "max_decoder_position_embeddings",
    "max_encoder_position_embeddings", "max_source_positions",
}
_EXPERT_NAMES = {
    "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts", "zero_expert_num",
}
_TOP_K_NAMES = {
    "num_experts_per_tok", "num_experts_per_token", "moe_topk", "moe_top_k", "moe_k",
    "top_k",
}
_ONE_NAMES = {  # expert groups and shared experts: one is enough
    "n_group", "topk_group", "num_expert_group", "n_shared_experts", "num_shared_experts",
    "moe_num_shared_experts",
}
_STATE_NAMES = {"mamba_d_state", "state_size", "ssm_state_size", "d_state"}
_LORA_NAMES = {"kv_lora_rank", "q_lora_rank", "o_lora_rank"}
_INTERMEDIATE_RE = re.compile(
    r"(intermediate_size|ffn_dim|^d_ff$|ffn_hidden_size|^dim_ff$|^d_inner$|^n_inner$"
    r"|feed_forward_size|^dff$)"
)
_DROPOUT_RE = re.compile(r"(dropout|pdrop|drop_rate|layerdrop)")
_TOKEN_ID_RE = re.compile(r"(token_id|token_index|_index$)")


# ---------------------------------------------------------------------------------------
# Per-type fix-ups where the generic rule is wrong, merged into the shrunk config dict
# (nested dicts go into sub-configs). One comment each.
_QWEN4_INDEXER = {"indexer_n_heads": HEADS, "indexer_kv_heads": 1, "indexer_head_dim": HEAD_DIM,
                  "indexer_budget": 8, "indexer_compress_ratio": 4}
_OVERRIDES: dict[str, dict] = {
    # Blocks cycle through block_types; two layers = one recurrent and one attention block.
    "recurrent_gemma": {"block_types": ["recurrent", "attention"]},
    # Attention every attn_layer_period layers (default one in eight): layer 1 attends.
    "jamba": {"attn_layer_period": 2, "attn_layer_offset": 1, "expert_layer_period": 2,
              "expert_layer_offset": 1},
    # The attention block works at twice the hidden size, and its weights are shared by all
    # hybrid layers, which needs at least two of them.
    "zamba": {"num_hidden_layers": 3, "layers_block_type": ["mamba", "hybrid", "hybrid"],
              "attention_hidden_size": 2 * HIDDEN, "attention_head_dim": 2 * HIDDEN // HEADS},
    "zamba2": {"attention_hidden_size": 2 * HIDDEN, "attention_head_dim": 2 * HIDDEN // HEADS,
               "kv_channels": HIDDEN // HEADS},
    # The MLP width is expansion_ratio * d_model.
    "mpt": {"expansion_ratio": 2},
    # num_hidden_layers is derived: layers per stack * H_cycles * (L_cycles + 1).
    "hrm_text": {"num_layers_per_stack": 1, "H_cycles": 1, "L_cycles": 1, "L_bp_cycles": [1],
                 "num_hidden_layers": 2},
    # The default leaves layer_types to the checkpoint (conv or attention per layer).
    "lfm2_moe": {"layer_types": ["conv", "full_attention"]},
    # The default leaves the per-layer-type rotary settings to the checkpoint.
    "cohere_compass_text": {"rope_parameters": {
        "full_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0}}},
    # The model refuses to run without a default language adapter.
    "xmod": {"default_language": "en_XX"},
    # ReformerModelWithLMHead must be a decoder; axial position embeddings must add up to
    # the hidden size and multiply to the maximum length; chunks must divide short inputs.
    "reformer": {"is_decoder": True, "axial_pos_embds_dim": [16, HIDDEN - 16],
                 "axial_pos_shape": [8, POSITIONS // 8], "local_attn_chunk_length": 4,
                 "lsh_attn_chunk_length": 4},
    # Its causal LM takes the decoder config; one codebook so that input_ids are
    # (batch, length) rather than (batch * codebooks, length).
    "musicgen": {"decoder": {"num_codebooks": 1}},
    "musicgen_melody": {"decoder": {"num_codebooks": 1}},
    # The default leaves the MoE sizes to the checkpoint.
    "dots1": {"n_routed_experts": EXPERTS, "num_experts_per_tok": TOP_K, "n_shared_experts": 1},
    # The default leaves the sparse-attention indexer sizes to the checkpoint.
    "qwen4_exp_text": _QWEN4_INDEXER,
    "qwen4_exp": {"text_config": _QWEN4_INDEXER},
    # clip_qkv=None breaks the attention (clamp with no bounds); DBRX checkpoints use 8.
    # The attention also reads attn_config.rope_theta, which the default config lacks.
    "dbrx": {"attn_config": {"rope_theta": 10000.0, "clip_qkv": 8.0}},
    # The default hybrid pattern has no attention layer at all: make layer 1 attention.
    "bamba": {"attn_layer_indices": [1]},
    "granitemoehybrid": {"layer_types": ["linear_attention", "full_attention"]},
    # The native recurrent kernel assumes query/key heads as wide as value heads.
    "xlstm": {"qk_dim_factor": 1.0},
    # mamba_d_ssm (the mixer width) is given explicitly; heads * head size must match it.
    "falcon_h1": {"mamba_d_ssm": 2 * HIDDEN, "mamba_n_heads": 2 * HIDDEN // HEAD_DIM,
                  "mamba_d_head": HEAD_DIM},
    # The diarization head's input width must match its (sibling) audio encoder's width.
    "nemo_speechlm": {"audio_config": {"diarization_config": {
        "head_config": {"audio_hidden_size": HIDDEN}}}},
    # The audio tokenizers' convolution widths double at each stage from num_filters.
    "vibevoice_asr": {"acoustic_tokenizer_encoder_config": {"num_filters": 4},
                      "semantic_tokenizer_encoder_config": {"num_filters": 4}},
    # Building a cache from the composite config fails (it has no num_hidden_layers).
    "blt": {"use_cache": False},
    # Longformer-style windows are padded to attention_window (default 512 > max length).
    "led": {"attention_window": 16},
}


# ---------------------------------------------------------------------------------------
def causal_lm_types() -> list[str]:
    """Sorted model types of transformers' causal-LM auto mapping."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def seq2seq_types() -> list[str]:
    """Sorted model types of transformers' seq2seq auto mapping."""
    return sorted(MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)


_LABEL_KEYS = ("id2label", "label2id")
_INDEX_LIST_RE = re.compile(r"(layers|layer_ids|idxs|indices)$")


def _is_index_list(k: str, v, n_old: int) -> bool:
    """A sorted list of layer indices, e.g. ``cross_attention_layers=[3, 8, 13]``."""
    return (isinstance(v, list) and bool(v) and _INDEX_LIST_RE.search(k) is not None
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
            and all(0 <= x < n_old for x in v) and v == sorted(set(v)))


def _pick_layers(d: dict, n_old: int) -> list[int] | None:
    """Which of the ``n_old`` layers to keep so that every kind of layer stays.

    A layer's kind is its entry in every per-layer list (``layer_types``,
    ``mlp_layer_types``, ...), its membership in every layer-index list
    (``cross_attention_layers``, ...) and its entry in per-layer dicts keyed by index.
    Per-layer structures are rewritten for the kept layers; returns the kept indices.
    """
    if n_old <= LAYERS:
        return None
    index_lists = [k for k, v in d.items() if _is_index_list(k, v, n_old)]
    per_layer = [k for k, v in d.items()
                 if k not in index_lists and isinstance(v, list) and len(v) == n_old
                 and all(isinstance(x, str | int | float | bool) for x in v)]
    per_layer_dicts = [k for k, v in d.items() if k not in _LABEL_KEYS and isinstance(v, dict)
                       and v and all(str(x).isdigit() for x in v)]

    def kind(i: int) -> tuple:
        return (tuple(str(d[k][i]) for k in per_layer)
                + tuple(i in d[k] for k in index_lists)
                + tuple(str(d[k].get(i, d[k].get(str(i)))) for k in per_layer_dicts))

    keep: list[int] = []
    seen: set[tuple] = set()
    for i in range(n_old):
        if kind(i) not in seen:
            seen.add(kind(i))
            keep.append(i)
    keep = sorted(keep + [i for i in range(n_old) if i not in keep][: max(0, LAYERS - len(keep))])
    new = {old: i for i, old in enumerate(keep)}
    for k in per_layer:
        d[k] = [d[k][i] for i in keep]
    for k in index_lists:
        d[k] = [new[i] for i in d[k] if i in new]
    for k in per_layer_dicts:
        d[k] = {_same_style(key, new[int(key)]): _shrink(v) if isinstance(v, dict) else v
                for key, v in d[k].items() if int(key) in new}
    return keep


def _same_style(key: int | str, index: int) -> int | str:
    """``index`` written like ``key`` (an int, or a zero-padded string such as "05")."""
    return index if isinstance(key, int) else str(index).zfill(len(key))


def _layer_count(d: dict) -> tuple[str | None, int]:
    """The name and value of the layer count (no name: the count is a per-layer list's)."""
    for name in ("num_hidden_layers", "n_layer", "n_layers", "num_layers", "decoder_layers"):
        if isinstance(d.get(name), int):
            return name, d[name]
    for name in ("layers_block_type", "layer_types", "block_types"):
        if isinstance(d.get(name), list):
            return None, len(d[name])
    return None, 0


# (number of heads, head size, expansion) of Mamba-2 style mixers: heads * size must equal
# expansion * hidden size.
_SSM_HEADS = (
    ("mamba_n_heads", "mamba_d_head", "mamba_expand"),
    ("mamba_num_heads", "mamba_head_dim", "mamba_expand"),
    ("mamba_num_heads", "mamba_head_dim", "expand"),
    ("n_mamba_heads", "mamba_headdim", "mamba_expand"),
    ("num_heads", "head_dim", "expand"),
)


def _hidden(d: dict) -> int | None:
    return next((d[k] for k in ("hidden_size", "n_embd", "d_model") if k in d), None)


def _shrink(d: dict, hidden_sizes: frozenset[int] = frozenset()) -> dict:
    """Shrink one config dict (and its sub-config dicts) in place; returns it.

    ``hidden_sizes``: the original hidden sizes of the enclosing configs (and of the text
    config), so that sizes that must match them (projections between towers) follow.
    """
    old_heads = next((d[k] for k in ("num_attention_heads", "n_head", "num_heads") if k in d),
                     None)
    old_rope_dim, old_head_dim = d.get("qk_rope_head_dim"), d.get("head_dim")
    hidden_sizes = hidden_sizes | {h for h in (_hidden(d), _hidden(_text(d))) if h}
    layer_key, old_layers = _layer_count(d)
    keep = _pick_layers(d, old_layers)
    n_layers = len(keep) if keep else LAYERS

    for k, v in list(d.items()):
        if isinstance(v, dict):
            if "model_type" in v or any(x in v for x in ("hidden_size", "d_model", "num_layers")):
                _shrink(v, hidden_sizes)
            continue
        if v is None:
            # Some defaults leave these to the checkpoint; the models need a value.
            if k in ("head_dim", "num_key_value_heads") or k in _TOP_K_NAMES:
                d[k] = {"head_dim": HEAD_DIM, "num_key_value_heads": HEADS}.get(k, TOP_K)
            continue
        if isinstance(v, list) and v and all(isinstance(x, int) for x in v):
            if _INTERMEDIATE_RE.search(k):  # per-layer MLP widths
                d[k] = [min(x, INTERMEDIATE) for x in v]
            elif k == "depths":  # blocks per stage of a convolutional / windowed tower
                d[k] = [1] * len(v)
            continue
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float):
            if _DROPOUT_RE.search(k):
                d[k] = 0.0
            continue
        if k in _HIDDEN_NAMES and v > HIDDEN:
            d[k] = HIDDEN
        elif k in _LAYER_NAMES and v > n_layers:
            d[k] = n_layers
        elif k in _HEAD_NAMES and v > HEADS:
            d[k] = HEADS
        elif k in _KV_HEAD_NAMES:
            heads = old_heads or v
            d[k] = HEADS if v >= heads else (1 if v == 1 else KV_HEADS)
        elif k in _HEAD_DIM_NAMES and v > HEAD_DIM:
            d[k] = HEAD_DIM
        elif k in _POSITION_NAMES and v > POSITIONS:
            d[k] = POSITIONS
        elif k in _EXPERT_NAMES and v > EXPERTS:
            d[k] = EXPERTS
        elif k in _TOP_K_NAMES and v > TOP_K:
            d[k] = TOP_K
        elif k in _ONE_NAMES and v > 1:
            d[k] = 1
        elif k in _STATE_NAMES and v > 16:
            d[k] = 16
        elif k in _LORA_NAMES and v > 32:
            d[k] = 32
        elif k in ("first_k_dense_replace", "num_dense_layers") and v > 1:
            d[k] = 1  # one dense layer, then MoE layers
        elif k in ("mamba_dt_rank", "time_step_rank", "adapter_rank", "hc_lowrank") and v > 8:
            d[k] = 8
        elif k in ("n_groups", "mamba_n_groups", "mamba_ngroups") and v > 1:
            d[k] = 1
        elif k == "num_kv_shared_layers":
            d[k] = 0  # KV sharing needs more layers than we keep
        elif k in ("qk_rope_head_dim", "qk_nope_head_dim"):
            d[k] = HEAD_DIM // 2
        elif _INTERMEDIATE_RE.search(k) and v > INTERMEDIATE:
            d[k] = INTERMEDIATE if "moe" not in k and "expert" not in k else INTERMEDIATE // 2
        elif "vocab" in k and k != "type_vocab_size" and v > VOCAB:
            d[k] = VOCAB
        elif v in hidden_sizes and re.search(r"(size|dim|width)", k):
            d[k] = HIDDEN  # the hidden size under another name
    # Multi-head latent attention: head_dim is the rotary part of the query/key heads.
    if old_rope_dim is not None and old_head_dim == old_rope_dim:
        d["head_dim"] = d["qk_rope_head_dim"]
    if "qk_rope_head_dim" in d and "qk_nope_head_dim" in d and "qk_head_dim" in d:
        d["qk_head_dim"] = d["qk_rope_head_dim"] + d["qk_nope_head_dim"]
    if isinstance(d.get("rotary_dim"), int):
        d["rotary_dim"] = HEAD_DIM // 2
    for heads, size, expand in _SSM_HEADS:
        if all(isinstance(d.get(x), int | float) for x in (heads, size, expand, "hidden_size")):
            d[size] = HEAD_DIM
            d[heads] = int(d[expand] * d["hidden_size"]) // HEAD_DIM
    if layer_key is not None and d[layer_key] > n_layers:
        d[layer_key] = n_layers
    return d


def _fix_token_ids(d: dict, vocab: int, moved: dict[int, int]) -> None:
    """Keep special token ids inside the (shrunk) vocabulary.

    In-range ids are kept; out-of-range ones move to the top of the vocabulary (distinct
    ids, counting down from ``vocab - 1``), the same id to the same place everywhere.
    """
    vocab = d.get("vocab_size") if isinstance(d.get("vocab_size"), int) else vocab
    for k, v in list(d.items()):
        if k in _LABEL_KEYS:
            continue
        if isinstance(v, dict):
            _fix_token_ids(v, vocab, moved)
        elif _TOKEN_ID_RE.search(k):
            d[k] = _remap_ids(v, vocab, moved)


def _remap_ids(v, vocab: int, moved: dict[int, int]):
    if isinstance(v, list):
        return [_remap_ids(x, vocab, moved) for x in v]
    if isinstance(v, bool) or not isinstance(v, int) or v < vocab:
        return v
    if v not in moved:
        moved[v] = vocab - 1 - len(moved)
    return moved[v]


# ---------------------------------------------------------------------------------------
# Sliding / local attention. How ``sliding_window=w`` is applied, per family:
# - ``sliding_window`` + ``layer_types`` mixing "full_attention" and "sliding_attention"
#   (Gemma2/3/3n/4, Cohere2, GPT-OSS, OLMo3, Exaone4, VaultGemma, ModernBERT-decoder, CWM,
#   MiMo-V2, AFMoE, Granite-SWA, ...): window = w; the kept layers include both kinds.
# - ``sliding_window`` + ``use_sliding_window``/``max_window_layers`` (Qwen2, Qwen2-MoE,
#   Qwen3, Qwen3-MoE, SmolLM3, Dots1, ...): use_sliding_window=True, window = w, layer 0
#   stays full and the later layers slide (max_window_layers=1, layer_types to match).
# - ``sliding_window`` + ``layer_types`` with only full layers (Laguna, Mellum, Cohere
#   Compass): the first attention layer stays full, later ones become sliding.
# - ``sliding_window`` alone (Mistral, Mixtral, Phi3, PhiMoE, Starcoder2, Ministral3,
#   Doge, Phi4-multimodal, ...): every attention layer slides with window w.
# - GPT-Neo: window_size = w, attention_types = one global and one local layer.
# - RecurrentGemma: attention_window_size = w (its attention blocks are always local).
# - Inkling / Zaya: the window under its own name, "hybrid" and "hybrid_sliding" layers.
# - ModernBERT-decoder: also local_attention = 2 * w (the model reads both).
# With ``sliding_window=None`` the family's default window (where it has one) becomes
# NO_WINDOW, larger than any input, and the default layer pattern is kept.
# Families whose window has another name:
_WINDOW_KEYS = {
    "gpt_neo": "window_size",
    "recurrent_gemma": "attention_window_size",
    "inkling_text": "sliding_window_size",
    "inkling2_text": "sliding_window_size",
}
# Global layer kind -> its sliding counterpart in ``layer_types``.
_SLIDING_KINDS = {"full_attention": "sliding_attention", "hybrid": "hybrid_sliding"}


def _text(d: dict) -> dict:
    """The (sub-)config dict that holds the language model's layers."""
    for k in ("text_config", "decoder_config", "language_config", "llm_config"):
        if isinstance(d.get(k), dict):
            return d[k]
    return d


def _window_key(model_type: str, t: dict) -> str | None:
    if model_type in _WINDOW_KEYS:
        return _WINDOW_KEYS[model_type]
    return "sliding_window" if "sliding_window" in t else None


def _set_window(model_type: str, d: dict, window: int | None) -> None:
    """Configure the family's sliding/local attention (see the comment above)."""
    t = _text(d)
    key = _window_key(model_type, t)
    if key is None:
        return
    if window is None:
        # Default layer pattern, but a window that never masks anything.
        if t.get(key) not in (None, 0):
            t[key] = NO_WINDOW
        if model_type == "modernbert-decoder":
            t["local_attention"] = 2 * NO_WINDOW
        return
    t[key] = window
    if "use_sliding_window" in t:
        t["use_sliding_window"] = True
    if model_type == "gpt_neo":  # one global and one local layer
        t["attention_types"] = [[["global", "local"], 1]]
        t["num_layers"] = 2
    if model_type == "modernbert-decoder":  # the window is local_attention // 2
        t["local_attention"] = 2 * window
    kinds = t.get("layer_types")
    base = next((k for k in _SLIDING_KINDS if k in (kinds or [])), None)
    if base and not any(k in kinds for k in _SLIDING_KINDS.values()):
        # Qwen2-style (layers >= max_window_layers slide) or a family whose default pattern
        # has no sliding layer: the first global layer stays, the others slide.
        full = [i for i, k in enumerate(kinds) if k == base]
        if len(full) < 2:
            kinds = kinds + [base] * (2 - len(full))
            _set_layers(t, len(kinds))
            full = [i for i, k in enumerate(kinds) if k == base]
        t["layer_types"] = [_SLIDING_KINDS[k] if i in full[1:] else k for i, k in enumerate(kinds)]
        if "max_window_layers" in t:
            t["max_window_layers"] = full[1]


def _set_layers(t: dict, n: int) -> None:
    """Grow the layer count to ``n``, repeating the last entry of per-layer lists."""
    key, old = _layer_count(t)
    if key is None:
        return
    for k, v in t.items():
        if isinstance(v, list) and v and len(v) == old:
            t[k] = v + [v[-1]] * (n - old)
    t[key] = n


def _set_alibi(d: dict, alibi: bool | None) -> None:
    if alibi is None:
        return
    t = _text(d)
    if "alibi" in t:  # Falcon
        t["alibi"] = alibi
    if isinstance(t.get("attn_config"), dict):  # MPT
        t["attn_config"]["alibi"] = alibi


# ---------------------------------------------------------------------------------------
def _default_config(model_type: str) -> PretrainedConfig:
    try:
        return AutoConfig.for_model(model_type)
    except ImportError as e:
        raise ZooSkip(_missing_package(e)) from e
    except Exception as e:  # noqa: BLE001 - any failure means "cannot be built"
        raise ZooSkip(f"its default config cannot be built: {_one_line(e)}") from e


def _one_line(e: BaseException) -> str:
    lines = [x.strip() for x in str(e).splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}"[:160]


def _merge(d: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict) and "rope" not in k:
            _merge(d[k], v)
        else:
            d[k] = v


def tiny_config(
    model_type: str,
    *,
    sliding_window: int | None = None,
    alibi: bool | None = None,
    **overrides,
) -> PretrainedConfig:
    """A tiny config of ``model_type``: the default config, shrunk (see module docstring).

    ``overrides`` are applied last, to the top-level config, or to the text config for a
    key that only the text config has.
    """
    if model_type in _UNRUNNABLE:
        raise ZooSkip(_UNRUNNABLE[model_type])
    default = _default_config(model_type)
    d = _shrink(copy.deepcopy(default.to_dict()))
    _fix_token_ids(d, _text(d).get("vocab_size") or VOCAB, {})
    _merge(d, _OVERRIDES.get(model_type, {}))
    _set_window(model_type, d, sliding_window)
    _set_alibi(d, alibi)
    t = _text(d)
    for k, v in overrides.items():
        (t if k not in d and k in t else d)[k] = v
    d.pop("transformers_version", None)
    try:
        config = type(default).from_dict(d)
    except ImportError as e:
        raise ZooSkip(_missing_package(e)) from e
    except Exception as e:  # noqa: BLE001
        raise ZooSkip(f"its shrunk config is rejected: {_one_line(e)}") from e
    return config


def _model_class(model_type: str, mapping: dict[str, str]):
    import transformers

    return getattr(transformers, mapping[model_type])


def _for_class(config: PretrainedConfig, model_class) -> PretrainedConfig:
    """The config itself, or its sub-config of the class the model expects (MusicGen)."""
    expected = getattr(model_class, "config_class", None)
    if expected is None or isinstance(config, expected):
        return config
    for v in vars(config).values():
        if isinstance(v, expected):
            return v
    return config


def _build(model_class, config, attn_implementation: str, seed: int) -> torch.nn.Module:
    config = _for_class(config, model_class)
    torch.manual_seed(seed)
    try:
        model = model_class._from_config(config, attn_implementation=attn_implementation,
                                         dtype=torch.float32)
    except ImportError as e:
        raise ZooSkip(_missing_package(e)) from e
    except ValueError as e:
        msg = str(e)
        if "does not support" in msg and ("attention" in msg or "attn" in msg):
            raise ZooSkip(f"{model_class.__name__} does not support {attn_implementation} "
                          "attention") from e
        raise
    return model.float().eval()


def _missing_package(e: ImportError) -> str:
    found = re.search(r"requires the (\S+) librar", str(e))
    return f"needs the {found.group(1) if found else e.name or _one_line(e)} package"


def tiny_causal_lm(
    model_type: str,
    *,
    attn_implementation: str = "eager",
    sliding_window: int | None = None,
    alibi: bool | None = None,
    seed: int = 0,
    **overrides,
) -> torch.nn.Module:
    """A tiny float32 random-weight causal LM of ``model_type``, in eval mode, on CPU."""
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise KeyError(f"{model_type!r} is not in the causal-LM mapping")
    config = tiny_config(model_type, sliding_window=sliding_window, alibi=alibi, **overrides)
    model_class = _model_class(model_type, MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return _build(model_class, config, attn_implementation, seed)


def tiny_seq2seq(
    model_type: str,
    *,
    attn_implementation: str = "eager",
    seed: int = 0,
    **overrides,
) -> torch.nn.Module:
    """A tiny float32 random-weight encoder-decoder of ``model_type``, in eval mode, on CPU."""
    if model_type not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES:
        raise KeyError(f"{model_type!r} is not in the seq2seq mapping")
    config = tiny_config(model_type, **overrides)
    model_class = _model_class(model_type, MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES)
    return _build(model_class, config, attn_implementation, seed)


def sliding_window_types() -> list[str]:
    """Causal-LM types for which ``sliding_window=`` is honoured."""
    out = []
    for model_type in causal_lm_types():
        if model_type in _NO_WINDOW or model_type in _UNRUNNABLE:
            continue
        try:
            t = _text(_default_config(model_type).to_dict())
        except ZooSkip:
            continue
        if _window_key(model_type, t) is not None:
            out.append(model_type)
    return out


# Families with a ``sliding_window`` attribute that their modelling code ignores (found by
# the sanity run below: a window of 4 did not change the logits of a 12-token input).
_NO_WINDOW: dict[str, str] = {
    "minimax": "sliding_window is a legacy attribute; its layers are full or linear attention",
    "moshi": "sliding_window is stored on the layers but never used to mask attention",
    "nemotron_h": "sliding_window is never read by the modelling code",
}

# Types that cannot run on token ids alone.
_DRAFT = ("a speculative-decoding draft model: every layer reads the target model's shared KV "
          "states, so it cannot run on its own")
_UNRUNNABLE = {
    "gemma4_assistant": _DRAFT,
    "gemma4_unified_assistant": _DRAFT,
    "voxtral_realtime": "a streaming speech model: every step adds the audio encoder's frames "
                        "to the token embeddings, so it cannot run on token ids alone",
}


# ---------------------------------------------------------------------------------------
def _sample_ids(config, batch: int = 2, length: int = 12) -> torch.Tensor:
    """Random ids avoiding the special tokens (kept at the bottom and top of the vocab)."""
    vocab = config.get_text_config(decoder=True).vocab_size
    g = torch.Generator().manual_seed(0)
    return torch.randint(3, max(4, min(vocab, VOCAB) - 16), (batch, length), generator=g)


def _forward(model, seq2seq: bool):
    ids = _sample_ids(model.config)
    with torch.no_grad():
        if seq2seq:
            out = model(input_ids=ids, decoder_input_ids=ids[:, :5])
        else:
            out = model(input_ids=ids)
    return out.logits


def _try(build, seq2seq: bool) -> tuple[str, float, torch.Tensor | None]:
    start = time.perf_counter()
    try:
        model = build()
        elapsed = time.perf_counter() - start
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
            return "error(dropout left on)", elapsed, None
        if any(p.dtype != torch.float32 for p in model.parameters()):
            return "error(not float32)", elapsed, None
        logits = _forward(model, seq2seq)
        if not torch.isfinite(logits).all():
            return "error(non-finite logits)", elapsed, None
        return "ok", elapsed, logits
    except ZooSkip as e:
        return f"skip({e})", time.perf_counter() - start, None
    except Exception as e:  # noqa: BLE001
        return f"error({_one_line(e)})", time.perf_counter() - start, None


def _main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    only = set(argv)
    rows = []
    t0 = time.perf_counter()
    for kind, types in (("causal", causal_lm_types()), ("seq2seq", seq2seq_types())):
        windowed = set(sliding_window_types()) if kind == "causal" else set()
        for model_type in types:
            if only and model_type not in only:
                continue
            row = [kind, model_type]
            build_time = 0.0
            for impl in ("eager", "sdpa"):
                if kind == "causal":
                    def build(impl=impl, w=None):
                        return tiny_causal_lm(model_type, attn_implementation=impl,
                                              sliding_window=w)
                else:
                    def build(impl=impl, w=None):
                        return tiny_seq2seq(model_type, attn_implementation=impl)
                status, elapsed, full = _try(build, kind == "seq2seq")
                build_time = max(build_time, elapsed)
                if model_type in windowed and status == "ok":
                    w_status, _, local = _try(lambda impl=impl: build(impl, 4), False)
                    if w_status != "ok":
                        status = f"window:{w_status}"
                    elif torch.allclose(full[:, -1], local[:, -1], atol=1e-5):
                        status = "window-ignored"
                row.append(status)
            row.append(f"{build_time:.2f}s")
            rows.append(row)
            print(" | ".join(row), flush=True)
    print(f"total {time.perf_counter() - t0:.1f}s")
    for impl_col, impl in ((2, "eager"), (3, "sdpa")):
        n_ok = sum(r[impl_col] == "ok" for r in rows)
        print(f"{impl}: {n_ok}/{len(rows)} ok")


if __name__ == "__main__":
    _main(sys.argv[1:])
