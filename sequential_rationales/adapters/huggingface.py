"""Adapter for Hugging Face causal language models (GPT-2, Llama, Qwen2, ...).

Only torch is imported here: the model is any `PreTrainedModel`-like module whose
`forward` takes `input_ids` / `inputs_embeds` and an additive 4-D `attention_mask`.

Two ways to feed a sparse subset:

* **sparse** (models whose `forward` takes `position_ids`): only the kept tokens, with
  their original position ids. Fast, and exactly what the paper evaluates. A batch of equal
  lengths (`SubsetBatch.equal_lengths`) runs with an all-ones 2-D mask, which transformers
  turns into the plain causal path (`is_causal` in SDPA, fused kernels); the mask must be
  given, because without one transformers reads gaps in `position_ids` as packed sequences.
* **masked full sequence** (fallback for models without `position_ids`): the prefix up to the
  predicting token with a 4-D mask in which every query sees itself and the kept positions.
  Numerically the same prediction (tested), at the cost of the full prefix length.

Sliding windows (Mistral, Gemma2/3, Qwen2, Cohere2, GPT-OSS, GPT-Neo's local layers, ...) count
original positions: a query at position `p` sees a kept key at `q` only if `p - q` is
below the window, whichever tokens were dropped between them. While no row spans the window
the fused causal path runs unchanged; otherwise every row gets a 4-D mask with the window on
original positions (one per layer type where the model mixes full and sliding layers and takes
a dict of masks). Models that apply a window themselves, on columns (GPT-Neo), run the masked
full sequence, where columns are positions.

Families that cannot be served exactly are refused in one sentence when the adapter is built:
ALiBi biases computed from the 2-D mask (Bloom, Falcon with `alibi`), recurrent and
state-space layers (Mamba, RWKV, RecurrentGemma, hybrids), chunked attention, byte patching,
multi-codebook inputs, attention implementations that cannot take a 4-D mask. Cheap probes
(forward passes of ten tokens, once per model) guard the rest, including families this module
has never seen: the model must be causal (a later token never changes an earlier prediction:
not BERT-like), feeding a subset sparsely must give the prediction of the masked full sequence,
which itself must not read the dropped tokens (a model whose sparse input disagrees is run
masked, one that leaks is refused), and a declared sliding window must change predictions
(Moshi declares one it never applies). `tests/test_model_families.py` checks every family of
the pinned transformers against a reference built from 2-D masks alone.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..adapter import (
    AttentionMaps,
    Embeddings,
    SubsetBatch,
    dtype_twin,
    eval_mode,
    input_device,
    parameter_dtype,
)
from ..search import scores_from_logits
from ..validation import InputError
from ..word_dropout import self_attention_mask


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the body with eager attention, then restore the model's own implementation.

    Fused kernels (SDPA, flash attention) do not return attention probabilities.

    Args:
        model: A Hugging Face model (switched through `set_attn_implementation` when it has
            one and does not run eager attention already).
    """
    impl = getattr(model.config, "_attn_implementation", None)
    switch = impl not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(impl)


def additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """Convert a boolean attention mask to an additive one.

    transformers 5 hands a 4-D mask to the attention function as it is, and eager attention adds
    it to the scores, so a boolean mask would silently add 1 to the allowed scores instead of
    hiding the others. SDPA takes either.

    Args:
        allowed: Boolean mask, `True` where a query may attend to a key.
        dtype: The dtype of the result.

    Returns:
        A mask of `allowed`'s shape: 0 where allowed, the dtype's minimum elsewhere.
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min)


def causal_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """The additive causal self-attention mask of rows whose real tokens are `valid`.

    Keys are restricted to `valid`; every query sees itself, so a padding query never has an
    empty row (which would produce NaNs).

    Args:
        valid: `[N, L]` bool, `True` on the tokens that may be attended to.
        dtype: The dtype of the result.

    Returns:
        `[N, 1, L, L]` additive mask (see `additive`).
    """
    return additive(self_attention_mask(valid)[:, None], dtype)


def text_config(config: object) -> object:
    """The text model's config of a composite (multimodal) config.

    Args:
        config: A Hugging Face config.

    Returns:
        `config.get_text_config()` where the config has it, else `config`.
    """
    get_text_config = getattr(config, "get_text_config", None)
    return get_text_config() if callable(get_text_config) else config


# Probe outcomes per model (the layout to use, whether a declared window applies), forgotten
# with the model.
_PROBED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Layer types of transformers' configs whose attention a mask on original positions can serve.
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention")
# Families whose layers carry state from token to token (recurrences, state-space models): a
# dropped token still reaches the later ones, so "only the subset is visible" cannot hold.
RECURRENT_MODEL_TYPES = ("mamba", "mamba2", "falcon_mamba", "rwkv", "xlstm", "recurrent_gemma")


@dataclass(frozen=True)
class AttentionWindows:
    """How far back the model's layers attend, as its config declares it.

    Attributes:
        windows: Each mask key's window (`None`: full causal attention). Keys are the layer
            types transformers keys its masks by (`"full_attention"`, `"sliding_attention"`)
            for models that take a dict of masks (`keyed`), else `""` (one mask serves every
            layer).
        keyed: Whether the model takes a dict of masks keyed by layer type.
        in_model: Whether the model applies its windows itself, on columns (GPT-Neo's local
            layers), so a mask must not repeat them and subsets must run scattered to their
            original positions.
    """

    windows: dict[str, int | None]
    keyed: bool = False
    in_model: bool = False

    @property
    def smallest(self) -> int | None:
        """The smallest window of any layer, or `None` when every layer attends fully."""
        return min((w for w in self.windows.values() if w is not None), default=None)

    def allowed(self, kept: Tensor, positions: Tensor | None = None
                ) -> Tensor | dict[str, Tensor]:
        """The boolean causal 4-D mask(s) of keep masks `kept`, each layer type's window applied.

        A model that applies its windows itself (GPT-Neo) does not get them twice.

        Args:
            kept: `[N, L]` or `[N, H, L]` bool, `True` on the tokens that may be attended to.
            positions: `[N, L]` the original position of each column; `None`: the columns are
                the positions.

        Returns:
            `[N, 1 or H, L, L]` bool: one tensor, or a dict keyed by layer type where the
                model takes one.
        """
        windows = {key: None if self.in_model else window
                   for key, window in self.windows.items()}
        heads = kept if kept.dim() == 3 else kept[:, None]
        built = {window: self_attention_mask(heads, window=window, positions=positions)
                 for window in set(windows.values())}
        if len(built) == 1:
            return next(iter(built.values()))
        return {key: built[window] for key, window in windows.items()}

    def masks(self, kept: Tensor, positions: Tensor | None, dtype: torch.dtype
              ) -> Tensor | dict[str, Tensor]:
        """[`allowed`][sequential_rationales.adapters.huggingface.AttentionWindows.allowed] as
        additive masks (what eager attention needs).

        Args:
            kept: As for `allowed`.
            positions: As for `allowed`.
            dtype: The dtype of the masks.

        Returns:
            One additive mask or a dict of them (see `additive`).
        """
        return additive_masks(self.allowed(kept, positions), dtype)


def additive_masks(allowed: Tensor | dict[str, Tensor], dtype: torch.dtype
                   ) -> Tensor | dict[str, Tensor]:
    """`additive` of a mask or of a dict of masks.

    Layer types that share a mask share its conversion.

    Args:
        allowed: A boolean mask, or a dict of them keyed by layer type.
        dtype: The dtype of the result.

    Returns:
        The additive mask(s), in the same structure as `allowed`.
    """
    if not isinstance(allowed, dict):
        return additive(allowed, dtype)
    converted: dict[int, Tensor] = {}
    for mask in allowed.values():
        if id(mask) not in converted:
            converted[id(mask)] = additive(mask, dtype)
    return {key: converted[id(mask)] for key, mask in allowed.items()}


def _takes_keyed_masks(model: nn.Module) -> bool:
    """Whether the model's base forward accepts a dict of masks keyed by layer type
    (transformers' convention for models that mix full and sliding attention)."""
    forward = type(getattr(model, "base_model", model)).forward
    try:
        source = inspect.getsource(inspect.unwrap(forward))
    except (OSError, TypeError):
        return False
    return "attention_mask, dict)" in source


def attention_windows(model: nn.Module) -> AttentionWindows:
    """The sliding windows of `model`'s layers.

    Args:
        model: A Hugging Face causal LM.

    Returns:
        The windows (see `AttentionWindows`); a window the config declares but the model does
            not apply (Moshi) is dropped.

    Raises:
        InputError: For attention this adapter cannot restrict to original positions (chunked
            attention, layer types other than full and sliding attention, sliding layers
            without an integer `sliding_window`, mixed full and sliding layers with a single
            mask, unknown GPT-Neo attention types).
    """
    config = text_config(model.config)
    name = type(model).__name__
    refuse = f"{name} cannot be rationalized exactly"
    if getattr(config, "model_type", None) == "gpt_neo":
        kinds = set(config.attention_layers)
        if not kinds <= {"global", "local"}:
            raise InputError(f"{refuse}: unknown GPT-Neo attention types {sorted(kinds)}")
        return AttentionWindows({k: config.window_size if k == "local" else None
                                 for k in sorted(kinds)}, in_model=True)
    if getattr(config, "attention_chunk_size", None):
        raise InputError(f"{refuse}: its chunked attention splits the context at fixed "
                         "positions, which this adapter does not reproduce for subsets")
    window = getattr(config, "sliding_window", None)
    window = window if isinstance(window, int) and not isinstance(window, bool) else None
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        other = sorted(set(layer_types) - set(ATTENTION_LAYER_TYPES))
        if other:
            raise InputError(f"{refuse}: it has {', '.join(other)} layers, which are not "
                             "attention a mask can restrict to the subset's tokens")
        windows = {kind: window if kind == "sliding_attention" else None
                   for kind in sorted(set(layer_types))}
        if "sliding_attention" in windows and window is None:
            raise InputError(f"{refuse}: it has sliding-attention layers but no integer "
                             "`sliding_window` in its config")
        if window is not None and not _applies_window(model):
            return AttentionWindows(dict.fromkeys(windows))
        keyed = _takes_keyed_masks(model)
        if len(set(windows.values())) > 1 and not keyed:
            raise InputError(f"{refuse}: it mixes full and sliding attention but takes one "
                             "attention mask for every layer")
        return AttentionWindows(windows, keyed=keyed)
    if window is not None and not _applies_window(model):
        window = None
    return AttentionWindows({"": window})


def _applies_window(model: nn.Module) -> bool:
    """Whether the model applies the `sliding_window` its config declares (Moshi declares
    one and never applies it): with a window of 2 in the config, ten tokens predict
    differently. Two forward passes, once per model, window and attention implementation."""
    config = text_config(model.config)
    key = ("window", config.sliding_window, getattr(model.config, "_attn_implementation", None))
    probed = _PROBED.setdefault(model, {})
    if key not in probed:
        probed[key] = _window_changes_predictions(model, config)
    return probed[key]


def _window_changes_predictions(model: nn.Module, config: object) -> bool:
    parameter = next(model.parameters())
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    ids = torch.randint(2, max(3, min(vocab, 1000)), (1, 10),
                        generator=torch.Generator().manual_seed(0)).to(parameter.device)
    saved = config.sliding_window
    try:
        with torch.no_grad(), eval_mode(model):
            wide = model(input_ids=ids).logits.float()
            config.sliding_window = 2
            narrow = model(input_ids=ids).logits.float()
    except Exception:  # noqa: BLE001 - let the adapter's probes report a model that fails
        return True
    finally:
        config.sliding_window = saved
    return bool((narrow - wide).abs().max() > 1e-6)


# Attention implementations that apply a 4-D mask exactly as given (the word-dropout one
# runs SDPA whenever no keep mask is passed).
MASKED_ATTENTION = ("eager", "sdpa", "word_dropout_flex")


def family_refusal(model: nn.Module) -> str | None:
    """Why `model`'s family cannot be rationalized exactly, in one sentence.

    Read from the model's configuration and classes, plus, for a declared sliding window, two
    forward passes (once per model) that test whether the model applies it.

    Args:
        model: A Hugging Face causal LM.

    Returns:
        The reason, or `None` when nothing is known to stand in the way.
    """
    problem = _refusal_before_windows(model)
    if problem is not None:
        return problem
    try:
        attention_windows(model)
    except ValueError as error:
        return str(error)
    return None


def _refusal_before_windows(model: nn.Module) -> str | None:
    """`family_refusal` but for the attention windows (which the adapter reads anyway).
    """
    config = text_config(model.config)
    name = type(model).__name__
    impl = getattr(model.config, "_attn_implementation", None)
    if impl is not None and impl not in MASKED_ATTENTION:
        return (f"{name} runs attn_implementation={impl!r}, which cannot apply the 4-D masks "
                "of subsets; load it with attn_implementation='sdpa' or 'eager' (or call "
                "model.set_attn_implementation('sdpa'))")
    model_type = getattr(config, "model_type", None)
    if model_type in RECURRENT_MODEL_TYPES or "recurrent" in (
            getattr(config, "block_types", None) or ()):
        return (f"{name} cannot be rationalized exactly: its recurrent (state-space) layers "
                "carry every earlier token forward, so no subset of the context can be "
                "visible alone")
    if isinstance(model.get_input_embeddings(), (nn.ModuleList, nn.ModuleDict)):
        return (f"{name} cannot be rationalized exactly: each of its positions holds several "
                "tokens (one per codebook), so a subset of single tokens is undefined")
    if model_type == "blt":
        return (f"{name} cannot be rationalized exactly: it groups bytes into patches by the "
                "entropy of the whole input, so a token's representation depends on the tokens "
                "left out")
    if model_type == "bloom" or (model_type == "falcon" and getattr(config, "alibi", False)):
        return (f"{name} cannot be rationalized exactly: it computes its ALiBi position bias "
                "from the 2-D attention mask, so tokens lose their original positions once "
                "others are dropped")
    return None


def check_causal_lm(model: object) -> None:
    """Refuse, in one sentence, a model that is not a Hugging Face causal LM.

    Otherwise it would fail deep inside the search with an error that names neither the model
    nor the fix.

    Args:
        model: The object given to the adapter.

    Raises:
        TypeError: When `model` is not a torch module, is a fairseq model, has no Hugging Face
            config, is an encoder-decoder, has no language-model head (loaded with
            `AutoModel`) or has no parameters.
    """
    name = type(model).__name__
    need = "HuggingFaceCausalLM needs a Hugging Face causal LM (AutoModelForCausalLM)"
    if not isinstance(model, nn.Module):
        raise TypeError(f"{need}, got a {name}, which is not a torch module")
    if any(c.__module__.split(".")[0] == "fairseq" for c in type(model).__mro__):
        raise TypeError(f"{need}, got the fairseq model {name}; use "
                        "sequential_rationales.adapters.fairseq.FairseqLanguageModel or "
                        "FairseqTranslationModel")
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "get_output_embeddings"):
        raise TypeError(f"{need}, got {name}, which has no Hugging Face config; write a "
                        "ModelAdapter for other models (see sequential_rationales.adapter)")
    if getattr(config, "is_encoder_decoder", False):
        raise TypeError(f"{need}, got the encoder-decoder (seq2seq) model {name}; only "
                        "decoder-only language models can be rationalized with it")
    if model.get_output_embeddings() is None:
        raise TypeError(f"{need}, got {name}, which has no language-model head; load it "
                        "with AutoModelForCausalLM rather than AutoModel")
    if next(model.parameters(), None) is None:
        raise TypeError(f"{need}, got {name}, which has no parameters")


