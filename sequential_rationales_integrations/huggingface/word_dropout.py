"""Word dropout for Hugging Face causal language models (compatibility training).

Two ways to give a model the word-dropped attention pattern (query ``i`` sees key ``j`` iff
``j <= i`` and ``j`` is kept or ``j == i``):

* ``"mask"``: Hugging Face causal LMs (GPT-2, Llama, ... with the ``sdpa`` or ``eager``
  attention) accept a boolean 4-D ``attention_mask`` of shape ``[B, 1, T, T]`` or
  ``[B, H, T, T]`` (``True`` = may attend) and use it as given, so :class:`WordDropoutCollator`
  just replaces the batch's attention mask; no model code is patched. Simple and works
  everywhere, but a dense mask turns off the fused (flash) attention kernels.
* ``"flex"``: the collator adds only the compact keep mask (``[B, T]`` or ``[B, H, T]``) to the
  batch, under the keyword ``word_dropout_keep``; the model's attention implementation is set
  to :data:`WORD_DROPOUT_FLEX` (see :func:`use_word_dropout_flex`), a function registered with
  transformers' ``AttentionInterface`` that runs PyTorch's fused ``flex_attention`` with a
  block-sparse mask built from the keep mask. Batches without a keep mask (not word-dropped,
  evaluation) take transformers' ordinary SDPA path. Model forwards (GPT-2, Llama, ...) pass
  unknown keyword arguments down to the attention function, which is how the keep mask
  reaches it.

:class:`WordDropoutTrainer` applies the collator to training batches only, so evaluation sees
the full context.
"""

from __future__ import annotations

import functools
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
    "use_word_dropout_flex",
    "word_dropout_block_layout",
    "word_dropout_block_mask",
    "word_dropout_flex_attention",
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
                raise ValueError(
                    f"{type(config).__name__}.{name} must be a positive integer to draw "
                    f"per-head word-dropout masks, got {heads!r}; use per_head=False")
            return heads
    raise ValueError(
        f"{type(config).__name__} has neither `num_attention_heads` nor `n_head`, so per-head "
        "word-dropout masks cannot be built; use per_head=False (one mask per example)")


