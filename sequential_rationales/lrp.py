"""Layer-wise relevance propagation (AttnLRP-style) as gradient x input.

The ``lrp`` ordering scores each context token of target ``t`` by its relevance for the
**logit** of ``y_t`` (before the softmax). The LRP rules are installed as *value-preserving
modified gradients* (temporary forward hooks, removed afterwards): the model computes the same
outputs, but its backward pass carries the LRP rules, and the relevance of a token is the sum
over the hidden dimension of (first layer's input) x (its modified gradient). The rules:

* **Normalization** (classes named ``*LayerNorm`` or ``*RMSNorm``: ``nn.LayerNorm``, fairseq's
  ``LayerNorm``, ``LlamaRMSNorm``, ``T5LayerNorm``): the normalizer (standard deviation or root
  mean square) is a constant; the mean subtraction stays linear.
* **Elementwise activations** (modules of ``torch.nn`` and ``transformers.activations``: GELU
  variants, SiLU, tanh, ...; any module kept as ``act``, ``act_fn``, ``activation`` or
  ``activation_fn``; fairseq's activation functions through the following ``fc2``): the
  identity rule, gradient ``f(x) / x``.
  ReLU's gradient already is that ratio and is left alone.
* **Bilinear products**, uniform rule (half the relevance to each factor): a gated MLP's
  ``act(gate) * up`` (its ``down_proj`` input's gradient halved); attention ``A V`` and
  ``q k^T``. For attention the gradients of the query, key and value projections are scaled:
  AttnLRP (Achtibat et al., 2024) scales q and k by 1/4 (uniform rule on ``A V`` times uniform
  rule on ``q k^T``) and v by 1/2, and keeps the softmax's own gradient, which in gradient x
  input form *is* the AttnLRP softmax rule ``x_i (R_i - s_i sum_j R_j)``. The conservative
  variant (``variant="cp"``, CP-LRP, Ali et al., 2022) holds the attention weights constant:
  q and k scaled 0, v scaled 1.

Attention is found as: modules with ``q_proj``/``k_proj``/``v_proj`` (Llama, BART, Marian),
``q``/``k``/``v`` (T5), GPT-2's fused ``c_attn`` (q | k | v along the last dimension), and
``torch.nn.functional.multi_head_attention_forward`` (fairseq's ``MultiheadAttention``, which the
project's plugin runs through that function with the module's weights, bypassing the projection
modules; also ``nn.MultiheadAttention``). That function is reached through a scoped
:class:`torch.overrides.TorchFunctionMode`: the projections are computed outside it with scaled
gradients, then passed in with identity projection weights (an exact identity in floating
point), so the attention itself is still torch's.

Conservation: with the conservative variant and zero biases the relevance of all inputs sums to
the logit (every rule passes on exactly the relevance it receives: attention weights,
normalizers and activation ratios act as constants, products split their relevance). With
AttnLRP the softmax rule is not conservative: the logit equals the input relevance plus, per
attention, the relevance the softmax rule leaves out (tested exactly on GPT-2 and fairseq).
Biases absorb relevance in both variants.

A model must contain at least one attention this module knows; anything else (a plain torch
model, an attention of an unknown class, a normalization or activation whose output the rule
does not reproduce) is refused with a ValueError rather than explained by plain gradients.
Not detected: an activation applied as a plain function other than a layer's
``activation_fn`` between ``fc1`` and ``fc2`` (it keeps its plain gradient).
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

Scores = dict[int, Tensor]

#: Gradient scales of the (query, key, value) projections per variant.
ATTENTION_SCALES = {"attnlrp": (0.25, 0.25, 0.5), "cp": (0.0, 0.0, 1.0)}
LRP_VARIANTS = tuple(ATTENTION_SCALES)

# Elementwise activations whose gradient already is f(x) / x (or 1): no rule needed.
_NO_RULE_ACTIVATIONS = ("ReLU", "LinearActivation", "Identity")
# Attribute names under which models keep their activation module.
_ACTIVATION_NAMES = ("act", "act_fn", "activation", "activation_fn")
# torch.nn.modules.activation classes that are not elementwise activations.
_NOT_ELEMENTWISE = ("MultiheadAttention", "Softmax", "Softmin", "LogSoftmax", "Softmax2d", "GLU")


def scale_gradient(y: Tensor, scale: float | Tensor) -> Tensor:
    """``y`` with its gradient multiplied by ``scale``; the value is exactly ``y``."""
    if isinstance(scale, float) and scale == 0.0:
        return y.detach()
    return y.detach() + scale * (y - y.detach())


def identity_rule(x: Tensor, y: Tensor) -> Tensor:
    """``y = f(x)`` elementwise, with the gradient ``f(x) / x`` of the identity rule (0 where
    ``x`` is too close to 0 to divide by: its relevance ``x * grad`` is 0 there anyway). The
    value is exactly ``y``."""
    safe = x.abs() > torch.finfo(x.dtype).tiny
    ratio = torch.where(safe, y / torch.where(safe, x, torch.ones_like(x)), torch.zeros_like(x))
    return y.detach() + (x - x.detach()) * ratio.detach()


def _tolerance(dtype: torch.dtype) -> float:
    # Modules may compute in float32 whatever their dtype (LlamaRMSNorm).
    return 1e-4 if dtype in (torch.float64, torch.float32) else 2e-2


class _Rules:
    """The hooks of one :func:`lrp_rules` context and counts of the rules applied."""

    def __init__(self, model: nn.Module, scales: tuple[float, float, float]) -> None:
        self.model = model
        self.scales = scales
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.checked: set[int] = set()  # norms and activations whose value was verified once
        self.applied = {"attention": 0, "norm": 0, "activation": 0, "product": 0}
        self.uses_function_attention = False

    def hook(self, module: nn.Module, fn, pre: bool = False) -> None:
        self.handles.append(module.register_forward_pre_hook(fn) if pre
                            else module.register_forward_hook(fn))

    def refuse(self, why: str) -> ValueError:
        return ValueError(f"LRP has no rules for {type(self.model).__name__}: {why}")

    # -- normalization ---------------------------------------------------------------------
    def norm(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        name = type(module).__name__
        centered = not (name.endswith("RMSNorm") or hasattr(module, "variance_epsilon"))
        eps = getattr(module, "variance_epsilon", None) or getattr(module, "eps", None)
        h = x.to(torch.promote_types(x.dtype, torch.float32))
        if eps is None:
            eps = torch.finfo(h.dtype).eps
        if centered:
            h = h - h.mean(-1, keepdim=True)
        # The normalizer is a constant: what makes the rule linear.
        z = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps).detach()
        weight = getattr(module, "weight", None)
        if weight is not None:
            z = z * weight
        z = z.to(output.dtype)
        if id(module) not in self.checked:  # the formula must be the module's (e.g. not 1 + w)
            bias = getattr(module, "bias", None)
            expected = z if bias is None else z + bias
            if expected.shape != output.shape or not torch.allclose(
                    expected, output, rtol=_tolerance(output.dtype),
                    atol=_tolerance(output.dtype)):
                raise self.refuse(f"its normalization {name} does not compute "
                                  "weight * (x - mean) / std + bias nor weight * x / rms")
            self.checked.add(id(module))
        self.applied["norm"] += 1
        return output.detach() + (z - z.detach())

    # -- activations -----------------------------------------------------------------------
    def activation(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor:
        x = args[0]
        if not (torch.is_tensor(output) and output.shape == x.shape):
            raise self.refuse(f"{type(module).__name__} is not an elementwise activation")
        self.applied["activation"] += 1
        return identity_rule(x, output)

    def function_activation(self, layer: nn.Module) -> None:
        """A layer calling a plain activation function between ``fc1`` and ``fc2`` (fairseq):
        the identity rule on ``fc2``'s input, from the ``fc1`` output just computed."""
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
        """GPT-2's ``c_attn``: equal parts of the last dimension, one scale each."""
        def hook(_module: nn.Module, _args: tuple, output: Tensor) -> Tensor:
            part = output.shape[-1] // len(scales)
            scale = torch.tensor(scales, dtype=output.dtype, device=output.device)
            self.applied["attention"] += 1
            return scale_gradient(output, scale.repeat_interleave(part))
        return hook

    # -- installation ----------------------------------------------------------------------
    def install(self) -> None:
        sq, sk, sv = self.scales
        attention: list[nn.Module] = []
        unknown: list[tuple[str, nn.Module]] = []
        for name, module in self.model.named_modules():
            cls = type(module).__name__
            if cls.endswith(("LayerNorm", "RMSNorm")):
                self.hook(module, self.norm)
            elif "Norm" in cls and not list(module.children()):
                raise self.refuse(f"no rule for its normalization {cls} ({name})")
            elif _is_activation(module) or (name.rsplit(".", 1)[-1] in _ACTIVATION_NAMES
                                            and not list(module.children())):
                if cls not in _NO_RULE_ACTIVATIONS:
                    self.hook(module, self.activation)
            fn = getattr(module, "activation_fn", None)
            if callable(fn) and not isinstance(fn, nn.Module):
                self.function_activation(module)
            if _has(module, "gate_proj", "up_proj", "down_proj"):  # Llama's gated MLP
                self.hook(module.down_proj, self.half_input, pre=True)
            elif _has(module, "wi_0", "wi_1", "wo"):  # T5's gated MLP
                self.hook(module.wo, self.half_input, pre=True)
            if cls.endswith("MultiheadAttention") or isinstance(module, nn.MultiheadAttention):
                self.uses_function_attention = True
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
                elif cls.endswith("Attention") and module not in attention:
                    unknown.append((name, module))
        for name, module in unknown:  # wrappers of a known attention (T5LayerSelfAttention)
            if not any(m in attention for m in module.modules()):
                raise self.refuse(f"its attention {type(module).__name__} ({name}) has no "
                                  "q/k/v projections this module knows")
        if not attention:
            raise self.refuse("it has no attention module that LRP knows (q_proj/k_proj/"
                              "v_proj, GPT-2's c_attn, MultiheadAttention); plain gradients "
                              "would not be LRP")


