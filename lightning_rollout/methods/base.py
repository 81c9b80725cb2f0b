"""What a method is to the engine: a small accumulator fed by one shared side pass, and the registry.

One side pass (`lightning_rollout.engine.run`) runs the forward once and, when a method asks for it, one
backward of the target score. It hands every method what it asked for, as it arrives:

- `Method.forward_attention`: each attention layer's post-softmax attention, in forward order
  (rollout multiplies it into its running product, ``"attention"`` keeps the last one);
- `Method.after_forward`: the live forward (the attentions still on the autograd graph, the
  selected output, the per-sample target scores), for methods that run backward passes of their own;
- `Method.backward_attention`: each layer's attention with the target score's gradient, last layer
  first, from one tensor hook per layer shared by every method (gradient rollout, Chefer);
- `Method.gradcam`: Grad-CAM's activation and its gradient, from the same backward.

Then `Method.maps` gives the ``(B, grid_h, grid_w)`` maps. A new method is one subclass, registered
with `register_method`; it sets the class attributes that say what it needs and overrides the
callbacks it uses. Options of its own (keyword arguments of ``explain`` / ``explain_many`` beyond the
shared ones) are declared in `Method.options` with their defaults and checked by
`Method.check_options`; the pass hands them over in `PassContext.options`.
"""

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager, Dict, List, Mapping, Optional, Type, TypeVar

from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.methods.core import tokens_to_grid
from lightning_rollout.models.base import Layout, ModelAdapter
from lightning_rollout.models.readout import Readout

_T = TypeVar("_T")


@dataclass
class PassContext:
    """What every method of one side pass may read.

    Attributes:
        model: the user's model.
        adapter: its adapter (where the attention comes from, the geometry, what the head reads).
        geometry: the token geometry of this batch.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
        discard_ratio: fraction in ``[0, 1)`` of each layer's ``N²`` fused entries taken as the smallest and
            zeroed per sample, entry ``[0, 0]`` excepted.
        options: every registered method's own options (`Method.options`), defaults filled in.
        readout: what the head reads; set after the forward, before any backward.
    """

    model: nn.Module
    adapter: ModelAdapter
    geometry: TokenGeometry
    head_fusion: str
    discard_ratio: float
    options: Dict[str, Any] = field(default_factory=dict)
    readout: Optional[Readout] = None

    def require_readout(self) -> Readout:
        """The read-out, once the forward has set it.

        Raises:
            RuntimeError: when asked before the forward ran.
        """
        if self.readout is None:
            raise RuntimeError("the read-out is not set yet: the side pass sets it after the forward")
        return self.readout


@dataclass
class LiveForward:
    """The forward while its autograd graph is alive (handed to `Method.after_forward`).

    Attributes:
        attentions: each attention layer's attention as the layer produced it, on the graph, forward order.
        layouts: the layout of each (``None``: already ``(B, heads, N, N)`` on the full token sequence).
        output: the selected model output (after ``output_key``), on the graph.
        score: maps an output like ``output`` to the ``(B,)`` per-sample scores being explained (the
            target's logit, or the caller's ``target`` callable); ``score(output)`` is what the shared
            backward differentiates.
    """

    attentions: List[Tensor]
    layouts: List[Optional[Layout]]
    output: Tensor
    score: Callable[[Tensor], Tensor]


class Method:
    """One explanation method's state through one side pass; subclass, set the flags, override the hooks.

    Class attributes:
        name: the name ``explain`` takes.
        summary: one line saying what the method shows (the command line's help lists it).
        constant_map_cause: why its maps may come out constant, and what to change (the callbacks' warning).
        uses_attention: it reads the attention layers (the side pass captures them).
        uses_gradcam: it reads Grad-CAM's activation layer.
        needs_grad: the forward runs with autograd.
        shared_backward: it receives gradients of the target score from the one shared backward
            (`backward_attention`, `gradcam`).
        options: its own keyword options of ``explain`` / ``explain_many`` and their defaults (names
            prefixed with the method's name, e.g. ``{"legrad_first_layer": -2}``).

    Args:
        context: the side pass's `PassContext`.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    constant_map_cause: ClassVar[str] = "an untrained head"
    uses_attention: ClassVar[bool] = True
    uses_gradcam: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False
    shared_backward: ClassVar[bool] = False
    options: ClassVar[Dict[str, Any]] = {}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raises ``ValueError`` naming the option, the value and what is allowed (default: accepts all)."""

    def __init__(self, context: PassContext) -> None:
        self.context = context

    @classmethod
    def check_adapter(cls, adapter: ModelAdapter, options: Optional[Mapping[str, Any]] = None) -> None:
        """Raises, without running the model, when the method cannot serve the adapter's model with ``options``
        (every registered method's options, defaults filled in; ``None``: the defaults). Default: never; the
        attention layers and Grad-CAM's layer are checked by the caller from the flags."""

    def capture(self) -> ContextManager:
        """A context manager entered around the forward, for hooks of the method's own (default: none)."""
        return nullcontext()

    def forward_attention(self, layer: int, attention: Tensor) -> None:
        """Layer ``layer``'s attention ``(B, heads, N, N)``, detached and laid out, in forward order."""

    def after_forward(self, live: LiveForward) -> None:
        """Called once after the forward, before the shared backward, with the graph alive; backward passes a
        method runs here (``retain_graph=True``) do not reach the other methods' `backward_attention`."""

    def backward_attention(self, layer: int, attention: Tensor, gradient: Tensor) -> None:
        """Layer ``layer``'s attention and the target score's gradient w.r.t. it, last layer first."""

    def gradcam(self, layer_name: str, activation: Tensor, gradient: Tensor) -> None:
        """Grad-CAM's laid-out activation (detached) and its gradient."""

    def maps(self) -> Tensor:
        """The ``(B, grid_h, grid_w)`` float32 maps of this pass (``(B, T', grid_h, grid_w)`` for video)."""
        raise NotImplementedError


