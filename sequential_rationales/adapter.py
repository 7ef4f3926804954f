"""The one interface between the search algorithms and a concrete model.

Every framework (Hugging Face, fairseq, plain torch modules in tests) is reached through an
object implementing [`ModelAdapter`][sequential_rationales.adapter.ModelAdapter]; the search
code never sees framework types. Batches of context subsets travel as a
[`SubsetBatch`][sequential_rationales.adapter.SubsetBatch], substituted token embeddings as
[`Embeddings`][sequential_rationales.adapter.Embeddings] and attention probabilities as
[`AttentionMaps`][sequential_rationales.adapter.AttentionMaps]. The conventions every adapter
follows (padding, positions, optional members) are described on `ModelAdapter`.
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
    """The device where `model`'s inputs go.

    For a model loaded with `device_map`, whose weights may sit on several devices or be
    offloaded (on `meta` until used), this is the execution device that accelerate's dispatch
    gave the module taking the inputs; otherwise the device of the model's first parameter.

    Args:
        model: The model.
        first: The module that receives the inputs (e.g. the input embedding), asked before
            `model`; `None`: ask `model` only.

    Returns:
        The device to send input tensors to.
    """
    for module in (first, model):
        device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return next(model.parameters()).device


def to_device(tensor: Tensor, device: torch.device | str) -> Tensor:
    """Move `tensor` to `device`.

    A host-to-GPU copy is asynchronous (through pinned memory), so the host goes on building
    the next batch while the GPU works.

    Args:
        tensor: Any tensor.
        device: The destination.

    Returns:
        `tensor` on `device` (`tensor` itself when it is already there).
    """
    device = torch.device(device)
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def parameter_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter.

    Args:
        model: The model.

    Returns:
        That dtype, or `torch.float32` for a model without floating-point parameters.
    """
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


# Copies of a model in other dtypes, kept while the model lives: every adapter of one model
# shares them (translation makes an adapter per sentence, which must not copy the model each).
# Each is kept with the state of the weights it was copied from.
_MODEL_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[torch.dtype, tuple[tuple, nn.Module]]] = (
    weakref.WeakKeyDictionary())

AdapterT = TypeVar("AdapterT")