def attention_dropout(config: Any) -> float:
    """Attention-probability dropout of a Hugging Face config (``attn_pdrop`` for GPT-2,
    ``attention_dropout`` for Llama and most others; 0 when the config has none)."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
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


def choose_word_dropout_attention(requested: str, device: str | torch.device,
                                  config: Any) -> tuple[str, str]:
    """Resolve ``"auto"``/``"flex"``/``"mask"`` to ``("flex" | "mask", reason)``.

    ``auto`` takes flex attention on CUDA when it is available and the model has no attention
    dropout (flex attention cannot drop attention probabilities); otherwise the dense mask.
    An explicit ``flex`` that cannot run raises ``ValueError``.
    """
    if requested not in WORD_DROPOUT_ATTENTION_MODES:
        raise ValueError(f"word-dropout attention must be one of "
                         f"{', '.join(WORD_DROPOUT_ATTENTION_MODES)}, got {requested!r}")
    if requested == "mask":
        return "mask", "requested"
    problem = flex_attention_unavailable(device)
    dropout = attention_dropout(config)
    if problem is None and dropout > 0:
        problem = (f"the model has attention dropout {dropout:g} and flex attention cannot drop "
                   "attention probabilities; set it to 0 in the model config (GPT-2: attn_pdrop,"
                   " Llama: attention_dropout)")
    if requested == "flex":
        if problem is not None:
            raise ValueError(f"flex word-dropout attention is unavailable: {problem}; use the "
                             "dense-mask mode instead")
        return "flex", "requested"
    if torch.device(device).type != "cuda":
        return "mask", "not on CUDA (flex attention only pays off as a compiled GPU kernel)"
    if problem is not None:
        return "mask", problem
    return "flex", "CUDA with flex attention available"


def _keep_mask_mod(keep: Tensor) -> Callable:
    """flex ``mask_mod`` for a ``[B, H, T]`` keep mask (``H`` = 1: shared by all heads)."""
    if keep.shape[1] == 1:
        def mask_mod(b, h, q, kv):
            return (kv <= q) & (keep[b, 0, kv] | (q == kv))
    else:
        def mask_mod(b, h, q, kv):
            return (kv <= q) & (keep[b, h, kv] | (q == kv))
    return mask_mod


def _ordered_blocks(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """Counts and indices (selected blocks first) of a ``[..., Q blocks, KV blocks]`` bool."""
    counts = blocks.sum(-1, dtype=torch.int32)
    indices = torch.argsort(blocks.to(torch.int8), dim=-1, descending=True, stable=True)
    return counts, indices.to(torch.int32)


def word_dropout_block_layout(keep: Tensor, block_size: int = BLOCK_SIZE
                              ) -> tuple[Tensor, Tensor]:
    """Block-sparse layout of the word-dropped causal pattern of a ``[B, H, T]`` keep mask.

    Returns ``(partial, full)``, bool ``[B, H, N, N]`` over ``N = ceil(T / block_size)``
    query x key blocks. It is computed from per-block keep counts (``O(B*H*T)``), never from
    the dense ``T x T`` mask: a key block strictly below the diagonal is full when all its keys
    are kept, skipped when none is, partial otherwise; diagonal blocks are always partial.
    """
    b, h, t = keep.shape
    n = -(-t // block_size)
    padded = keep.new_zeros(b, h, n * block_size)
    padded[..., :t] = keep
    kept = padded.view(b, h, n, block_size).sum(-1)[:, :, None, :]  # [B, H, 1, KV blocks]
    below = torch.ones(n, n, dtype=torch.bool, device=keep.device).tril(-1)
    full = below & (kept == block_size)
    diagonal = torch.eye(n, dtype=torch.bool, device=keep.device)
    partial = (below & (kept > 0) & (kept < block_size)) | diagonal
    return partial, full


def word_dropout_block_mask(keep: Tensor, block_size: int = BLOCK_SIZE) -> BlockMask:
    """Flex-attention ``BlockMask`` of the word-dropped causal pattern of ``keep``.

    Args:
        keep: ``[B, T]`` or ``[B, H, T]`` bool (as drawn by :class:`WordDropout`).
        block_size: tile size of the block-sparse layout.
    Returns:
        a ``BlockMask`` of shape ``[B, 1 or H, T, T]``: query ``i`` sees key ``j`` iff
        ``j <= i`` and (``keep[..., j]`` or ``j == i``), like ``self_attention_mask``; its
        layout is :func:`word_dropout_block_layout`.
    """
    if flex_attention is None:
        raise RuntimeError(flex_attention_unavailable("cpu"))
    if keep.dtype != torch.bool or keep.dim() not in (2, 3):
        raise ValueError(f"keep must be a [B, T] or [B, H, T] bool tensor, got {keep.dtype} "
                         f"{list(keep.shape)}")
    keep = keep if keep.dim() == 3 else keep[:, None]
    partial, full = word_dropout_block_layout(keep, block_size)
    t = keep.shape[-1]
    return BlockMask.from_kv_blocks(*_ordered_blocks(partial), *_ordered_blocks(full),
                                    BLOCK_SIZE=block_size, mask_mod=_keep_mask_mod(keep),
                                    seq_lengths=(t, t))


def _dense_word_dropout_mask(keep: Tensor) -> Tensor:
    """``[B, 1 or H, T, T]`` bool mask of the same pattern (the dense-mask path's own)."""
    return self_attention_mask(keep if keep.dim() == 3 else keep[:, None], causal=True)


class _LastKeepCache:
    """The value built from the last keep mask seen. Every layer of a forward pass gets the
    same keep tensor, so masks are built once per step. Holding the tensor keeps the identity
    test sound (a freed tensor's id or memory could be reused by the next batch)."""

    def __init__(self, build: Callable[[Tensor], Any]) -> None:
        self.build = build
        self.entry: tuple[Tensor, int, torch.device, Any] | None = None

    def __call__(self, keep: Tensor, device: torch.device) -> Any:
        entry = self.entry  # read once: DataParallel replicas run in threads
        if entry is not None and entry[0] is keep and entry[1:3] == (keep._version, device):
            return entry[3]
        value = self.build(keep.to(device))
        self.entry = (keep, keep._version, device, value)
        return value


_block_masks = _LastKeepCache(word_dropout_block_mask)
_dense_masks = _LastKeepCache(_dense_word_dropout_mask)


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
    """
    if word_dropout_keep is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    if dropout > 0:
        raise ValueError(
            "flex word-dropout attention cannot apply attention dropout; set the model's "
            "attention dropout to 0 (GPT-2: attn_pdrop, Llama: attention_dropout) or use "
            "dense word-dropout masks")
    t = query.shape[-2]
    if not getattr(module, "is_causal", True) or getattr(module, "sliding_window", None) or (
            key.shape[-2] != t or word_dropout_keep.shape[-1] != t):
        raise ValueError("word-dropout keep masks are for causal self-attention over the whole "
                         "sequence (no cache, no sliding window): query length "
                         f"{t}, key length {key.shape[-2]}, keep {list(word_dropout_keep.shape)}")
    if query.device.type != "cuda" and (
            query.requires_grad or key.requires_grad or value.requires_grad):
        # torch has no flex-attention backward off CUDA (2.13): expand the same mask_mod into
        # a dense mask on the device and use SDPA, so CPU training works too (not faster).
        dense = _dense_masks(word_dropout_keep, query.device)
        return sdpa_attention_forward(module, query, key, value, dense, dropout=0.0,
                                      scaling=scaling)
    block_mask = _block_masks(word_dropout_keep, query.device)
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
        raise ValueError(f"flex word-dropout attention is unavailable: "
                         f"{flex_attention_unavailable('cpu')}")
    dropout = attention_dropout(model.config)
    if dropout > 0:
        raise ValueError(f"flex word-dropout attention cannot apply the model's attention dropout"
                         f" ({dropout:g}); set it to 0 in the config (GPT-2: attn_pdrop, Llama: "
                         "attention_dropout) or use dense word-dropout masks")
    register_word_dropout_flex()
    model.set_attn_implementation(WORD_DROPOUT_FLEX)
    if model.config._attn_implementation != WORD_DROPOUT_FLEX:
        raise ValueError(f"{type(model).__name__} cannot switch its attention implementation "
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
                 attention: str = "mask") -> None:
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"num_heads must be an integer >= 1, got {num_heads!r}")
        if attention not in ("flex", "mask"):
            raise ValueError(f"attention must be 'flex' or 'mask', got {attention!r}")
        self.base_collator = base_collator
        self.word_dropout = word_dropout
        self.num_heads = num_heads
        self.seed = int(seed)
        self.attention = attention
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
            raise ValueError(f"the generator state after {batches} batches is no longer known "
                             f"({self.batches} batches collated)")
        return {"seed": self.seed, "generator": state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue drawing from a saved generator state (main-process collation only)."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"the saved word-dropout generator was seeded with {state['seed']}, "
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
            raise ValueError("word dropout needs a batch with 2-D `input_ids` [batch, seq_len]")
        mask = batch.get("attention_mask")
        if mask is None:
            valid = torch.ones(input_ids.shape, dtype=torch.bool)
        elif isinstance(mask, torch.Tensor) and mask.shape == input_ids.shape:
            valid = mask.to("cpu", torch.bool)
        else:
            raise ValueError(
                "word dropout expects a 2-D `attention_mask` shaped like `input_ids` "
                f"{list(input_ids.shape)}, got {getattr(mask, 'shape', type(mask).__name__)}")
        rng = self._batch_rng()
        keep = self.word_dropout.sample_keep(valid, self.num_heads, rng)
        if keep is None:
            return batch
        if self.attention == "flex":
            batch[KEEP_KWARG] = keep
            return batch
        # Padding is never kept, so real tokens never see it; a padding query sees only itself
        # (an all-False row would give NaN attention outputs).
        allowed = self_attention_mask(keep, causal=True)  # [B, (H,) T, T]
        batch["attention_mask"] = allowed if allowed.dim() == 4 else allowed[:, None]
        return batch


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


def additive_mask(allowed: Tensor, model: Any) -> Tensor:
    """A boolean 4-D mask as the additive one eager attention needs: transformers 5 hands a
    4-D mask to the attention function as it is, and eager attention adds it to the scores,
    so a boolean mask would shift the allowed scores by one instead of hiding the others."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


class WordDropoutTrainer(Trainer):
    """``Trainer`` that collates training batches with ``train_data_collator`` (e.g. a
    :class:`WordDropoutCollator`) while evaluation and prediction keep ``data_collator``.

    A :class:`WordDropoutCollator`'s generator state is saved in every checkpoint and restored
    by ``train(resume_from_checkpoint=...)``: without it a resumed run would restart the masks
    from the seed and train differently from an uninterrupted one."""

    def __init__(self, *args: Any, train_data_collator: Callable | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_data_collator = train_data_collator
        # A model that does not use the flex attention would silently ignore the keep masks.
        attn = getattr(getattr(self.model, "config", None), "_attn_implementation", None)
        if getattr(train_data_collator, "attention", None) == "flex" and attn != WORD_DROPOUT_FLEX:
            raise ValueError(f"a flex word-dropout collator needs a model switched to "
                             f"{WORD_DROPOUT_FLEX!r} (use_word_dropout_flex), this one uses "
                             f"{attn!r}")
        if isinstance(train_data_collator, WordDropoutCollator):
            if self.args.dataloader_num_workers:
                logger.warning("word-dropout masks are drawn in DataLoader workers: a resumed "
                               "run will not draw the masks of an uninterrupted one")
            self.add_callback(WordDropoutStateCallback(train_data_collator,
                                                       self.args.process_index))

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any
                     ) -> Any:
        attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
        mask = inputs.get("attention_mask")
        if attn == "eager" and mask is not None and mask.dim() == 4 and mask.dtype == torch.bool:
            inputs = {**inputs, "attention_mask": additive_mask(mask, model)}
        return super().compute_loss(model, inputs, *args, **kwargs)

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
