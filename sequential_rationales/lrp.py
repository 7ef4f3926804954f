"""Layer-wise relevance propagation (AttnLRP-style) as gradient x input.

The `lrp` ordering scores each context token of target `t` by its relevance for the
**logit** of `y_t` (before the softmax). [`lrp_rules`][sequential_rationales.lrp.lrp_rules]
installs the LRP rules as *value-preserving modified gradients* (temporary forward hooks,
removed afterwards): the model computes the same outputs, but its backward pass carries the
LRP rules, and [`lrp_scores`][sequential_rationales.lrp.lrp_scores] takes the relevance of a
token as the sum over the hidden dimension of (first layer's input) x (its modified
gradient). Two variants: AttnLRP (Achtibat et al., 2024), the `lrp` method, and the
conservative CP-LRP (Ali et al., 2022). A model with a part that has no rule is refused
rather than explained by plain gradients.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .adapter import Embeddings, ModelAdapter, SubsetBatch
from .baselines import _full_context_subset, _input_scale, _unpad
from .search import RationalizationProblem, build_batch, default_token_budget, token_budget_chunks
from .validation import InputError

Scores = dict[int, Tensor]

ATTENTION_SCALES = {"attnlrp": (0.25, 0.25, 0.5), "cp": (0.0, 0.0, 1.0)}
"""Gradient scales of the (query, key, value) projections per variant. q and k share theirs in
every variant: a fused projection's layout needs only its value part right."""
LRP_VARIANTS = tuple(ATTENTION_SCALES)
"""The names of the variants: `"attnlrp"` and `"cp"`."""

# Elementwise activations whose gradient already is f(x) / x (or 1): no rule needed.
_NO_RULE_ACTIVATIONS = ("ReLU", "LinearActivation", "Identity")
# Attribute names under which models keep their activation module.
_ACTIVATION_NAMES = ("act", "act_fn", "activation", "activation_fn")
# torch.nn.modules.activation classes that are not elementwise activations.
_NOT_ELEMENTWISE = ("MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d", "GLU")


def scale_gradient(y: Tensor, scale: float | Tensor) -> Tensor:
    """`y` with its gradient multiplied by `scale`; the value is exactly `y`.

    Args:
        y: Any tensor.
        scale: A number, or a tensor that broadcasts against `y` (one scale per feature).

    Returns:
        `y`'s value, with a gradient `scale` times `y`'s (detached for a scale of `0.0`).
    """
    if isinstance(scale, float) and scale == 0.0:
        return y.detach()
    return y.detach() + scale * (y - y.detach())


def identity_rule(x: Tensor, y: Tensor) -> Tensor:
    """`y = f(x)` elementwise, with the gradient `f(x) / x` of the identity rule.

    The gradient is 0 where `x` is too close to 0 to divide by: its relevance `x * grad` is 0
    there anyway.

    Args:
        x: The activation's input.
        y: Its output, of `x`'s shape.

    Returns:
        A tensor whose value is exactly `y` and whose gradient with respect to `x` is
            `y / x` elementwise.
    """
    safe = x.abs() > torch.finfo(x.dtype).tiny
    ratio = torch.where(safe, y / torch.where(safe, x, torch.ones_like(x)), torch.zeros_like(x))
    return y.detach() + (x - x.detach()) * ratio.detach()


def _tolerance(dtype: torch.dtype) -> float:
    # Modules may compute in float32 whatever their dtype (LlamaRMSNorm).
    return 1e-4 if dtype in (torch.float64, torch.float32) else 2e-2