def absolute_position_embedding(model: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """The learned absolute position embedding the model adds to the token embeddings.

    Args:
        model: A Hugging Face causal LM.

    Returns:
        A function of position ids (GPT-2's `wpe`; OPT's `embed_positions`, which is offset
            by two), or `None` for models that place positions inside attention (rotary: Llama,
            Qwen2, ...), whose first layer sees the token embedding alone.

    Raises:
        ValueError: For position tables it cannot reproduce (sinusoidal, or projected as in some
            OPT sizes).
    """
    base = getattr(model, "base_model", model)
    holders = [base] + [child for name in ("decoder", "model")
                        if isinstance(child := getattr(base, name, None), nn.Module)]
    for holder in holders:
        for name in ("wpe", "embed_positions", "position_embeddings"):
            table = getattr(holder, name, None)
            if table is None:
                continue
            offset = getattr(table, "offset", 0)
            if type(table) is nn.Embedding:  # called, so an offloaded table loads its weights
                return table
            if (isinstance(table, nn.Embedding) and isinstance(offset, int)
                    and getattr(holder, "project_in", None) is None):
                return lambda positions: F.embedding(positions + offset, table.weight)
            raise ValueError(
                f"{type(model).__name__} adds positions through `{name}`, which "
                "input_embedding does not reproduce; use the baseline signed_gradient_token")
    return None


def block_list(module: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of a Hugging Face encoder, decoder or base model.

    Looks for `layers` (Llama, BART, Marian), `h` (GPT-2), `block` (T5) and `blocks`, on the
    module itself or its `decoder`, `model` or `transformer` child (OPT keeps its blocks in
    `base_model.decoder`).

    Args:
        module: The model or one of its parts.

    Returns:
        The blocks, in order.

    Raises:
        ValueError: When no list of blocks is found.
    """
    holders = [module] + [child for name in ("decoder", "model", "transformer")
                          if isinstance(child := getattr(module, name, None), nn.Module)]
    for holder in holders:  # OPT keeps its blocks in base_model.decoder
        for name in ("layers", "h", "block", "blocks"):
            blocks = getattr(holder, name, None)
            if isinstance(blocks, nn.ModuleList):
                return blocks
    raise ValueError(f"{type(module).__name__} has no list of transformer blocks (looked for "
                     "`layers`, `h`, `block` and `blocks`)")


def _first_line(error: BaseException, limit: int = 100) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    line = line if len(line) <= limit else line[:limit - 3] + "..."
    return f"{type(error).__name__}: {line}" if line else type(error).__name__


class HuggingFaceCausalLM:
    """[`ModelAdapter`][sequential_rationales.adapter.ModelAdapter] for a Hugging Face causal LM.

    Wraps a decoder-only model (GPT-2, Llama, Qwen2, Mistral, Gemma, ...). Where the model's
    `forward` takes `position_ids`, a subset is fed **sparsely**: only the kept tokens, with their
    original position ids. Otherwise it is fed as the **masked full sequence**: the prefix up to
    the predicting token with a 4-D mask in which every query sees itself and the kept tokens.
    Both give the same prediction; sliding windows count original positions in both.

    When the adapter is built, families that cannot be served exactly are refused in one
    sentence, and cheap probes (forward passes of ten tokens, once per model, attention
    implementation and layout) check that the model is causal and that a subset's prediction does
    not depend on the tokens left out; a model whose sparse input disagrees with the masked full
    sequence is run masked. Besides the required members it has every optional one (`score`,
    `logits`, `layers`, `input_embedding`, `prefix_cache`, `with_dtype`, ...).

    Args:
        model: A causal LM, e.g. `AutoModelForCausalLM.from_pretrained(...)`, with an attention
            implementation that applies 4-D masks (`"sdpa"` or `"eager"`); it may be spread
            over devices with `device_map`.
        use_position_ids: `True` feeds subsets sparsely and `False` as the masked full sequence,
            whatever the probes find. `None` (default): sparse when the model's `forward` takes
            `position_ids` and the probe finds both layouts agree. A model that applies its
            sliding windows itself (GPT-Neo) always runs the masked full sequence.
        probe: Whether to run the probes (once per model, attention implementation and layout).

    Raises:
        TypeError: When `model` is not a Hugging Face causal LM with a language-model head
            (a fairseq model, an encoder-decoder, a model loaded with `AutoModel`, ...).
        InputError: When the model's family cannot be rationalized exactly (ALiBi computed from
            the 2-D mask as in Bloom, recurrent or state-space layers, chunked attention, byte
            patching, multi-codebook inputs, an attention implementation that cannot take a
            4-D mask), or when a probe finds the model not causal, finds the tokens left out
            reaching the prediction, or sees a forward pass fail.

    Attributes:
        model: The wrapped model.
        sparse: Whether subsets are fed sparsely (see `use_position_ids`).
        windows: The sliding windows of the model's layers.
        vocab_size: The output vocabulary size (the head's `out_features`, else the config's
            `vocab_size`).
        max_positions: The config's `n_positions`, `max_position_embeddings` or `n_ctx`, else
            `None`.
        device: Where inputs go (under `device_map`, the input embedding's execution device).
        dtype: The dtype of the model's floating-point parameters.
        is_conditional: Always `False`.
        baseline_defaults: The gradient baselines as the paper's Hugging Face code defined them:
            signed gradient times token + position embedding; integrated gradients averaging
            101 evenly spaced points (100 steps), ends included, times the token embedding.
        hidden_time_major: Always `False`: the blocks' hidden states are `[N, L, D]`.
    """

    is_conditional = False
    baseline_defaults = {
        "integrated_gradient_steps": 100,
        "integrated_gradient_rule": "endpoints",
        "integrated_gradient_input": "token",
        "signed_gradient_input": "first_layer",
    }

    def __init__(self, model: nn.Module, use_position_ids: bool | None = None,
                 probe: bool = True) -> None:
        check_causal_lm(model)
        problem = _refusal_before_windows(model)
        if problem is not None:
            raise InputError(problem)
        self.model = model
        self.windows = attention_windows(model)  # the last of family_refusal's checks
        params = inspect.signature(model.forward).parameters
        self._takes_positions = "position_ids" in params
        self.sparse = self._takes_positions if use_position_ids is None else use_position_ids
        if self.windows.in_model and self.windows.smallest is not None:
            self.sparse = False  # its own windows count columns: columns must be positions
        self._keeps_last_logits = "logits_to_keep" in params
        self._input_embedding_checked = False
        config = model.config
        out = model.get_output_embeddings()
        self.vocab_size = int(getattr(out, "out_features", 0) or config.vocab_size)
        self.max_positions = next(
            (int(v) for k in ("n_positions", "max_position_embeddings", "n_ctx")
             if (v := getattr(config, k, None))), None)
        self.device = input_device(model, model.get_input_embeddings())
        self.dtype = parameter_dtype(model)
        self._twins: dict[torch.dtype, tuple[tuple, HuggingFaceCausalLM]] = {}  # dtype_twin
        if probe:
            # Probed once per model, attention implementation and layout: the seed functions
            # build an adapter per sequence.
            key = (getattr(config, "_attn_implementation", None), self.sparse,
                   use_position_ids is not None)
            probed = _PROBED.setdefault(model, {})
            if key not in probed:
                self._probe(explicit_layout=use_position_ids is not None)
                probed[key] = self.sparse
            self.sparse = probed[key]

    # -- probes ----------------------------------------------------------------------------
    def _probe(self, explicit_layout: bool) -> None:
        """Refuse a model that is not causal or whose masked input reads dropped tokens; run
        masked a model whose sparse input disagrees with the masked one (see the module's
        docstring). A few forward passes of ten tokens."""
        name = type(self.model).__name__
        generator = torch.Generator().manual_seed(0)
        high = max(2, min(self.vocab_size, 1000))
        ids = torch.randint(2, high, (1, 10), generator=generator).to(self.device)
        other = ids.clone()
        other[0, 5:] = torch.where(ids[0, 5:] + 1 < high, ids[0, 5:] + 1, 2)
        tolerance = 1e-4 if self.dtype in (torch.float32, torch.float64) else 5e-2
        with torch.no_grad(), self.evaluating():
            try:
                first = self.model(input_ids=ids).logits.float()
                second = self.model(input_ids=other).logits.float()
            except Exception as error:  # noqa: BLE001 - any failure: one sentence, no trace
                raise InputError(f"{name} cannot be rationalized: a plain forward pass "
                                 f"failed ({_first_line(error)})") from None
            if (first[0, :5] - second[0, :5]).abs().max() > tolerance:
                raise InputError(f"{name} is not a causal language model: its predictions "
                                 "change with later tokens (bidirectional attention, as in "
                                 "BERT), so rationales of next-token predictions are undefined")
            # Keep 0, 3, 4, 7 and the predicting token 9: dropped tokens lie between kept ones.
            kept = torch.tensor([0, 3, 4, 7, 9], device=self.device)
            masked = self._probe_log_probs(ids, kept, sparse=False)
            changed = ids.clone()
            dropped = torch.tensor([1, 2, 5, 6, 8], device=self.device)
            changed[0, dropped] = (ids[0, dropped] + 1).clamp(max=high - 1)
            if (masked - self._probe_log_probs(changed, kept, sparse=False)).abs().max() \
                    > tolerance:
                raise InputError(f"{name} cannot be rationalized exactly: its prediction from a"
                                 " subset changes with the tokens left out (they still reach"
                                 " the model, e.g. through a recurrence)")
            if self.sparse and not explicit_layout:
                sparse = self._probe_log_probs(ids, kept, sparse=True)
                if (sparse - masked).abs().max() > tolerance:
                    self.sparse = False  # it ignores position_ids: run the masked sequence

    def _probe_log_probs(self, ids: Tensor, kept: Tensor, sparse: bool) -> Tensor:
        batch = SubsetBatch(ids[:, kept], kept[None], torch.ones_like(kept[None], dtype=bool))
        name = type(self.model).__name__
        saved, self.sparse = self.sparse, sparse
        try:
            return torch.log_softmax(self._forward(batch, None).float(), -1)
        except Exception as error:  # noqa: BLE001 - any failure: one sentence, no trace
            how = "sparse tokens with their position ids" if sparse else "a 4-D attention mask"
            raise InputError(f"{name} cannot be rationalized: feeding a subset as {how} "
                             f"failed ({_first_line(error)})") from None
        finally:
            self.sparse = saved

    def evaluating(self) -> contextlib.AbstractContextManager[None]:
        """Run the model in eval mode (dropout off) for the duration.

        Returns:
            A context manager (see [`eval_mode`][sequential_rationales.adapter.eval_mode]).
        """
        return eval_mode(self.model)

    # -- layouts ---------------------------------------------------------------------------
    def _full_layout(self, batch: SubsetBatch) -> tuple[Tensor, Tensor, Tensor]:
        """Scatter each sparse row to its original positions: column = position. Returns the
        gather index into the sparse row, the kept mask and each row's last position."""
        last = batch.target_positions[:, -1]
        length = int(last.max()) + 1
        n = len(batch)
        index = torch.zeros(n, length, dtype=torch.long, device=batch.target_ids.device)
        kept = torch.zeros(n, length, dtype=torch.bool, device=batch.target_ids.device)
        rows = torch.arange(n, device=index.device)[:, None].expand_as(batch.target_positions)
        cols = torch.arange(batch.target_ids.shape[1], device=index.device).expand_as(rows)
        m = batch.target_mask
        index[rows[m], batch.target_positions[m]] = cols[m]
        kept[rows[m], batch.target_positions[m]] = True
        return index, kept, last

    def _window_reached(self, batch: SubsetBatch) -> bool:
        """Whether some row spans a sliding window: below it, windows change nothing."""
        window = self.windows.smallest
        if window is None:
            return False
        first = batch.target_positions.masked_fill(~batch.target_mask, 2**62).min(1).values
        return bool((batch.target_positions[:, -1] - first).max() >= window)

    def _sparse_inputs(self, batch: SubsetBatch, embeds: Tensor | None) -> dict:
        """Model keyword arguments for the sparse rows of `batch` (last logits only)."""
        if batch.equal_lengths and not self._window_reached(batch):
            mask = torch.ones_like(batch.target_ids)
        else:
            mask = self.windows.masks(batch.target_mask, batch.target_positions, self.dtype)
        kwargs = {"position_ids": batch.target_positions, "attention_mask": mask}
        if embeds is None:
            kwargs["input_ids"] = batch.target_ids
        else:
            # Some models scale inputs_embeds in place (CTRL): never hand them our leaf.
            kwargs["inputs_embeds"] = embeds.clone() if embeds.is_leaf else embeds
        if self._keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        return kwargs

    def _forward(self, batch: SubsetBatch, embeds: Tensor | None) -> Tensor:
        if embeds is None:
            return self._run(batch, None)
        try:
            return self._run(batch, embeds)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:  # e.g. Gemma 4 needs the token ids beside embeddings
            raise InputError(f"{type(self.model).__name__} cannot run on substituted input "
                             f"embeddings, which the gradient methods need "
                             f"({_first_line(error)})") from None

    def _run(self, batch: SubsetBatch, embeds: Tensor | None) -> Tensor:
        if batch.source_ids is not None:
            raise ValueError("a causal LM takes no source tokens")
        if self.sparse:
            return self.model(**self._sparse_inputs(batch, embeds)).logits[:, -1]
        index, kept, last = self._full_layout(batch)
        n = len(batch)
        rows = torch.arange(n, device=index.device)
        # Beyond its last position a row is padding: only its own (self) attention matters.
        kwargs = {"attention_mask": self.windows.masks(kept, None, self.dtype)}
        if self._takes_positions:  # columns are positions (OPT would count them in the mask)
            kwargs["position_ids"] = torch.arange(len(kept[0]), device=kept.device).expand(n, -1)
        if embeds is None:
            kwargs["input_ids"] = torch.where(kept, batch.target_ids.gather(1, index), 0)
        else:
            full = embeds.gather(1, index[..., None].expand(-1, -1, embeds.shape[-1]))
            kwargs["inputs_embeds"] = full * kept[..., None]
        logits = self.model(**kwargs).logits  # on the last device of a dispatched model
        return logits[rows.to(logits.device), last.to(logits.device)]

    def with_dtype(self, dtype: torch.dtype) -> HuggingFaceCausalLM:
        """This adapter on a copy of the model in `dtype`.

        The copy is made once and kept (it costs the model's size in `dtype`); it is the screening
        twin of `precision="bf16-exact"` and runs the whole search for `precision="bf16"`.

        Args:
            dtype: The dtype of the copy, e.g. `torch.bfloat16`.

        Returns:
            This adapter for its own dtype, else an adapter of the same layout on the copy.

        Raises:
            InputError: When the model is spread over devices by `device_map`.
        """
        return dtype_twin(self, dtype,
                          lambda twin: HuggingFaceCausalLM(twin, use_position_ids=self.sparse))

    # -- prefix reuse (see SubsetScorer.extensions) ----------------------------------------
    def prefix_cache(self, batch: SubsetBatch) -> object | None:
        """Run equal-length rows and keep their keys and values, for prefix reuse.

        With `score_after_prefix`, the search runs each rationale once per step and lets its
        candidates continue the cached prefix.

        Args:
            batch: Rows of equal length (`equal_lengths`).

        Returns:
            The model's key/value cache, or `None` where prefix reuse does not apply: the adapter
                runs the masked full sequence, the rows are not of equal length, the cache is not
                a list of plain per-layer key/value tensors, or a token of `batch` sits as far as a
                sliding window from the start (continuations could then span it, which the cached
                continuation's plain mask does not express).
        """
        window = self.windows.smallest
        if not (self.sparse and batch.equal_lengths) or (
                window is not None and int(batch.target_positions.max()) >= window):
            return None
        inputs = self._sparse_inputs(batch, None)
        inputs.pop("logits_to_keep", None)
        with self.evaluating():  # the body alone: the keys and values, no vocabulary logits
            out = self.model.base_model(**inputs, use_cache=True)
        cache = getattr(out, "past_key_values", None)
        layers = getattr(cache, "layers", None)
        if not layers or any(type(layer).__name__ != "DynamicLayer"
                             or getattr(layer, "keys", None) is None for layer in layers):
            return None
        return cache

    def score_after_prefix(self, cache: object, rows: Tensor, prefix_length: int,
                           batch: SubsetBatch, goals: Tensor) -> Tensor:
        """Score rows that continue cached prefixes.

        Args:
            cache: A cache from `prefix_cache`.
            rows: `[N]` the cache row whose prefix each row of `batch` continues.
            prefix_length: How many cached tokens each row continues.
            batch: `N` continuations of equal length, with their original positions.
            goals: `[N]` the goal token id of each row.

        Returns:
            `[N, 3]` float64: `log p(goal)`, the argmax id and `log p(argmax)` per row.
        """
        sliced = copy.copy(cache)  # the same cache type, holding the selected prefixes only
        sliced.layers = []
        for layer in cache.layers:
            part = copy.copy(layer)
            on = rows.to(layer.keys.device)  # each layer's device in a dispatched model
            part.keys = layer.keys[on, :, :prefix_length]
            part.values = layer.values[on, :, :prefix_length]
            sliced.layers.append(part)
        ids = batch.target_ids
        mask = torch.ones(ids.shape[0], prefix_length + ids.shape[1], dtype=ids.dtype,
                          device=ids.device)
        with self.evaluating():
            logits = self.model(input_ids=ids, position_ids=batch.target_positions,
                                attention_mask=mask, past_key_values=sliced, use_cache=True,
                                logits_to_keep=1).logits[:, -1]
        return scores_from_logits(logits, goals)

    # -- ModelAdapter ----------------------------------------------------------------------
    def score(self, batch: SubsetBatch, goals: Tensor) -> Tensor:
        """Reduce each row's next-token prediction to the three numbers the search needs.

        Args:
            batch: `N` sparse subsets.
            goals: `[N]` the goal token id of each row.

        Returns:
            `[N, 3]` float64 on the device of the model's output: `log p(goal)`, the argmax id
                and `log p(argmax)` per row.
        """
        with self.evaluating():
            return scores_from_logits(self._forward(batch, None), goals)

    def logits(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Next-token logits (before the softmax) of each row.

        Args:
            batch: `N` sparse subsets.
            embeddings: Token embeddings that replace the model's lookup (`inputs_embeds`);
                `None`: the batch's token ids.

        Returns:
            `[N, V]` logits.

        Raises:
            InputError: When the model cannot run on substituted embeddings.
        """
        with self.evaluating():
            return self._forward(batch, None if embeddings is None else embeddings.target)

    def log_probs(self, batch: SubsetBatch, embeddings: Embeddings | None = None) -> Tensor:
        """Log-probabilities of the next target token of each row.

        Args:
            batch: `N` sparse subsets.
            embeddings: Token embeddings that replace the model's lookup; `None`: the batch's
                token ids.

        Returns:
            `[N, V]` float32 log-probabilities.
        """
        return torch.log_softmax(self.logits(batch, embeddings).float(), dim=-1)

    hidden_time_major = False

    @property
    def hidden_target_by_position(self) -> bool:
        """Whether the blocks' hidden states are scattered to original positions.

        `True` when subsets run as the masked full sequence (column = position, right-padded);
        `False` when they run sparsely (the batch's left-padded columns).
        """
        return not self.sparse

    def layers(self) -> dict[str, list[nn.Module]]:
        """The transformer blocks, in order.

        Returns:
            `{"source": [], "target": [...]}`; each block's first output is the hidden state
                `[N, L, D]` of the rows' columns.
        """
        return {"source": [], "target": list(block_list(self.model.base_model))}

    def embed(self, batch: SubsetBatch) -> Embeddings:
        """The input embedding's output for the batch's target ids.

        Args:
            batch: `N` sparse subsets.

        Returns:
            `target` `[N, Lt, D]` (no `source`).
        """
        return Embeddings(self.model.get_input_embeddings()(batch.target_ids))

    def input_embedding(self, batch: SubsetBatch) -> Embeddings:
        """What the first block sees for each token.

        That is the token embedding plus the absolute position embedding of the token's
        original position (GPT-2), or the token embedding alone for rotary models. The first
        call checks, once, that the first block really receives this (up to a constant
        factor).

        Args:
            batch: `N` sparse subsets.

        Returns:
            `target` `[N, Lt, D]`.

        Raises:
            ValueError: When the model adds positions in a way this adapter does not reproduce, or
                its first block sees something else (a normalization or projection of the
                embeddings, CTRL's sinusoids, ...); the baseline `signed_gradient_token` works
                without it.
        """
        embeds = self.embed(batch).target
        wpe = absolute_position_embedding(self.model)
        if wpe is not None:
            embeds = embeds + wpe(batch.target_positions)
        if not self._input_embedding_checked:
            self._check_input_embedding(batch, embeds.detach())
            self._input_embedding_checked = True
        return Embeddings(embeds)

    def _check_input_embedding(self, batch: SubsetBatch, claimed: Tensor) -> None:
        """Refuse, once, a model whose first block sees something other than `claimed` up
        to a constant factor (an embedding scale, which gradient x input does not notice):
        positions added in a way this adapter does not reproduce (CTRL's sinusoids), a
        normalization or projection of the embeddings, ..."""
        seen: list[Tensor] = []

        def capture(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen.append((args[0] if args else kwargs["hidden_states"]).detach())

        first = self.layers()["target"][0]
        handle = first.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad(), self.evaluating():
                self._forward(batch, None)
        finally:
            handle.remove()
        actual = seen[0].float()
        if not self.sparse:  # scattered to positions: gather each row's columns back
            index = batch.target_positions[..., None].expand(-1, -1, actual.shape[-1])
            actual = actual.gather(1, index)
        real = batch.target_mask[..., None]
        claimed = claimed.float() * real
        actual = actual * real
        factor = (actual * claimed).sum() / (claimed * claimed).sum().clamp(min=1e-30)
        gap = float((actual - factor * claimed).abs().max() / actual.abs().max().clamp(
            min=1e-30))
        if gap > (1e-3 if self.dtype in (torch.float32, torch.float64) else 5e-2):
            raise ValueError(
                f"{type(self.model).__name__}'s first layer does not see the token plus "
                "position embedding this adapter can differentiate (it adds or transforms "
                "something more); use the baseline signed_gradient_token")

    def attentions(self, batch: SubsetBatch) -> AttentionMaps:
        """Attention maps of one full sequence, computed with eager attention.

        Args:
            batch: One row without padding.

        Returns:
            `decoder_self` `[layers, heads, T, T]`.

        Raises:
            ValueError: When `batch` is not one unpadded row, or the model returns no attention
                maps.
        """
        if len(batch) != 1 or not bool(batch.target_mask.all()):
            raise ValueError("attentions() takes one unpadded full sequence")
        with eager_attention(self.model), self.evaluating():
            out = self.model(input_ids=batch.target_ids, output_attentions=True)
        if not out.attentions:
            raise ValueError(f"{type(self.model).__name__} returned no attention maps; the "
                             "attention baselines need output_attentions support")
        return AttentionMaps(torch.stack([a[0] for a in out.attentions]))