def weights_state(model: nn.Module) -> tuple:
    """A fingerprint of `model`'s weights.

    It changes whenever a parameter or buffer is replaced or changed in place (an optimizer
    step, `load_state_dict`), so a copy made under another fingerprint is stale.

    Args:
        model: The model.

    Returns:
        A tuple of `(data pointer, version counter)` per parameter and buffer (the version
            is `None` for tensors made under `torch.inference_mode`, which keep none).
    """
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
    """The twin of `adapter` that runs a copy of its model in `dtype`.

    The ready adapters implement `with_dtype` with this. The twin is kept in `adapter._twins`
    (a dict the adapter creates) and the copy of the model is shared by every adapter of that
    model (it costs the model's size in `dtype`); both are made again when the model's weights
    have changed since (see `weights_state`).

    Args:
        adapter: An adapter with `model`, `dtype` and a `_twins` dict.
        dtype: The dtype of the twin.
        rebuild: Builds an adapter of the same kind around a model (the adapter's constructor
            with its settings bound).

    Returns:
        `adapter` itself when `dtype` is its own dtype, else the (kept) twin.

    Raises:
        InputError: When the model is spread over devices by `device_map` (no twin of it is
            made).
    """
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
    """Run the body with every module of `model` in eval mode (dropout off).

    Afterwards each module gets its own mode back: a caller's mix (one dropout left in train
    mode for MC dropout, or one module frozen in eval mode while training) comes back exactly
    as it was. A model already wholly in eval mode is left alone.

    Args:
        model: The model whose modules are switched.

    Example:
        ```python
        with eval_mode(model):
            log_probs = adapter.log_probs(batch)
        ```
    """
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
    """A batch of `N` sparse context subsets, one per row.

    Each row holds only the tokens of its subset, sorted by position, each with its
    **original** 0-based position id. Target (decoder) rows are left-padded, so the predicting
    token is always the last column; source (encoder) rows are right-padded. Padded slots hold
    token id 0 and position 0 and are `False` in the masks.

    Attributes:
        target_ids: `[N, Lt]` target (decoder) token ids, left-padded.
        target_positions: `[N, Lt]` the original position of each target token.
        target_mask: `[N, Lt]` bool, `True` on real tokens.
        source_ids: `[N, Ls]` source (encoder) token ids, right-padded; `None` for language
            models.
        source_positions: `[N, Ls]` the original position of each source token, or `None`.
        source_mask: `[N, Ls]` bool, `True` on real tokens, or `None`.
        equal_lengths: A promise that every row has the same number of target tokens and the
            same number of source tokens: target rows then carry no padding, and an adapter
            may run the model's plain causal path without an attention mask.
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
        """Copy the batch to `device` (asynchronously from host to GPU, through pinned memory).

        Args:
            device: The destination, usually the adapter's `device`.

        Returns:
            A new batch with every tensor on `device`.
        """
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else to_device(t, device)

        return SubsetBatch(move(self.target_ids), move(self.target_positions),
                           move(self.target_mask), move(self.source_ids),
                           move(self.source_positions), move(self.source_mask),
                           self.equal_lengths)


@dataclass
class Embeddings:
    """Token embeddings of a batch, before positions are added.

    Rows and columns are those of the
    [`SubsetBatch`][sequential_rationales.adapter.SubsetBatch] they belong to.

    Attributes:
        target: `[N, Lt, D]` embeddings of the target tokens, laid out like `target_ids`.
        source: `[N, Ls, D]` embeddings of the source tokens, or `None` for language models.
    """

    target: Tensor
    source: Tensor | None = None


@dataclass
class AttentionMaps:
    """Attention probabilities of one full (unmasked) sequence, heads not averaged.

    `T` is the number of target tokens and `S` the number of source tokens. Row `i` of a
    decoder or cross-attention map is the query at target position `i`.

    Attributes:
        decoder_self: `[layers, heads, T, T]` decoder self-attention.
        cross: `[layers, heads, T, S]` cross-attention; `None` for language models.
        encoder_self: `[layers, heads, S, S]` encoder self-attention; `None` for language
            models.
    """

    decoder_self: Tensor
    cross: Tensor | None = None
    encoder_self: Tensor | None = None


@runtime_checkable
class ModelAdapter(Protocol):
    """What the search and the baselines need from a model.

    To rationalize a model of a framework without a ready adapter, write a class with these
    members (no base class is needed: this is a `typing.Protocol`). The ready adapters are
    [`HuggingFaceCausalLM`][sequential_rationales.adapters.huggingface.HuggingFaceCausalLM],
    [`HuggingFaceSeq2Seq`][sequential_rationales.adapters.huggingface_seq2seq.HuggingFaceSeq2Seq],
    [`FairseqLanguageModel`][sequential_rationales.adapters.fairseq.FairseqLanguageModel] and
    [`FairseqTranslationModel`][sequential_rationales.adapters.fairseq.FairseqTranslationModel].

    **Required.** The four attributes below and the three methods: `log_probs` (every method),
    `embed` (the gradient baselines and LRP) and `attentions` (the attention baselines). All
    must exist, since `isinstance(obj, ModelAdapter)` checks for them; a method the model
    cannot support may raise an error that says so.

    **Batches.** Every method takes a
    [`SubsetBatch`][sequential_rationales.adapter.SubsetBatch] of sparse subsets:

    - A subset is fed as its tokens only, sorted by position, each with its **original**
      0-based position id. The adapter adds any framework offset (fairseq's positions start at
      `padding_idx + 1`).
    - Target rows are left-padded, so the predicting token is always the last column; source
      rows are right-padded. Masks are `True` on real tokens. Padded slots hold token id 0 and
      position 0; the adapter must ignore them.
    - `equal_lengths=True` promises that every row has the same number of target tokens and
      the same number of source tokens, so the adapter may run the model's plain causal path
      without an attention mask (the fast path of fused kernels).

    **Optional members**, looked up when present:

    - `score(batch, goals) -> [N, 3]`: per row `log p(goal)`, the argmax id and
      `log p(argmax)` as float64 (see `sequential_rationales.search.scores_from_logits`),
      computed on the model's device so nothing of vocabulary size reaches the host. Without
      it the search reduces `log_probs`.
    - `prefix_cache(batch)` and `score_after_prefix(cache, rows, prefix_length, batch, goals)`:
      let a causal LM reuse the keys and values of rationale prefixes (see `prefix_cache` of
      [`HuggingFaceCausalLM`][sequential_rationales.adapters.huggingface.HuggingFaceCausalLM]).
    - `baseline_defaults`: a dict over
      [`BASELINE_DEFAULTS`][sequential_rationales.baselines.BASELINE_DEFAULTS] that makes the
      gradient baselines follow the paper's code for the framework (integrated-gradient
      steps, rule and input, and which embedding the signed gradient multiplies);
      `input_embedding(batch)`: what the first layer sees (token plus position embedding
      where positions are added, the token embedding for rotary models);
      `input_embedding_scale`: the `(target, source)` factors `c` in
      `c * token embedding + positions`. See [`baselines`][sequential_rationales.baselines].
    - `logits(batch, embeddings=None) -> [N, V]`: the next-token logits before the softmax,
      which [LRP][sequential_rationales.lrp] explains.
    - `model`: the torch module. LRP hooks its layers (it needs `model` and `logits`), IBA
      freezes its parameters while it optimises, `train_extractor(finetune=True)` trains it
      and `precision="auto"` checks it.
    - `layers() -> {"source": [...], "target": [...]}`: the transformer blocks of the encoder
      and of the decoder, where [IBA][sequential_rationales.iba] places its bottleneck and
      the [learned extractor][sequential_rationales.extractor] reads hidden states. Their
      hidden states follow the batch's layout (target rows left-padded, source rows
      right-padded) unless the adapter says otherwise: `hidden_time_major` (`[L, N, D]`,
      fairseq) or `hidden_target_by_position` (target rows scattered to their original
      positions, right-padded).
    - `dtype` and `with_dtype(dtype)`: the model's dtype and this adapter on a copy of the
      model in another dtype, which `precision="bf16"` and `"bf16-exact"` need.
    - For translation models, `source_vocab_size` and `max_source_positions` (checked when
      present) and the conventions that
      [`conditional_problem`][sequential_rationales.sequences.conditional_problem] checks:
      `source_eos` (ends every source and stays visible), `target_bos` (begins every target),
      `source_pad` and `pad` (must not occur).

    Attributes:
        vocab_size: Number of output classes; target ids must be below it.
        max_positions: Largest sequence length the model accepts (`None`: unbounded).
        is_conditional: `True` when the model reads a source sequence (translation).
        device: Where batches are sent.
    """

    vocab_size: int
    max_positions: int | None
    is_conditional: bool
    device: torch.device

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Log-probabilities of the next target token of each row.

        That is the token that follows the last target token (the last column) of the row.

        Args:
            batch: `N` sparse subsets.
            embeddings: Token embeddings shaped like those of
                [`embed`][sequential_rationales.adapter.ModelAdapter.embed] that replace the
                model's embedding lookup (the model still adds positions); the gradient
                baselines pass scaled, differentiable embeddings here. `None`: look up the
                batch's token ids.

        Returns:
            `[N, V]` log-probabilities, `V` = `vocab_size`.
        """
        ...

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """Token embeddings of the batch, before positions are added.

        Args:
            batch: `N` sparse subsets.

        Returns:
            `target` `[N, Lt, D]` and, for translation models, `source` `[N, Ls, D]`: what
                `log_probs(batch, embeddings)` accepts in place of its own lookup.
        """
        ...

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Attention maps of the single full sequence in `batch`.

        Args:
            batch: One row (`N = 1`) without padding: the whole context of the last target.

        Returns:
            The attention probabilities of every layer and head.
        """
        ...