class _Rules:
    """The hooks of one `lrp_rules` context and counts of the rules applied."""

    def __init__(self, model: nn.Module, scales: tuple[float, float, float]) -> None:
        self.model = model
        self.scales = scales
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.checked: set[int] = set()  # modules whose rule was verified once
        self.norm_forms: dict[int, tuple[bool, bool]] = {}  # (centered, 1 + w) per norm
        self.applied = {"attention": 0, "norm": 0, "activation": 0, "product": 0, "tanh": 0}
        self.activations: set[int] = set()  # modules whose activation has a rule (or needs none)
        self.layouts: dict[int, Tensor] = {}  # fused q/k/v projection: 0 q, 1 k, 2 v per output
        self.pending: dict[int, Tensor] = {}  # fused projection output awaiting its check
        self.inside_activation = 0  # depth of activation modules running (their rule wins)

    def hook(self, module: nn.Module, fn, pre: bool = False) -> None:
        self.handles.append(module.register_forward_pre_hook(fn) if pre
                            else module.register_forward_hook(fn))

    def refuse(self, why: str) -> ValueError:
        return ValueError(f"LRP has no rules for {type(self.model).__name__}: {why}")

    # -- normalization ---------------------------------------------------------------------
    def norm(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        name = type(module).__name__
        if not (torch.is_tensor(output) and output.shape == x.shape):
            raise self.refuse(f"its normalization {name} does not return a tensor of its "
                              "input's shape")
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        form = self.norm_forms.get(id(module))
        if form is None:  # the formula must be the module's: found once, by its output
            form = self.norm_form(module, h, output)
        centered, one_plus = form
        z, factor = _normalized(module, h, output, centered, one_plus)
        z = (z * factor).to(output.dtype)  # the normalizer is a constant: the rule is linear
        self.applied["norm"] += 1
        return output.detach() + (z - z.detach())

    def norm_form(self, module: nn.Module, h: Tensor, output: Tensor) -> tuple[bool, bool]:
        """(centered, weight is 1 + w) of the one formula among `(x - mean) * c * w`,
        `x * c * w`, `* (1 + w)` instead of `* w` (or without weight), `+ bias`,
        that reproduces the module's output with one factor `c` per row: the one closest to
        it, trying first what the class name says (`*RMSNorm`: not centered)."""
        name = type(module).__name__
        weighted = torch.is_tensor(getattr(module, "weight", None))
        rms_first = name.endswith("RMSNorm")
        forms = [(centered, one_plus) for centered in (not rms_first, rms_first)
                 for one_plus in ((False, True) if weighted else (False,))]
        tolerance = _tolerance(output.dtype)
        best, best_error = None, None
        with torch.no_grad():
            target = _without_bias(module, output.to(h.dtype))
            for form in forms:
                z, factor = _normalized(module, h.detach(), output, *form)
                difference = (z * factor - target).abs()
                if not bool((difference <= tolerance * (1 + target.abs())).all()):
                    continue
                error = float(difference.max()) if difference.numel() else 0.0
                if best_error is None or error < best_error:
                    best, best_error = form, error
        if best is None:
            raise self.refuse(f"its normalization {name} does not compute c * (x - mean) or "
                              "c * x, times weight or 1 + weight, plus bias, with one "
                              "normalizer c per row")
        self.norm_forms[id(module)] = best
        return best

    # -- activations -----------------------------------------------------------------------
    def enter_activation(self, _module: nn.Module, _args: tuple) -> None:
        self.inside_activation += 1

    def activation(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        self.inside_activation -= 1
        x = args[0]
        if not (torch.is_tensor(output) and output.shape == x.shape):
            raise self.refuse(f"{type(module).__name__} is not an elementwise activation")
        self.applied["activation"] += 1
        return identity_rule(x, output)

    def function_activation(self, layer: nn.Module) -> None:
        """A layer calling a plain activation function between `fc1` and `fc2` (fairseq):
        the identity rule on `fc2`'s input, from the `fc1` output just computed."""
        fn = layer.activation_fn
        if fn in (F.relu, torch.relu):
            return
        if not (isinstance(getattr(layer, "fc1", None), nn.Module)
                and isinstance(getattr(layer, "fc2", None), nn.Module)):
            raise self.refuse(f"{type(layer).__name__} calls the activation function "
                              f"{getattr(fn, '__name__', fn)!r} outside fc1 -> fc2")
        seen: list[Tensor] = []

        def after_fc1(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            seen[:] = [output]

        def before_fc2(_module: nn.Module, args: tuple) -> tuple:
            h = args[0]
            if not seen:
                raise self.refuse(f"{type(layer).__name__}.fc2 ran before fc1")
            a = seen.pop()
            if id(layer) not in self.checked:
                if a.shape != h.shape or not torch.allclose(fn(a), h, rtol=_tolerance(h.dtype),
                                                            atol=_tolerance(h.dtype)):
                    raise self.refuse(f"the input of {type(layer).__name__}.fc2 is not its "
                                      "activation function of fc1's output")
                self.checked.add(id(layer))
            self.applied["activation"] += 1
            return (identity_rule(a, h), *args[1:])

        self.hook(layer.fc1, after_fc1)
        self.hook(layer.fc2, before_fc2, pre=True)

    # -- bilinear products -----------------------------------------------------------------
    def half_input(self, _module: nn.Module, args: tuple) -> tuple:
        self.applied["product"] += 1
        return (scale_gradient(args[0], 0.5), *args[1:])

    def projection(self, scale: float):
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
            self.applied["attention"] += 1
            return scale_gradient(output, scale)
        return hook

    def fused_projection(self, scales: Sequence[float]):
        """GPT-2's `c_attn`: equal parts of the last dimension, one scale each."""
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
            part = output.shape[-1] // len(scales)
            scale = torch.tensor(scales, dtype=output.dtype, device=output.device)
            self.applied["attention"] += 1
            return scale_gradient(output, scale.repeat_interleave(part))
        return hook

    def fused_attention(self, attention: nn.Module, fused_name: str, fused: nn.Module,
                        out: nn.Module, heads: int, kv_heads: int) -> None:
        """An attention computing q, k and v with one Linear `fused` (GPT-NeoX, Falcon,
        Persimmon, Phi-3, CodeGen): its output's gradient is scaled per feature once the layout
        is known. The layout is found on the first forward among `_fused_layouts`: the
        first query attends to itself only (causal), so the input of the output projection
        `out` there must be the layout's value part (each key/value head repeated for its
        query heads). Only the value part is checked: q and k have the same scale in every
        variant."""
        key, cls = id(attention), type(attention).__name__

        def after_fused(_module: nn.Module, _args: tuple, output: Tensor) -> None:
            self.applied["attention"] += 1
            if key not in self.layouts:
                self.pending[key] = output.detach()
            if torch.is_tensor(output) and output.requires_grad:
                output.register_hook(lambda grad: grad * self.fused_scales(key, grad))

        def before_out(_module: nn.Module, args: tuple) -> None:
            if key in self.layouts:
                return
            x, y = args[0], self.pending.pop(key, None)
            why = (f"its attention {cls}'s fused projection {fused_name} splits into q, k and v "
                   "in no layout this module knows (the first query's attention output is not "
                   "the value part of any)")
            if y is None or y.dim() < 2 or x.shape[:-1] != y.shape[:-1]:
                raise self.refuse(why)
            head_dim = x.shape[-1] // heads
            found: dict[tuple[int, ...], Tensor] = {}
            for labels in _fused_layouts(heads, kv_heads, head_dim):
                labels = labels.to(y.device)
                value = y[..., 0, labels == 2].unflatten(-1, (kv_heads, head_dim))
                value = value.repeat_interleave(heads // kv_heads, -2).flatten(-2)
                if torch.allclose(value, x[..., 0, :], rtol=_tolerance(x.dtype),
                                  atol=_tolerance(x.dtype)):
                    found.setdefault(tuple(torch.nonzero(labels == 2)[:, 0].tolist()), labels)
            if len(found) > 1:
                raise self.refuse(f"its attention {cls}'s fused projection {fused_name} gives "
                                  "the same values under several layouts of q, k and v, so "
                                  "its layout cannot be told")
            if not found:
                raise self.refuse(why)
            (self.layouts[key],) = found.values()

        self.hook(fused, after_fused)
        self.hook(out, before_out, pre=True)

    def fused_scales(self, key: int, grad: Tensor) -> Tensor:
        labels = self.layouts.get(key)
        if labels is None:
            raise self.refuse("a fused q/k/v projection ran without its output projection")
        scales = torch.tensor(self.scales, dtype=grad.dtype, device=grad.device)
        return scales[labels.to(grad.device)]

    # -- installation ----------------------------------------------------------------------
    def install(self) -> None:
        sq, sk, sv = self.scales
        attention: list[nn.Module] = []
        unknown: list[tuple[str, nn.Module]] = []
        mlps: list[tuple[str, nn.Module]] = []
        for name, module in self.model.named_modules():
            cls = type(module).__name__
            if "MoeBlock" in cls or cls.endswith(("MoE", "Experts")):
                raise self.refuse(f"no rule for its mixture of experts {cls} ({name})")
            if any(part in cls for part in ("Mixer", "Rglru", "RecurrentBlock")):
                raise self.refuse(f"no rule for its state-space or recurrent layer {cls} "
                                  f"({name})")
            if cls.endswith(("LayerNorm", "RMSNorm")):
                self.hook(module, self.norm)
            elif "Norm" in cls and not list(module.children()):
                raise self.refuse(f"no rule for its normalization {cls} ({name})")
            elif _is_activation(module) or (name.rsplit(".", 1)[-1] in _ACTIVATION_NAMES
                                            and not list(module.children())):
                self.activations.add(id(module))
                if cls not in _NO_RULE_ACTIVATIONS:
                    self.hook(module, self.enter_activation, pre=True)
                    self.hook(module, self.activation)
            fn = getattr(module, "activation_fn", None)
            if callable(fn) and not isinstance(fn, nn.Module):
                self.activations.add(id(module))
                self.function_activation(module)
            if cls.endswith("MLP"):
                mlps.append((name, module))
            if _has(module, "gate_proj", "up_proj", "down_proj") or \
                    _has(module, "gate_up_proj", "down_proj"):  # Llama's, Phi-3's gated MLP
                self.hook(module.down_proj, self.half_input, pre=True)
            elif _has(module, "wi_0", "wi_1", "wo"):  # T5's gated MLP
                self.hook(module.wo, self.half_input, pre=True)
            if cls.endswith("MultiheadAttention") or isinstance(module, nn.MultiheadAttention):
                attention.append(module)
            for names in (("q_proj", "k_proj", "v_proj"), ("q", "k", "v")):
                if _has(module, *names):
                    for attr, scale in zip(names, (sq, sk, sv)):
                        self.hook(getattr(module, attr), self.projection(scale))
                    attention.append(module)
                    break
            else:
                if isinstance(getattr(module, "c_attn", None), nn.Module) and \
                        cls.endswith("Attention"):
                    if getattr(module, "is_cross_attention", False):  # q_attn, c_attn: k | v
                        self.hook(module.q_attn, self.projection(sq))
                        self.hook(module.c_attn, self.fused_projection((sk, sv)))
                    else:
                        self.hook(module.c_attn, self.fused_projection((sq, sk, sv)))
                    attention.append(module)
                elif cls.endswith("Attention") and (fused := _fused_qkv(module)) is not None:
                    self.fused_attention(module, *fused)
                    attention.append(module)
                elif cls.endswith("Attention") and module not in attention:
                    unknown.append((name, module))
            if attention and attention[-1] is module and \
                    getattr(getattr(module, "config", None), "clip_qkv", None) is not None:
                raise self.refuse(f"its attention {cls} ({name}) clips q, k and v (clip_qkv), "
                                  "which has no rule here")
        for name, module in unknown:  # wrappers of a known attention (T5LayerSelfAttention)
            if not any(m in attention for m in module.modules()):
                raise self.refuse(f"its attention {type(module).__name__} ({name}) has no "
                                  "q/k/v projections this module knows")
        for name, module in mlps:
            if not any(id(m) in self.activations for m in module.modules()):
                raise self.refuse(f"its MLP {type(module).__name__} ({name}) has no activation "
                                  "module this module knows (a torch or transformers "
                                  "activation, or one kept as act, act_fn, activation or "
                                  "activation_fn)")
        if not attention:
            raise self.refuse("it has no attention module that LRP knows (q_proj/k_proj/"
                              "v_proj, a fused q/k/v projection, MultiheadAttention); plain "
                              "gradients would not be LRP")


def _has(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def _head_count(module: nn.Module) -> int | None:
    for owner in (module, getattr(module, "config", None)):
        for name in ("num_heads", "num_attention_heads", "n_head", "n_heads"):
            value = getattr(owner, name, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _fused_qkv(module: nn.Module) -> tuple[str, nn.Module, nn.Module, int, int] | None:
    """(name, fused projection, output projection, heads, key/value heads) of an attention
    whose only two Linear children are one projection of `(heads + 2 kv_heads) * head_dim`
    features and one of `heads * head_dim` inputs; None otherwise."""
    linears = [(n, m) for n, m in module.named_children() if isinstance(m, nn.Linear)]
    heads = _head_count(module)
    if len(linears) != 2 or heads is None:
        return None
    (name, fused), (_, out) = sorted(linears, key=lambda item: -item[1].out_features)
    extra = fused.out_features - out.in_features
    if out.in_features % heads or extra <= 0:
        return None
    head_dim = out.in_features // heads
    if extra % (2 * head_dim) or heads % (extra // (2 * head_dim)):
        return None
    return name, fused, out, heads, extra // (2 * head_dim)


def _fused_layouts(heads: int, kv_heads: int, head_dim: int) -> Iterator[Tensor]:
    """The layouts a fused q/k/v projection's output may have, as 0 (q), 1 (k), 2 (v) per
    feature: `parts` equal parts (`parts` dividing `kv_heads`), each of its query heads
    then its key and value heads, in either order. One part is `q | k | v` (Phi-3, Falcon's
    multi-query); one per key/value head is GPT-NeoX's, Persimmon's and Falcon's per-head (or
    per-group) interleaving; CodeGen's is four parts of `q | v | k`."""
    for second, third in ((1, 2), (2, 1)):
        for parts in range(1, kv_heads + 1):
            if kv_heads % parts:
                continue
            sizes = ((0, heads // parts), (second, kv_heads // parts), (third, kv_heads // parts))
            part = torch.cat([torch.full((n * head_dim,), code) for code, n in sizes])
            yield part.repeat(parts)


def _without_bias(module: nn.Module, y: Tensor) -> Tensor:
    bias = getattr(module, "bias", None)
    return y - bias.to(y.dtype) if torch.is_tensor(bias) else y


def _normalized(module: nn.Module, h: Tensor, output: Tensor, centered: bool,
                one_plus: bool) -> tuple[Tensor, Tensor]:
    """`(x - mean) * w` (or `x`, `1 + w`, no weight) and the normalizer `c` read off
    the module's output (least squares per row, a constant: whatever epsilon or precision the
    module used); 0 for a row that is 0."""
    if centered:
        h = h - h.mean(-1, keepdim=True)
    weight = getattr(module, "weight", None)
    if torch.is_tensor(weight):
        weight = weight.to(h.dtype)
        h = h * (1 + weight if one_plus else weight)
    with torch.no_grad():
        target = _without_bias(module, output.to(h.dtype))
        plain = h.detach()
        square = (plain * plain).sum(-1, keepdim=True)
        nonzero = square > 0
        factor = torch.where(nonzero, (target * plain).sum(-1, keepdim=True)
                             / torch.where(nonzero, square, torch.ones_like(square)),
                             torch.zeros_like(square))
    return h, factor


def _is_activation(module: nn.Module) -> bool:
    kind = type(module)
    if kind.__module__ == "torch.nn.modules.activation":
        return kind.__name__ not in _NOT_ELEMENTWISE
    return kind.__module__.endswith(".activations")


_TANH = (torch.tanh, torch.Tensor.tanh, F.tanh)


class _FunctionRules(TorchFunctionMode):
    """Rules for what models compute with plain functions rather than modules:

    * `tanh` (Gemma 2's softcapping `c * tanh(s / c)` of attention scores and of the final
      logits): the identity rule, like any elementwise activation. Inside an activation
      module (`gelu_new`) the module's own rule replaces it.
    * `F.multi_head_attention_forward`: the in-projections are computed here (with scaled
      gradients) and handed to torch's function with identity projection weights and zero
      biases, which reproduce them exactly.
    """

    def __init__(self, rules: _Rules) -> None:
        super().__init__()
        self.rules = rules
        self.signature = inspect.signature(F.multi_head_attention_forward)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _TANH and "out" not in kwargs and not self.rules.inside_activation:
            y = func(*args, **kwargs)
            x = args[0] if args else kwargs.get("input")
            if torch.is_tensor(x) and x.requires_grad and torch.is_grad_enabled():
                self.rules.applied["tanh"] += 1
                return identity_rule(x, y)
            return y
        if func is not F.multi_head_attention_forward:
            return func(*args, **kwargs)
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if a["static_k"] is not None or a["static_v"] is not None:
            raise self.rules.refuse("multi_head_attention_forward with static keys/values")
        query, key, value = a["query"], a["key"], a["value"]
        if a["use_separate_proj_weight"]:
            bias = a["in_proj_bias"]
            biases = (None, None, None) if bias is None else bias.chunk(3)
            q, k, v = F._in_projection(query, key, value, a["q_proj_weight"],
                                       a["k_proj_weight"], a["v_proj_weight"], *biases)
        else:  # the same packed projection torch would compute
            q, k, v = F._in_projection_packed(query, key, value, a["in_proj_weight"],
                                              a["in_proj_bias"])
        sq, sk, sv = self.rules.scales
        dim = q.shape[-1]
        eye = torch.eye(dim, dtype=q.dtype, device=q.device)
        a.update(query=scale_gradient(q, sq), key=scale_gradient(k, sk),
                 value=scale_gradient(v, sv), use_separate_proj_weight=True,
                 q_proj_weight=eye, k_proj_weight=eye, v_proj_weight=eye,
                 in_proj_bias=None if a["in_proj_bias"] is None else
                 torch.zeros(3 * dim, dtype=q.dtype, device=q.device))
        self.rules.applied["attention"] += 1
        return func(*bound.args, **bound.kwargs)


@contextlib.contextmanager
def lrp_rules(model: nn.Module, variant: str = "attnlrp") -> Iterator[dict[str, int]]:
    """Install the LRP rules on `model` for the duration of the `with` block.

    Every hook is removed on exit, also after an error. The rules:

    * **Normalization** (classes named `*LayerNorm` or `*RMSNorm`: `nn.LayerNorm`, fairseq's
      `LayerNorm`, `LlamaRMSNorm`, `T5LayerNorm`, Gemma's `(1 + w)` RMS norm, OLMo's
      layer norm without weight or bias, Cohere's layer norm without bias): the normalizer
      (standard deviation or root mean square) is a constant; the mean subtraction stays linear.
      The module's formula is found once, from its output, among `c (x - mean)` and `c x`,
      times `w`, `1 + w` or nothing, plus its bias, with one normalizer `c` per row, which
      the rule reads off the output (so it holds whatever epsilon the module adds). The same rule
      covers the norms of queries and keys (Qwen3, OLMo 2, Gemma 3, Persimmon, Cohere): they sit
      between the q/k projections, whose gradients are scaled (below), and the attention; the rule
      makes them linear, so scaling before or after them is the same.
    * **Elementwise activations** (modules of `torch.nn` and `transformers.activations`: GELU
      variants, SiLU, ReLU^2, tanh, ...; any module kept as `act`, `act_fn`, `activation` or
      `activation_fn`; fairseq's activation functions through the following `fc2`): the
      identity rule, gradient `f(x) / x`. ReLU's gradient already is that ratio and is left
      alone. `tanh` called as a function gets the same rule: Gemma 2's softcapping
      `c tanh(s / c)` of the attention scores (so the scores pass on what the softmax rule gives
      them) and of the final logits (the relevance adds up to the capped logit).
    * **Bilinear products**, uniform rule (half the relevance to each factor): a gated MLP's
      `act(gate) * up` (its `down_proj` input's gradient halved; `gate_proj` and
      `up_proj`, or Phi-3's fused `gate_up_proj`); attention `A V` and `q k^T`. For
      attention the gradients of the query, key and value projections are scaled: AttnLRP
      scales q and k by 1/4 (uniform rule on `A V` times uniform rule on `q k^T`) and v by 1/2,
      and keeps the softmax's own gradient, which in gradient x input form *is* the AttnLRP
      softmax rule `x_i (R_i - s_i sum_j R_j)`. The conservative variant (`variant="cp"`)
      holds the attention weights constant: q and k scaled 0, v scaled 1. Rotary position
      embeddings are linear in q and k; ALiBi and relative position biases are constants added
      to the scores.

    **Where attention is found**: modules with `q_proj`/`k_proj`/`v_proj` (Llama, Mistral,
    Qwen2 and 3, Gemma 1 to 3, OLMo 1 and 2, Cohere, BART, Marian), `q`/`k`/`v` (T5), GPT-2's
    fused `c_attn` (q | k | v along the last dimension), an attention (class `*Attention`)
    whose only two `nn.Linear` children are a fused q/k/v projection and its output projection
    (GPT-NeoX, Falcon, Persimmon, Phi-3, CodeGen), and
    `torch.nn.functional.multi_head_attention_forward` (fairseq's `MultiheadAttention`, which
    the project's plugin runs through that function with the module's weights, bypassing the
    projection modules; also `nn.MultiheadAttention`). A fused projection's output is split per
    feature, not necessarily in equal parts: the sizes come from the number of heads (the
    module's or its config's `num_heads`, `num_attention_heads`, `n_head`) and the two
    projections' widths (grouped keys and values included), and the layout is the one candidate
    (equal parts, each of query heads then key and value heads in either order: Phi-3's
    `q | k | v`, GPT-NeoX's and Falcon's per-head or per-group interleaving, CodeGen's four
    `q | v | k`) that the first forward confirms: the first query attends to itself only, so the
    output projection's input there is its value. The multi-head attention function is reached
    through a scoped `torch.overrides.TorchFunctionMode` (as is `tanh`): the projections are
    computed outside it with scaled gradients, then passed in with identity projection weights
    (an exact identity in floating point), so the attention itself is still torch's.

    **Conservation**: with the conservative variant and zero biases the relevance of all inputs
    sums to the logit (every rule passes on exactly the relevance it receives: attention weights,
    normalizers and activation ratios act as constants, products split their relevance). With
    AttnLRP the softmax rule is not conservative: the logit equals the input relevance plus, per
    attention, the relevance the softmax rule leaves out (tested exactly on GPT-2, fairseq and
    the fused-projection families). Biases absorb relevance in both variants. A scaled embedding
    (Gemma's `sqrt(hidden)`) is the first layer's input as it is.

    **Not detected**: an activation applied as a plain function other than `tanh` or a layer's
    `activation_fn` between `fc1` and `fc2` (it keeps its plain gradient), nor other nonlinear
    parts a model computes inline (gates, per-layer inputs).

    Args:
        model: The torch model to explain.
        variant: `"attnlrp"` (AttnLRP) or `"cp"` (CP-LRP: attention weights held constant);
            see [`ATTENTION_SCALES`][sequential_rationales.lrp.ATTENTION_SCALES].

    Yields:
        The counts of rules applied so far, by kind (`"attention"`, `"norm"`,
            `"activation"`, `"product"`, `"tanh"`), updated as the model runs.

    Raises:
        ValueError: For an unknown `variant`, and for a model this module has no rules for:
            a model without a known attention (a plain torch model), an attention of an unknown
            class or fused layout, one that clips q, k and v (OLMo's `clip_qkv`), a
            normalization whose output none of the formulas reproduces, a class `*MLP` without a
            known activation module (Bloom's `BloomGelu`), mixture-of-experts blocks (routing
            weights multiply expert outputs), state-space and recurrent layers (classes named
            `*Mixer*`, `*Rglru*`, `*RecurrentBlock*`: Mamba and the hybrids Jamba, Zamba,
            Falcon-H1, Bamba, RecurrentGemma). Some of these are found while the model runs.

    Example:
        ```python
        with torch.enable_grad(), lrp_rules(model) as applied:
            logits = adapter.logits(batch, embeddings)
        ```
    """
    if variant not in ATTENTION_SCALES:
        raise ValueError(f"unknown LRP variant {variant!r}; expected one of {LRP_VARIANTS}")
    rules = _Rules(model, ATTENTION_SCALES[variant])
    try:
        rules.install()
        with _FunctionRules(rules):
            yield rules.applied
    finally:
        for handle in rules.handles:
            handle.remove()


def _model_of(adapter: ModelAdapter) -> nn.Module:
    model = getattr(adapter, "model", adapter)
    if not isinstance(model, nn.Module) or not callable(getattr(adapter, "logits", None)):
        raise ValueError(f"lrp needs an adapter with a torch `model` and `logits(batch, "
                         f"embeddings)`; {type(adapter).__name__} has not")
    return model


def _codes(batch: SubsetBatch, i: int, target: Tensor, source: Tensor | None) -> Tensor:
    """Row `i` of per-token `[N, L, D]` values over context codes, float64 on the host."""
    return _unpad(target[i], batch.target_mask[i], None if source is None else source[i],
                  None if batch.source_mask is None else batch.source_mask[i]
                  ).detach().double().cpu()


def lrp_scores(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int | None = None, variant: str = "attnlrp",
               **_: object) -> Scores:
    """LRP relevance of each context code of each target, for the logit of `y_t`.

    The relevance of code `c` is (first layer's input) . (its modified gradient), summed over the
    hidden dimension. The first layer's input is the adapter's `input_embedding` (GPT-2: token
    plus position embedding; fairseq: `embed_scale * token + position`); adapters without one
    (or refusing it) use the token embedding. Each target's full context is one row; the rows of
    a chunk of at most `max_tokens_per_batch` tokens share one backward pass. Other keyword
    options (those of other methods) are accepted and ignored.

    Args:
        adapter: The model's adapter: it needs `model` (the torch module), `logits(batch,
            embeddings)` and `embed`.
        problem: The sequence and its targets.
        targets: The target positions to score.
        max_tokens_per_batch: Tokens per forward and backward pass (`None`: the device's
            default for passes with gradients).
        variant: `"attnlrp"` (the `lrp` method) or `"cp"` (attention weights constant).

    Returns:
        For each target `t`, `[S + t]` float64 relevances of the context codes
            `0 .. S + t - 1` (source, then target).

    Raises:
        ValueError: For an unknown `variant`, an adapter without `model` or `logits`, or a model
            [`lrp_rules`][sequential_rationales.lrp.lrp_rules] has no rules for.
        InputError: When some weights are offloaded (`device_map` with disk or CPU offload).
    """
    if variant not in ATTENTION_SCALES:
        raise ValueError(f"unknown LRP variant {variant!r}; expected one of {LRP_VARIANTS}")
    model = _model_of(adapter)
    if any(p.device.type == "meta" for p in model.parameters()):
        raise InputError(f"LRP reads {type(model).__name__}'s weights as its layers run, but "
                         "some are offloaded (device_map with disk or CPU offload, on the meta "
                         "device until used); load the model without offloading for lrp")
    budget = max_tokens_per_batch or default_token_budget(adapter.device, gradients=True)
    targets = list(targets)
    lengths = [problem.context_size(t) for t in targets]
    scores: Scores = {}
    for chunk in token_budget_chunks(lengths, budget):
        rows = targets[chunk]
        batch = build_batch(problem, [_full_context_subset(problem, t) for t in rows])
        batch = batch.to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(batch)
            first, scaled = emb, False
            if hasattr(adapter, "input_embedding"):
                with contextlib.suppress(ValueError):
                    first, scaled = adapter.input_embedding(batch), True
        inputs = [emb.target.detach().requires_grad_(True)]
        if emb.source is not None:
            inputs.append(emb.source.detach().requires_grad_(True))
        with torch.enable_grad(), lrp_rules(model, variant) as applied:
            logits = adapter.logits(batch, Embeddings(*inputs))
            if not applied["attention"]:
                raise ValueError(f"LRP has no rules for {type(model).__name__}: its attention "
                                 "ran without passing through a projection this module hooks")
            goals = torch.tensor([problem.goal(t) for t in rows], device=logits.device)
            grads = torch.autograd.grad(logits.gather(1, goals[:, None]).sum(), inputs)
        src_grad = grads[1] if len(grads) > 1 else None
        for i, t in enumerate(rows):
            grad = _codes(batch, i, grads[0], src_grad)
            x = _codes(batch, i, first.target, first.source)
            if scaled:  # d/dx = (d/de) / c for x = c e + positions
                grad = grad / _input_scale(adapter, problem, t).double()
            scores[t] = (x * grad).sum(-1)
    return scores