def _has(module: nn.Module, *names: str) -> bool:
    return all(isinstance(getattr(module, n, None), nn.Module) for n in names)


def _is_activation(module: nn.Module) -> bool:
    kind = type(module)
    if kind.__module__ == "torch.nn.modules.activation":
        return kind.__name__ not in _NOT_ELEMENTWISE
    return kind.__module__.endswith(".activations")


class _FunctionAttention(TorchFunctionMode):
    """Applies the attention rule to ``F.multi_head_attention_forward`` calls: the in-projections
    are computed here (with scaled gradients) and handed to torch's function with identity
    projection weights and zero biases, which reproduce them exactly."""

    def __init__(self, rules: _Rules) -> None:
        super().__init__()
        self.rules = rules
        self.signature = inspect.signature(F.multi_head_attention_forward)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
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
    """Install the LRP rules on ``model`` for the duration (see the module docstring); yields
    the counts of rules applied so far. Every hook is removed on exit, also after an error.

    Raises ValueError for a model without a known attention, or with a normalization or
    attention this module has no rule for.
    """
    if variant not in ATTENTION_SCALES:
        raise ValueError(f"unknown LRP variant {variant!r}; expected one of {LRP_VARIANTS}")
    rules = _Rules(model, ATTENTION_SCALES[variant])
    try:
        rules.install()
        mode = _FunctionAttention(rules) if rules.uses_function_attention else None
        with mode if mode is not None else contextlib.nullcontext():
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
    """Row ``i`` of per-token ``[N, L, D]`` values over context codes, float64 on the host."""
    return _unpad(target[i], batch.target_mask[i], None if source is None else source[i],
                  None if batch.source_mask is None else batch.source_mask[i]
                  ).detach().double().cpu()


def lrp_scores(adapter: ModelAdapter, problem: RationalizationProblem, targets: Sequence[int],
               max_tokens_per_batch: int | None = None, variant: str = "attnlrp",
               **_: object) -> Scores:
    """LRP relevance of each context code ``0 .. S + t - 1`` (source, then target) for the
    logit of ``y_t``: (first layer's input) . (its modified gradient), summed over the hidden
    dimension. The first layer's input is the adapter's ``input_embedding`` (GPT-2: token plus
    position embedding; fairseq: ``embed_scale * token + position``); adapters without one
    (or refusing it) use the token embedding. Each target's full context is one row; the rows
    of a chunk of at most ``max_tokens_per_batch`` tokens share one backward pass.
    ``variant``: ``"attnlrp"`` (the ``lrp`` method) or ``"cp"`` (attention weights constant).
    """
    if variant not in ATTENTION_SCALES:
        raise ValueError(f"unknown LRP variant {variant!r}; expected one of {LRP_VARIANTS}")
    model = _model_of(adapter)
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