_METHODS: Dict[str, Type[Method]] = {}


def register_method(method: Type[Method]) -> Type[Method]:
    """Registers a `Method` subclass under its ``name`` (usable as a class decorator).

    Raises:
        TypeError: if ``method`` is not a `Method` subclass with a non-empty ``name``.
    """
    if not (isinstance(method, type) and issubclass(method, Method)) or not method.name:
        raise TypeError(f"`method` must be a Method subclass with a `name`, got {method!r}")
    _METHODS[method.name] = method
    return method


def unregister_method(name: str) -> None:
    """Removes the method registered as ``name`` (a plugin's or a test's).

    Raises:
        ValueError: naming ``name`` and the registered names, when it is not registered.
    """
    method_class(name)
    del _METHODS[name]


def method_class(name: str) -> Type[Method]:
    """The registered method called ``name``.

    Raises:
        ValueError: naming ``method`` and the registered names.
    """
    if not isinstance(name, str) or name not in _METHODS:
        raise ValueError(f"`method` must be one of {method_names()}, got {name!r}")
    return _METHODS[name]


def method_names() -> List[str]:
    """The registered method names, in registration order."""
    return list(_METHODS)


def method_summaries() -> Dict[str, str]:
    """``{name: summary}`` of the registered methods, in registration order."""
    return {name: method.summary for name, method in _METHODS.items()}


def check_method_options(options: Mapping[str, Any]) -> Dict[str, Any]:
    """Checks method options given to ``explain`` / ``explain_many``; returns every registered method's
    options with the defaults filled in.

    Raises:
        TypeError: naming an option no registered method declares, and the declared ones.
        ValueError: from the declaring method's `Method.check_options`.
    """
    declared = {name: default for method in _METHODS.values() for name, default in method.options.items()}
    unknown = [name for name in options if name not in declared]
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {unknown}; the methods' own options are {sorted(declared)}")
    merged = {**declared, **options}
    for method in _METHODS.values():
        if method.options:
            method.check_options({name: merged[name] for name in method.options})
    return merged


def check_tokens(num_tokens: int, name: str, geometry: TokenGeometry, verb: str = "outputs") -> None:
    """Raises unless a layer's token count is the geometry's ``num_tokens``.

    Raises:
        ValueError: naming the layer, both counts and the arguments that fix the geometry.
    """
    if num_tokens != geometry.num_tokens:
        raise ValueError(
            f"module {name!r} {verb} N={num_tokens} tokens, but the geometry gives "
            f"num_prefix_tokens={geometry.num_prefix_tokens} + "
            + ("" if geometry.temporal_size is None else f"temporal_size={geometry.temporal_size} × ")
            + f"grid_size={geometry.grid_size} = "
            f"{geometry.num_tokens}; pass the right `num_prefix_tokens` / `grid_size`"
        )


def fed(value: Optional[_T], what: str, owner: str) -> _T:
    """``value`` once the side pass has fed it.

    Raises:
        RuntimeError: naming ``owner`` and what it was not fed (``maps`` before the pass, or a pass that never
            reached the hook).
    """
    if value is None:
        raise RuntimeError(f"{owner} was not fed its {what}")
    return value


def grid_of(context: PassContext, token_scores: Tensor) -> Tensor:
    """``(B, N)`` token scores → ``(B, grid_h, grid_w)`` patch scores, or ``(B, T', grid_h, grid_w)`` for a video
    model (prefix tokens dropped)."""
    geometry = context.geometry
    return tokens_to_grid(token_scores, geometry.num_prefix_tokens, geometry.map_shape)
