"""Word dropout for Hugging Face causal language models (compatibility training).

Two ways to give a model the word-dropped attention pattern (query ``i`` sees key ``j`` iff
``j <= i`` and ``j`` is kept or ``j == i``):

* ``"mask"``: Hugging Face causal LMs (GPT-2, Llama, ... with the ``sdpa`` or ``eager``
  attention) accept a boolean 4-D ``attention_mask`` of shape ``[B, 1, T, T]`` or
  ``[B, H, T, T]`` (``True`` = may attend) and use it as given, so :class:`WordDropoutCollator`
  just replaces the batch's attention mask; no model code is patched. Simple and works
  everywhere, but a dense mask turns off the fused (flash) attention kernels. A model that
  derives its positions from the 2-D mask (OPT) gets explicit ``position_ids``.
* ``"flex"``: the collator adds only the compact keep mask (``[B, T]`` or ``[B, H, T]``) to the
  batch, under the keyword ``word_dropout_keep``; the model's attention implementation is set
  to :data:`WORD_DROPOUT_FLEX` (see :func:`use_word_dropout_flex`), a function registered with
  transformers' ``AttentionInterface`` that runs PyTorch's fused ``flex_attention`` with a
  block-sparse mask built from the keep mask. Batches without a keep mask (not word-dropped,
  evaluation) take transformers' ordinary SDPA path. Model forwards (GPT-2, Llama, ...) pass
  unknown keyword arguments down to the attention function, which is how the keep mask
  reaches it.

Sliding windows. A 4-D mask given to a model replaces the one it would build, window
included, so the dense masks carry the model's windows themselves (the collator's
``windows``, from the adapter's ``attention_windows``): query ``i`` sees key ``j`` only if
``i - j`` is below the window, on columns as transformers counts it. Models that mix full and
sliding layers (Gemma2/3, Cohere2, GPT-OSS, Qwen2 with ``max_window_layers``) get a dict of
masks keyed by layer type; GPT-Neo applies its local windows itself, so its masks have none.
The flex path takes each layer's window from the ``sliding_window`` its attention module
passes (or holds), in the ``mask_mod`` and in the block layout (blocks beyond the window are
skipped).

:class:`WordDropoutTrainer` applies the collator to training batches only, so evaluation sees
the full context. It refuses families whose masks cannot express word dropout (ALiBi from the
2-D mask, recurrent layers: the adapter's ``family_refusal``) and checks the first
word-dropped forward once: a flex keep mask that did not reach every attention call, or a
sliding window no layer reported (e.g. StableLM's layers do not pass extra arguments on),
switches training to the dense masks; a model that rejects per-head masks (XGLM checks the
mask's shape) gets one mask per example. Both say so in a log line.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, get_worker_info
from transformers import AttentionInterface, Trainer, TrainerCallback
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from sequential_rationales.adapters.huggingface import (
    AttentionWindows,
    additive_masks,
    attention_windows,
    family_refusal,
    text_config,
)
from sequential_rationales.validation import InputError
from sequential_rationales.word_dropout import WordDropout, self_attention_mask

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch without flex attention (< 2.5)
    BlockMask = flex_attention = None

__all__ = [
    "KEEP_KWARG",
    "WORD_DROPOUT_ATTENTION_MODES",
    "WORD_DROPOUT_FLEX",
    "WordDropoutCollator",
    "WordDropoutTrainer",
    "attention_dropout",
    "choose_word_dropout_attention",
    "flex_attention_unavailable",
    "num_attention_heads",
    "register_word_dropout_flex",
    "takes_position_ids",
    "use_word_dropout_flex",
    "word_dropout_block_layout",
    "word_dropout_block_mask",
    "word_dropout_flex_attention",
    "word_dropout_masks",
]

# Name of the registered attention implementation. It must contain neither "sdpa" nor
# "flex_attention": transformers runs its own capability checks on names containing those.
WORD_DROPOUT_FLEX = "word_dropout_flex"
# Batch key (and model keyword argument) that carries the compact keep mask in "flex" mode.
KEEP_KWARG = "word_dropout_keep"
# How word-dropout masks reach the model: "auto" resolves to one of the other two.
WORD_DROPOUT_ATTENTION_MODES = ("auto", "flex", "mask")
# The collator's generator state in a checkpoint folder, one file per process.
RNG_STATE_FILE = "word_dropout_rng-{}.pt"
# Collated batches whose generator states are remembered (the DataLoader runs ahead by one).
_HISTORY = 16

logger = logging.getLogger(__name__)
# Flex attention's default sparse block size (tokens per query/key tile).
BLOCK_SIZE = 128


def num_attention_heads(config: Any) -> int:
    """Number of attention heads of a Hugging Face config (``num_attention_heads`` or
    ``n_head``; for composite configs, those of the text model)."""
    configs = [config]
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        configs.append(get_text_config())
    for cfg in configs:
        for name in ("num_attention_heads", "n_head"):
            heads = getattr(cfg, name, None)
            if heads is None:
                continue
            if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
                raise InputError(
                    f"{type(config).__name__}.{name} must be a positive integer to draw "
                    f"per-head word-dropout masks, got {heads!r}; use per_head=False")
            return heads
    raise InputError(
        f"{type(config).__name__} has neither `num_attention_heads` nor `n_head`, so per-head "
        "word-dropout masks cannot be built; use per_head=False (one mask per example)")


def attention_dropout(config: Any) -> float:
    """Attention-probability dropout of a Hugging Face config (``attn_pdrop`` for GPT-2,
    ``attention_dropout`` for Llama and most others; 0 when the config has none)."""
    cfg = text_config(config)
    for name in ("attn_pdrop", "attention_dropout", "attention_probs_dropout_prob"):
        value = getattr(cfg, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return 0.0


def flex_attention_unavailable(device: str | torch.device) -> str | None:
    """Why the flex path cannot run on ``device``, or ``None`` when it can.

    CUDA compiles flex attention with Triton (fused forward and backward). CPU runs it eagerly
    and unfused, forward only; training there falls back to a dense mask (correct, not faster).
    """
    if flex_attention is None:
        return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
    device = torch.device(device)
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not torch.cuda.is_available():
            return "CUDA is not available"
        if not has_triton():
            return "flex attention on CUDA needs Triton (torch.compile), which is not available"
    elif device.type != "cpu":
        return f"flex attention is only supported here on CPU and CUDA, not {device.type}"
    return None


def flex_unsupported(config: Any) -> str | None:
    """Why the flex path cannot compute this model's attention (one clause), or ``None``."""
    if getattr(text_config(config), "attn_logit_softcapping", None) is not None:
        return (f"{type(config).__name__} caps its attention logits (attn_logit_softcapping), "
                "which the flex word-dropout attention does not apply")
    return None


