"""The one interface between the search algorithms and a concrete model.

Every framework (Hugging Face, fairseq, plain torch modules in tests) is reached through an
object implementing :class:`ModelAdapter`. The search code never sees framework types.

Conventions shared by all adapters
----------------------------------
* A *subset* of the context is fed sparsely: only its tokens, sorted by position, each with its
  **original** 0-based position id. Adapters add any framework offset (fairseq starts at
  ``padding_idx + 1``).
* Target (decoder) rows are **left-padded**, so the predicting token is always the last column.
  Source (encoder) rows are **right-padded**. Masks are ``True`` on real tokens. Padded slots
  hold token id 0 and position 0; adapters must ignore them.
* ``log_probs`` returns log-probabilities of the token that follows the last target token.
* ``equal_lengths=True`` promises that every row has the same number of target tokens and the
  same number of source tokens, so target rows carry no padding and an adapter may run the
  model's plain causal path without an attention mask (the fast path of fused kernels).
* An adapter may also define ``score(batch, goals) -> [N, 3]``: the search's per-row numbers
  (``log p(goal)``, argmax id, ``log p(argmax)``; see
  :func:`sequential_rationales.search.scores_from_logits`) computed on the model's device, so
  nothing of vocabulary size reaches the host. Without it the search reduces ``log_probs``.
* The gradient baselines follow the paper's code per framework. An adapter may say how:
  ``baseline_defaults`` (integrated-gradient steps and rule, which embedding the signed
  gradient multiplies), ``input_embedding(batch)`` (what the first layer sees: token plus
  position embedding where positions are added, the token embedding for rotary models) and
  ``input_embedding_scale``; see :mod:`sequential_rationales.baselines`.
* Methods that look inside the model use two optional members: ``logits(batch, embeddings)``
  (the next-token logits before the softmax, what relevance propagation explains) and
  ``layers()`` (``{"source": [...], "target": [...]}``: the transformer blocks of the encoder
  and of the decoder, where an information bottleneck is placed). Their hidden states follow
  the batch's layout (target rows left-padded, source rows right-padded) unless the adapter
  says otherwise: ``hidden_time_major`` (``[L, N, D]``, fairseq) and
  ``hidden_target_by_position`` (target rows scattered to their positions, right-padded).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor, nn

from .validation import InputError

# Methods through which a block may run its masked (sparse) path instead of ``forward`` (the
# fairseq plugin's layers): module hooks do not see them, so code that watches or changes a
# block's hidden states wraps these too.
MASKED_FORWARDS = ("forward_with_mask", "forward_with_masks")


def input_device(model: nn.Module, first: nn.Module | None = None) -> torch.device:
    """Where ``model``'s inputs go: the execution device that accelerate's dispatch gave the
    module taking them (``first``, else the model) when it was loaded with ``device_map``, whose
    weights may sit on other devices or be offloaded (on ``meta`` until used); else the device
    of its first parameter."""
    for module in (first, model):
        device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next(model.parameters()).device


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """``tensor`` on ``device``; a host-to-GPU copy is asynchronous (through pinned memory), so
    the host goes on building the next batch while the GPU works."""
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter (float32 without one)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


# Copies of a model in other dtypes, kept while the model lives: every adapter of one model
# shares them (translation makes an adapter per sentence, which must not copy the model each).
# Each is kept with the state of the weights it was copied from.
_MODEL_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, tuple[tuple, nn.Module]]] = (
    weakref.WeakKeyDictionary())

AdapterT = TypeVar("AdapterT")


def weights_state(model: nn.Module) -> tuple:
    """Changes whenever a weight of ``model`` is replaced or changed in place (an optimizer
    step, ``load_state_dict``): a copy made from other weights is stale."""
    state = []
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        try:
            version = tensor._version
        except RuntimeError:  # a tensor made under inference_mode keeps no version
            version = None
        state.append((tensor.data_ptr(), version))
    return tuple(state)


def dtype_twin(adapter: AdapterT, dtype: torch.dtype, rebuild: Callable[[nn.Module], AdapterT]
               ) -> AdapterT:
    """``adapter``'s twin in ``dtype``: ``adapter`` itself for its own ``dtype``, else
    ``rebuild`` (the adapter's constructor, settings bound) applied to a copy of
    ``adapter.model`` in ``dtype``. The twin is kept in ``adapter._twins`` and the copy is
    shared by every adapter of the model (it costs the model's size in ``dtype``); both are
    made again when the model's weights have changed since."""
    if dtype == adapter.dtype:
        return adapter
    model = adapter.model
    state = weights_state(model)
    kept = adapter._twins.get(dtype)
    if kept is None or kept[0] != state:
        if getattr(model, "hf_device_map", None) is not None:
            raise InputError("a lower-precision twin of a model spread by device_map is not "
                             "made; use precision='fp32'")
        copies = _MODEL_COPIES.setdefault(model, {})
        if dtype not in copies or copies[dtype][0] != state:
            copies[dtype] = (state, copy.deepcopy(model).to(dtype))
        adapter._twins[dtype] = kept = (state, rebuild(copies[dtype][1]))
    return kept[1]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run with every module in eval mode (dropout off), then give each module back its own
    mode: a caller's mix (one dropout left in train mode for MC dropout, or one frozen in eval
    mode while training) comes back exactly as it was. A model already wholly in eval mode is
    left alone."""
    modules = [m for m in model.modules() if m.training]
    if not modules:
        yield
        return
    for module in modules:
        module.training = False
    try:
        yield
    finally:
        for module in modules:
            module.training = True


@dataclass
class SubsetBatch:
    """A batch of N sparse context subsets.

    Shapes: ``target_*`` are ``[N, Lt]`` (left-padded), ``source_*`` are ``[N, Ls]``
    (right-padded) or ``None`` for language models.
    """

    target_ids: Tensor
    target_positions: Tensor
    target_mask: Tensor
    source_ids: Tensor | None = None
    source_positions: Tensor | None = None
    source_mask: Tensor | None = None
    equal_lengths: bool = False

    def __len__(self) -> int:
        return self.target_ids.shape[0]

    def to(self, device: torch.device | str) -> SubsetBatch:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else to_device(t, device)

        return SubsetBatch(move(self.target_ids), move(self.target_positions),
                           move(self.target_mask), move(self.source_ids),
                           move(self.source_positions), move(self.source_mask),
                           self.equal_lengths)


@dataclass
class Embeddings:
    """Token embeddings (before positions are added) for a :class:`SubsetBatch`.

    ``target``: ``[N, Lt, D]``; ``source``: ``[N, Ls, D]`` or ``None``.
    """

    target: Tensor
    source: Tensor | None = None


@dataclass
class AttentionMaps:
    """Attention probabilities of one full (unmasked) sequence, heads not averaged.

    ``decoder_self``: ``[layers, heads, T, T]``; ``cross``: ``[layers, heads, T, S]``;
    ``encoder_self``: ``[layers, heads, S, S]``. The last two are ``None`` for language models.
    Row ``i`` is the query at target position ``i``.
    """

    decoder_self: Tensor
    cross: Tensor | None = None
    encoder_self: Tensor | None = None


@runtime_checkable
class ModelAdapter(Protocol):
    """What the search and the baselines need from a model.

    Attributes:
        vocab_size: number of output classes; ids must be below it.
        max_positions: largest sequence length the model accepts (``None``: unbounded).
        is_conditional: ``True`` when the model reads a source sequence (translation).
        device: where batches are sent.
    """

    vocab_size: int
    max_positions: int | None
    is_conditional: bool
    device: torch.device

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """``[N, V]`` log-probabilities of the next target token of each row.

        When ``embeddings`` is given, those token embeddings replace the embedding lookup
        (positions are still added by the model); used by the gradient baselines.
        """
        ...

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """Token embeddings of the batch, as the model's first layer receives them."""
        ...

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Attention maps of the single full sequence in ``batch`` (N must be 1)."""
        ...