def choose_word_dropout_attention(requested: str, device: str | torch.device,
                                  config: Any) -> tuple[str, str]:
    """Resolve ``"auto"``/``"flex"``/``"mask"`` to ``("flex" | "mask", reason)``.

    ``auto`` takes flex attention on CUDA when it is available and the model has no attention
    dropout (flex attention cannot drop attention probabilities); otherwise the dense mask.
    An explicit ``flex`` that cannot run raises ``ValueError``.
    """
    if requested not in WORD_DROPOUT_ATTENTION_MODES:
        raise InputError(f"word-dropout attention must be one of "
                         f"{', '.join(WORD_DROPOUT_ATTENTION_MODES)}, got {requested!r}")
    if requested == "mask":
        return "mask", "requested"
    problem = flex_attention_unavailable(device) or flex_unsupported(config)
    dropout = attention_dropout(config)
    if problem is None and dropout > 0:
        problem = (f"the model has attention dropout {dropout:g} and flex attention cannot drop "
                   "attention probabilities; set it to 0 in the model config (GPT-2: attn_pdrop,"
                   " Llama: attention_dropout)")
    if requested == "flex":
        if problem is not None:
            raise InputError(f"flex word-dropout attention is unavailable: {problem}; use the "
                             "dense-mask mode instead")
        return "flex", "requested"
    if torch.device(device).type != "cuda":
        return "mask", "not on CUDA (flex attention only pays off as a compiled GPU kernel)"
    if problem is not None:
        return "mask", problem
    return "flex", "CUDA with flex attention available"


def _check_window(window: int | None) -> None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise InputError(f"a sliding window must be a positive integer, got {window!r}")


def _keep_mask_mod(keep: Tensor, window: int | None = None) -> Callable:
    """flex ``mask_mod`` for a ``[B, H, T]`` keep mask (``H`` = 1: shared by all heads), with
    an optional sliding window (``q - kv < window``, transformers' convention)."""
    if keep.shape[1] == 1:
        def mask_mod(b, h, q, kv):
            return (kv <= q) & (keep[b, 0, kv] | (q == kv))
    else:
        def mask_mod(b, h, q, kv):
            return (kv <= q) & (keep[b, h, kv] | (q == kv))
    if window is None:
        return mask_mod

    def windowed(b, h, q, kv):
        return mask_mod(b, h, q, kv) & (q - kv < window)
    return windowed


def _ordered_blocks(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """Counts and indices (selected blocks first) of a ``[..., Q blocks, KV blocks]`` bool."""
    counts = blocks.sum(-1, dtype=torch.int32)
    indices = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True)
    return counts, indices.to(torch.int32)


def word_dropout_block_layout(keep: Tensor, block_size: int = BLOCK_SIZE,
                              window: int | None = None) -> tuple[Tensor, Tensor]:
    """Block-sparse layout of the word-dropped causal pattern of a ``[B, H, T]`` keep mask.

    Returns ``(partial, full)``, bool ``[B, H, N, N]`` over ``N = ceil(T / block_size)``
    query x key blocks. It is computed from per-block keep counts (``O(B*H*T)``), never from
    the dense ``T x T`` mask: a key block strictly below the diagonal is full when all its keys
    are kept, skipped when none is, partial otherwise; diagonal blocks are always partial.
    With a sliding ``window``, a block no query of which reaches any of its keys is skipped,
    and a block is full only when every query reaches every key.
    """
    _check_window(window)
    b, h, t = keep.shape
    n = -(-t // block_size)
    padded = keep.new_zeros(b, h, n * block_size)
    padded[..., :t] = keep
    kept = padded.view(b, h, n, block_size).sum(-1)[:, :, None, :]  # [B, H, 1, KV blocks]
    below = torch.ones(n, n, dtype=torch.bool, device=keep.device).tril(-1)
    if window is not None:
        starts = torch.arange(n, device=keep.device) * block_size
        last_query = (starts + block_size - 1).clamp(max=t - 1)
        # Nearest and farthest query-key distances of each block pair.
        nearest = starts[:, None] - (starts[None, :] + block_size - 1)
        farthest = last_query[:, None] - starts[None, :]
        below = below & (nearest < window)
        inside = farthest < window
    else:
        inside = torch.ones(n, n, dtype=torch.bool, device=keep.device)
    full = below & inside & (kept == block_size)
    diagonal = torch.eye(n, dtype=torch.bool, device=keep.device)
    partial = (below & (kept > 0) & ~full) | diagonal
    return partial, full


def word_dropout_block_mask(keep: Tensor, block_size: int = BLOCK_SIZE,
                            window: int | None = None) -> BlockMask:
    """Flex-attention ``BlockMask`` of the word-dropped causal pattern of ``keep``.

    Args:
        keep: ``[B, T]`` or ``[B, H, T]`` bool (as drawn by :class:`WordDropout`).
        block_size: tile size of the block-sparse layout.
        window: sliding window (query ``i`` sees key ``j`` only if ``i - j < window``).
    Returns:
        a ``BlockMask`` of shape ``[B, 1 or H, T, T]``: query ``i`` sees key ``j`` iff
        ``j <= i`` and (``keep[..., j]`` or ``j == i``), like ``self_attention_mask``; its
        layout is :func:`word_dropout_block_layout`.
    """
    if flex_attention is None:
        raise RuntimeError(flex_attention_unavailable("cpu"))
    if keep.dtype != torch.bool or keep.dim() not in (2, 3):
        raise InputError(f"keep must be a [B, T] or [B, H, T] bool tensor, got {keep.dtype} "
                         f"{list(keep.shape)}")
    keep = keep if keep.dim() == 3 else keep[:, None]
    partial, full = word_dropout_block_layout(keep, block_size, window)
    t = keep.shape[-1]
    return BlockMask.from_kv_blocks(*_ordered_blocks(partial), *_ordered_blocks(full),
                                    BLOCK_SIZE=block_size, mask_mod=_keep_mask_mod(keep, window),
                                    seq_lengths=(t, t))


def _dense_word_dropout_mask(keep: Tensor, window: int | None = None) -> Tensor:
    """``[B, 1 or H, T, T]`` bool mask of the same pattern (the dense-mask path's own)."""
    return self_attention_mask(keep if keep.dim() == 3 else keep[:, None], causal=True,
                               window=window)


def word_dropout_masks(keep: Tensor, windows: AttentionWindows | None = None
                       ) -> Tensor | dict[str, Tensor]:
    """The boolean 4-D mask(s) of a ``[B, T]`` or ``[B, H, T]`` keep mask for a model with
    ``windows`` (``None``: no sliding window): one ``[B, 1 or H, T, T]`` tensor, or, for a
    model that mixes full and sliding layers, a dict of them keyed by layer type
    (:meth:`AttentionWindows.allowed`)."""
    if windows is None:
        return _dense_word_dropout_mask(keep)
    return windows.allowed(keep)


def _positions(valid: Tensor) -> Tensor:
    """Position ids as transformers derives them from a 2-D mask: real tokens count 0, 1, ...
    (padding gets 0: it is never seen and never predicted)."""
    valid = valid.long()
    return (valid.cumsum(-1) - 1) * valid


def takes_position_ids(model: Any) -> bool:
    """Whether ``model``'s forward takes ``position_ids``."""
    forward = getattr(model, "forward", None)
    try:
        return "position_ids" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


class _LastKeepCache:
    """The values built from the last keep mask seen, one per sliding window. Every layer of a
    forward pass gets the same keep tensor, so masks are built once per step and window (layers
    may alternate between windows). Holding the tensor keeps the identity test sound (a freed
    tensor's id or memory could be reused by the next batch)."""

    def __init__(self, build: Callable[[Tensor, int | None], Any]) -> None:
        self.build = build
        self.entry: tuple[Tensor, int, torch.device, dict[int | None, Any]] | None = None

    def __call__(self, keep: Tensor, device: torch.device, window: int | None = None) -> Any:
        entry = self.entry  # read once: DataParallel replicas run in threads
        if entry is None or entry[0] is not keep or entry[1:3] != (keep._version, device):
            entry = (keep, keep._version, device, {})
            self.entry = entry
        values = entry[3]
        if window not in values:
            values[window] = self.build(keep.to(device), window)
        return values[window]


_block_masks = _LastKeepCache(lambda keep, window: word_dropout_block_mask(
    keep, BLOCK_SIZE, window))
_dense_masks = _LastKeepCache(_dense_word_dropout_mask)
# While not None: one (keep mask given, window applied) entry per call of the flex attention
# function, for the trainer's check of the first word-dropped forward.
_flex_calls: list[tuple[bool, int | None]] | None = None


@contextlib.contextmanager
def _recording_flex_calls():
    global _flex_calls
    _flex_calls = calls = []
    try:
        yield calls
    finally:
        _flex_calls = None


@functools.cache
def _compiled_flex_attention() -> Callable:
    # Compiled once per process; flex attention is only fused (and fast) when compiled.
    return torch.compile(flex_attention)


def word_dropout_flex_attention(module: torch.nn.Module, query: Tensor, key: Tensor,
                                value: Tensor, attention_mask: Tensor | None,
                                scaling: float | None = None, dropout: float = 0.0,
                                word_dropout_keep: Tensor | None = None,
                                **kwargs: Any) -> tuple[Tensor, None]:
    """Attention function registered as :data:`WORD_DROPOUT_FLEX` (transformers'
    ``AttentionInterface`` signature: ``query [B, Hq, T, D]``, ``key``/``value``
    ``[B, Hkv, T, D]``; returns ``[B, T, Hq, D]`` and no weights).

    With ``word_dropout_keep`` (``[B, T]`` or ``[B, H, T]`` bool, padding never kept) it
    computes word-dropped causal self-attention with flex attention (compiled on CUDA),
    ignoring ``attention_mask`` (the keep mask already excludes padding). Without it, it is
    transformers' SDPA attention. Off CUDA, where torch has no flex backward, inputs that need
    gradients get SDPA with the same mask expanded densely on the device.

    The layer's sliding window is the ``sliding_window`` its module passes (Mistral, Qwen2,
    Gemma, ...) or else holds as an attribute; it is applied on columns, like transformers.
    """
    for name, what in (("softcap", "attention-logit softcapping"), ("s_aux", "attention sinks")):
        if kwargs.get(name) is not None:
            raise InputError(f"{type(module).__name__} uses {what} ({name}), which the flex "
                             "word-dropout attention does not apply; use dense word-dropout "
                             "masks")
    # 0 (or False) in a config means no window, as None does.
    window = kwargs.get("sliding_window", getattr(module, "sliding_window", None)) or None
    calls = _flex_calls
    if calls is not None:
        calls.append((word_dropout_keep is not None, window))
    if word_dropout_keep is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if dropout > 0:
        raise InputError(
            "flex word-dropout attention cannot apply attention dropout; set the model's "
            "attention dropout to 0 (GPT-2: attn_pdrop, Llama: attention_dropout) or use "
            "dense word-dropout masks")
    t = query.shape[-2]
    if not getattr(module, "is_causal", True) or (
            key.shape[-2] != t or word_dropout_keep.shape[-1] != t):
        raise InputError("word-dropout keep masks are for causal self-attention over the whole "
                         "sequence (no cache): query length "
                         f"{t}, key length {key.shape[-2]}, keep {list(word_dropout_keep.shape)}")
    _check_window(window)
    if query.device.type != "cuda" and (
            query.requires_grad or key.requires_grad or value.requires_grad):
        # torch has no flex-attention backward off CUDA (2.13): expand the same mask_mod into
        # a dense mask on the device and use SDPA, so CPU training works too (not faster).
        dense = _dense_masks(word_dropout_keep, query.device, window)
        return sdpa_attention_forward(module, query, key, value, dense, dropout=0.0,
                                      scaling=scaling)
    block_mask = _block_masks(word_dropout_keep, query.device, window)
    attend = flex_attention
    if query.device.type == "cuda" and not torch.compiler.is_compiling():
        attend = _compiled_flex_attention()
    out = attend(query, key, value, block_mask=block_mask, scale=scaling,
                 enable_gqa=query.shape[1] != key.shape[1])
    return out.transpose(1, 2).contiguous(), None


def register_word_dropout_flex() -> None:
    """Register :data:`WORD_DROPOUT_FLEX` with transformers (idempotent). Its mask creation is
    SDPA's, so batches without a keep mask get exactly the SDPA path (padding, ``is_causal``)."""
    AttentionInterface.register(WORD_DROPOUT_FLEX, word_dropout_flex_attention)
    AttentionMaskInterface.register(WORD_DROPOUT_FLEX, sdpa_mask)


def use_word_dropout_flex(model: Any) -> Any:
    """Switch ``model`` (a transformers ``PreTrainedModel`` whose attention dispatches through
    ``AttentionInterface``, e.g. GPT-2 or Llama) to :data:`WORD_DROPOUT_FLEX`, in place.

    transformers stores the choice in ``model.config`` (models sharing a config switch
    together); it is not saved with the model. Raises ``ValueError`` when flex attention is
    missing or the model trains with attention dropout (which flex attention cannot apply).
    Returns ``model``.
    """
    if flex_attention is None:
        raise InputError(f"flex word-dropout attention is unavailable: "
                         f"{flex_attention_unavailable('cpu')}")
    dropout = attention_dropout(model.config)
    if dropout > 0:
        raise InputError(f"flex word-dropout attention cannot apply the model's attention dropout"
                         f" ({dropout:g}); set it to 0 in the config (GPT-2: attn_pdrop, Llama: "
                         "attention_dropout) or use dense word-dropout masks")
    problem = flex_unsupported(model.config)
    if problem is not None:
        raise InputError(f"flex word-dropout attention is unavailable: {problem}; use dense "
                         "word-dropout masks")
    register_word_dropout_flex()
    model.set_attn_implementation(WORD_DROPOUT_FLEX)
    if model.config._attn_implementation != WORD_DROPOUT_FLEX:
        raise InputError(f"{type(model).__name__} cannot switch its attention implementation "
                         "(it does not dispatch through transformers' AttentionInterface); use "
                         "dense word-dropout masks")
    return model


class WordDropoutCollator:
    """Wrap a data collator so that word-dropped batches carry word-dropout masks.

    The base collator's batch is returned unchanged when the batch is not word-dropped (see
    :meth:`WordDropout.sample_keep`). Otherwise, with ``attention="mask"``,
    ``attention_mask`` becomes ``[B, H, T, T]`` (per-head draws) or ``[B, 1, T, T]``, causal,
    with the diagonal always allowed; positions where an existing 2-D ``attention_mask`` is 0
    (padding) are never attended to by real tokens. With ``attention="flex"`` the batch keeps
    its 2-D ``attention_mask`` and gains ``word_dropout_keep``, the ``[B, H, T]`` or
    ``[B, T]`` keep mask (padding never kept), for a model switched to
    :data:`WORD_DROPOUT_FLEX` (:func:`use_word_dropout_flex`). Both describe the same pattern.

    ``windows`` (the adapter's ``attention_windows(model)``; ``None``: no sliding window) puts
    the model's sliding windows into the dense masks, as a dict keyed by layer type for models
    that mix full and sliding layers (:func:`word_dropout_masks`). ``position_ids=True`` (for
    models whose forward takes them, :func:`takes_position_ids`) adds the positions the model
    would derive from the 2-D mask to dense-mask batches, which no longer carry that mask.

    Randomness comes from a private ``torch.Generator`` seeded with ``seed``, so the masks are
    reproducible and independent of the global RNG. Inside a ``DataLoader`` worker the
    generator is reseeded from ``seed`` and the worker's own seed, so workers (and epochs
    with fresh workers) draw different masks. Without workers, :meth:`state_dict` gives the
    generator state after any of the last batches collated, so a checkpoint can hold the state
    after the batches actually trained on (the data loader collates ahead of training), and
    :meth:`load_state_dict` resumes from it (:class:`WordDropoutTrainer` does both).
    """

    def __init__(self, base_collator: Callable[[list[Any]], Mapping[str, Any]],
                 word_dropout: WordDropout, num_heads: int, seed: int,
                 attention: str = "mask", windows: AttentionWindows | None = None,
                 position_ids: bool = False) -> None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise InputError(f"num_heads must be an integer >= 1, got {num_heads!r}")
        if attention not in ("flex", "mask"):
            raise InputError(f"attention must be 'flex' or 'mask', got {attention!r}")
        self.base_collator = base_collator
        self.word_dropout = word_dropout
        self.num_heads = num_heads
        self.seed = int(seed)
        self.attention = attention
        self.windows = windows
        self.position_ids = bool(position_ids)
        self._generator: torch.Generator | None = None
        self._worker_seed: int | None = None
        self.batches = 0  # batches collated in this process since the start or the last load
        self._states: dict[int, Tensor] = {}  # generator state before collating batch k

    def _rng(self) -> torch.Generator:
        worker = get_worker_info()
        worker_seed = None if worker is None else worker.seed
        if self._generator is None or worker_seed != self._worker_seed:
            # Mix the worker's seed in (crc32 keeps it deterministic across processes).
            mixed = self.seed if worker_seed is None else zlib.crc32(
                f"{self.seed}:{worker_seed}".encode())
            self._generator = torch.Generator().manual_seed(mixed)
            self._worker_seed = worker_seed
        return self._generator

    def __getstate__(self) -> dict[str, Any]:
        # Generators are rebuilt lazily from the seed (e.g. in spawned DataLoader workers).
        state = dict(self.__dict__)
        state["_generator"] = None
        state["_worker_seed"] = None
        state["_states"] = {}
        return state

    def state_dict(self, batches: int | None = None) -> dict[str, Any]:
        """The seed and the generator state after the first ``batches`` batches collated
        since the start or the last :meth:`load_state_dict` (default: all of them)."""
        batches = self.batches if batches is None else batches
        if batches == self.batches:
            state = self._rng().get_state()
        elif batches in self._states:
            state = self._states[batches]
        else:
            raise InputError(f"the generator state after {batches} batches is no longer known "
                             f"({self.batches} batches collated)")
        return {"seed": self.seed, "generator": state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue drawing from a saved generator state (main-process collation only)."""
        if int(state["seed"]) != self.seed:
            raise InputError(f"the saved word-dropout generator was seeded with {state['seed']}, "
                             f"this collator with {self.seed}; resume with the same --seed")
        self._generator = torch.Generator()
        self._generator.set_state(state["generator"])
        self._worker_seed = None
        self.batches = 0
        self._states = {}

    def _batch_rng(self) -> torch.Generator:
        """The generator for the next batch; in the main process its state is remembered
        first, for checkpoints (subclasses collating other batch layouts call this too)."""
        rng = self._rng()
        if self._worker_seed is None:
            self._states[self.batches] = rng.get_state()
            self._states.pop(self.batches - _HISTORY, None)
            self.batches += 1
        return rng

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        batch = dict(self.base_collator(features))
        input_ids = batch.get("input_ids")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise InputError("word dropout needs a batch with 2-D `input_ids` [batch, seq_len]")
        mask = batch.get("attention_mask")
        if mask is None:
            valid = torch.ones(input_ids.shape, dtype=torch.bool)
        elif isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
            valid = mask.to("cpu", torch.bool)
        else:
            raise InputError(
                "word dropout expects a 2-D `attention_mask` shaped like `input_ids` "
                f"{list(input_ids.shape)}, got {getattr(mask, 'shape', type(mask).__name__)}")
        rng = self._batch_rng()
        keep = self.word_dropout.sample_keep(valid, self.num_heads, rng)
        if keep is None:
            return batch
        if self.attention == "flex":
            batch[KEEP_KWARG] = keep
            return batch
        return self._with_masks(batch, keep, valid)

    def _with_masks(self, batch: dict[str, Any], keep: Tensor, valid: Tensor) -> dict[str, Any]:
        # Padding is never kept, so real tokens never see it; a padding query sees only itself
        # (an all-False row would give NaN attention outputs).
        batch["attention_mask"] = word_dropout_masks(keep, self.windows)
        if self.position_ids and batch.get("position_ids") is None:
            batch["position_ids"] = _positions(valid)
        return batch

    def dense_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """A flex batch (with ``word_dropout_keep``) as the dense-mask batch of the same draw,
        on the keep mask's device."""
        batch = dict(batch)
        keep = batch.pop(KEEP_KWARG)
        mask = batch.get("attention_mask")
        valid = (torch.ones(keep.shape[0], keep.shape[-1], dtype=torch.bool, device=keep.device)
                 if mask is None else mask.to(keep.device, torch.bool))
        return self._with_masks(batch, keep, valid)


class WordDropoutStateCallback(TrainerCallback):
    """Saves a :class:`WordDropoutCollator`'s generator state into every checkpoint folder,
    as it was after the batches trained so far (not after those the loader collated ahead),
    so that a resumed run draws the same masks as an uninterrupted one."""

    def __init__(self, collator: WordDropoutCollator, process_index: int) -> None:
        self.collator = collator
        self.process_index = process_index
        self.start = self.trained = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.start, self.trained = self.collator.batches, 0

    def on_substep_end(self, args, state, control, **kwargs):
        self.trained += 1  # a micro-batch inside a gradient accumulation

    def on_step_end(self, args, state, control, **kwargs):
        self.trained += 1  # the micro-batch that ends an optimizer step

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
        if os.path.isdir(folder):
            torch.save(self.collator.state_dict(self.start + self.trained),
                       os.path.join(folder, RNG_STATE_FILE.format(self.process_index)))


def additive_mask(allowed: Tensor | Mapping[str, Tensor], model: Any
                  ) -> Tensor | dict[str, Tensor]:
    """A boolean 4-D mask (or a dict of them, keyed by layer type) as the additive one eager
    attention needs: transformers 5 hands a 4-D mask to the attention function as it is, and
    eager attention adds it to the scores, so a boolean mask would shift the allowed scores by
    one instead of hiding the others."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return additive_masks(dict(allowed) if isinstance(allowed, Mapping) else allowed, dtype)


def _is_bool_4d(mask: Any) -> bool:
    if isinstance(mask, Mapping):
        return bool(mask) and all(_is_bool_4d(m) for m in mask.values())
    return isinstance(mask, Tensor) and mask.dim() == 4 and mask.dtype == torch.bool


def _mask_heads(mask: Any) -> int:
    """Heads of a dense word-dropout mask (tensor or dict), 0 for any other mask."""
    if isinstance(mask, Mapping):
        mask = next(iter(mask.values()), None)
    return mask.shape[1] if isinstance(mask, Tensor) and mask.dim() == 4 else 0


def _first_head(inputs: dict[str, Any]) -> dict[str, Any]:
    """One draw per example from per-head draws: head 0's mask is a draw of its own."""
    inputs = dict(inputs)
    keep = inputs.get(KEEP_KWARG)
    if isinstance(keep, Tensor) and keep.dim() == 3:
        inputs[KEEP_KWARG] = keep[:, :1]
    mask = inputs.get("attention_mask")
    if isinstance(mask, Mapping):
        inputs["attention_mask"] = {k: m[:, :1] for k, m in mask.items()}
    elif isinstance(mask, Tensor) and mask.dim() == 4:
        inputs["attention_mask"] = mask[:, :1]
    return inputs


def _flex_problem(calls: list[tuple[bool, int | None]], windows: AttentionWindows | None,
                  name: str) -> str | None:
    """What went wrong in a word-dropped forward of a flex model (``calls``: what the
    attention function saw), or ``None``."""
    if not calls:
        return f"{name} never called the {WORD_DROPOUT_FLEX!r} attention function"
    missed = sum(not got_keep for got_keep, _ in calls)
    if missed:
        return (f"the keep mask reached {len(calls) - missed} of {len(calls)} attention calls of "
                f"{name} (its layers do not pass extra keyword arguments on to attention)")
    if windows is not None and not windows.in_model:
        applied = {window for _, window in calls}
        lost = {w for w in windows.windows.values() if w is not None} - applied
        if lost:
            return (f"no attention layer of {name} reported its sliding window "
                    f"{', '.join(map(str, sorted(lost)))} to the flex attention")
    return None


class WordDropoutTrainer(Trainer):
    """``Trainer`` that collates training batches with ``train_data_collator`` (e.g. a
    :class:`WordDropoutCollator`) while evaluation and prediction keep ``data_collator``.

    A :class:`WordDropoutCollator`'s generator state is saved in every checkpoint and restored
    by ``train(resume_from_checkpoint=...)``: without it a resumed run would restart the masks
    from the seed and train differently from an uninterrupted one.

    For a causal LM, a family ``family_refusal`` rejects raises ``ValueError`` here, and a
    collator without windows or positions gets the model's. The first word-dropped training
    batch is checked once: flex keep masks that did not reach every attention call (or a
    window no layer reported) switch to dense masks of the same draws, and per-head masks the
    model rejects to one mask per example (head 0's draw), each with a warning; batches
    collated ahead (or in workers) are converted the same way."""

    def __init__(self, *args: Any, train_data_collator: Callable | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator
        # A model that does not use the flex attention would silently ignore the keep masks.
        attn = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if getattr(train_data_collator, "attention", None) == "flex" and attn != WORD_DROPOUT_FLEX:
            raise InputError(f"a flex word-dropout collator needs a model switched to "
                             f"{WORD_DROPOUT_FLEX!r} (use_word_dropout_flex), this one uses "
                             f"{attn!r}")
        if isinstance(train_data_collator, WordDropoutCollator):
            config = getattr(self.model, "config", None)
            if config is not None and not getattr(config, "is_encoder_decoder", False):
                self._fit_collator_to_model(train_data_collator)
            if self.args.dataloader_num_workers:
                logger.warning("word-dropout masks are drawn in DataLoader workers: a resumed "
                               "run will not draw the masks of an uninterrupted one")
            self.add_callback(WordDropoutStateCallback(train_data_collator,
                                                       self.args.process_index))
        # Set by the check of the first word-dropped training forward (see compute_loss).
        self._word_dropout_checked = False
        self._flex_to_dense = False
        self._per_example_masks = False

    def _fit_collator_to_model(self, collator: WordDropoutCollator) -> None:
        """Refuse families word dropout cannot serve; give the collator the model's sliding
        windows and explicit positions where it lacks them (without them, dense masks would
        turn the windows off, and OPT would read positions from a 4-D mask)."""
        problem = family_refusal(self.model)
        if problem is not None:
            raise InputError(problem)
        if collator.windows is None:
            windows = attention_windows(self.model)
            if windows.smallest is not None and not windows.in_model:
                logger.info("word-dropout masks take %s's sliding windows %s",
                            type(self.model).__name__, windows.windows)
                collator.windows = windows
        if not collator.position_ids and takes_position_ids(self.model):
            collator.position_ids = True

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any
                     ) -> Any:
        return self._word_dropout_loss(model, inputs, *args, **kwargs)

    def _word_dropout_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any
                           ) -> Any:
        collator = self.train_data_collator
        if self._flex_to_dense and KEEP_KWARG in inputs:
            inputs = collator.dense_batch(inputs)
        if self._per_example_masks:
            inputs = _first_head(inputs)
        word_dropped = KEEP_KWARG in inputs or _mask_heads(inputs.get("attention_mask")) > 0
        if (word_dropped and model.training and not self._word_dropout_checked
                and isinstance(collator, WordDropoutCollator)):
            return self._first_word_dropped_loss(model, inputs, *args, **kwargs)
        return self._loss(model, inputs, *args, **kwargs)

    def _loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        mask = inputs.get("attention_mask")
        if attn == "eager" and _is_bool_4d(mask):
            inputs = {**inputs, "attention_mask": additive_mask(mask, model)}
        return super().compute_loss(model, inputs, *args, **kwargs)

    def _first_word_dropped_loss(self, model: Any, inputs: dict[str, Any], *args: Any,
                                 **kwargs: Any) -> Any:
        """The loss of the first word-dropped batch, checked once: a model that never trains
        with the masks it is given would train silently without word dropout."""
        collator = self.train_data_collator
        name = type(self.model).__name__
        if KEEP_KWARG in inputs:
            with _recording_flex_calls() as calls:
                loss = self._loss(model, inputs, *args, **kwargs)
            problem = _flex_problem(calls, collator.windows, name)
            if problem is None:
                self._word_dropout_checked = True
                return loss
            logger.warning("flex word dropout does not work here: %s; training with dense "
                           "word-dropout masks instead", problem)
            self._flex_to_dense = True
            collator.attention = "mask"
            return self._word_dropout_loss(model, inputs, *args, **kwargs)
        if _mask_heads(inputs.get("attention_mask")) > 1:
            try:
                loss = self._loss(model, inputs, *args, **kwargs)
            except torch.OutOfMemoryError:
                raise
            except (ValueError, RuntimeError) as error:
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                logger.warning("%s rejects per-head word-dropout masks (%s); drawing one mask "
                               "per example instead", name, first)
                self._per_example_masks = True
                collator.num_heads = 1
                loss = self._loss(model, _first_head(inputs), *args, **kwargs)
        else:
            loss = self._loss(model, inputs, *args, **kwargs)
        self._word_dropout_checked = True
        return loss

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any,
              **kwargs: Any) -> Any:
        if resume_from_checkpoint and isinstance(self.train_data_collator, WordDropoutCollator):
            self._load_word_dropout_state(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _load_word_dropout_state(self, checkpoint: str | bool) -> None:
        if checkpoint is True:  # the Trainer's own convention: the last checkpoint
            checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint is None:
                return  # the Trainer raises its own error
        path = os.path.join(checkpoint, RNG_STATE_FILE.format(self.args.process_index))
        if not os.path.isfile(path):
            logger.warning("%s has no word-dropout generator state (%s); the masks restart "
                           "from the seed", checkpoint, os.path.basename(path))
            return
        self.train_data_collator.load_state_dict(torch.load(path, weights_only=True))

    def get_train_dataloader(self) -> DataLoader:
        if self.train_data_collator is None:
            return super().get_train_dataloader()
        # The DataLoader captures the collator at creation, so a temporary swap is enough.
        eval_collator = self.data_collator
        self.data_collator = self.train_data_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator
