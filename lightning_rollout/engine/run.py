"""One hooked side pass that feeds every requested method: one forward and at most one backward.

Data flow: the methods say what they need (`Method` flags) → the
side pass (`side_pass` and the adapter's settings) captures the attention
layers and/or Grad-CAM's layer, once, whatever the number of methods → each layer's attention goes to
every method as it is produced (rollout folds it in right away) → after the forward the read-out and the
target scores are fixed → one backward of the summed target scores, down to the first attention layer
(or Grad-CAM's layer), during which one tensor hook per attention layer hands ``(attention, gradient)``
to every gradient method, last layer first → each method's maps. A method may run backward passes of its
own from ``after_forward`` (LeGrad: one short gradient call per layer); the shared hooks ignore them.

Nothing outlives the pass: each tensor hook is owned by its attention's autograd node (C++) and reaches
the pass, which keeps the attentions; a cycle ``gc`` cannot see. So the hooks are removed and every kept
tensor dropped in ``finally``, also when the forward raises.
"""

from contextlib import ExitStack, contextmanager, nullcontext
from functools import partial
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_rollout.core.hooks import side_pass
from lightning_rollout.core.outputs import Target, select_output
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.engine.scores import target_score
from lightning_rollout.methods.base import LiveForward, Method, PassContext, check_tokens, method_class, method_names
from lightning_rollout.models.base import Layout, ModelAdapter, UnsupportedModelError


def float32_math(device: torch.device):
    """Keeps the methods' math in float32 under a caller's autocast (which would run bmm in bf16/fp16)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _check_attention(name: str, attention: Tensor, context: PassContext) -> None:
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(
            f"module {name!r} returned shape {tuple(attention.shape)}, not an attention tensor (B, heads, N, N); "
            "point `attention_pattern` at the modules that output post-softmax attention"
        )
    check_tokens(attention.shape[-1], name, context.geometry, "attends over")


class _PassHooks:
    """The hooks of one side pass: hands each captured tensor to the methods that asked for it."""

    def __init__(self, context: PassContext, methods: List[Method], device: torch.device, keep_live: bool) -> None:
        self.context = context
        self.device = device
        # A forward-only pass drops each layer's attention once the methods have folded it: never all layers'
        # per-head N×N at once. With autograd on, the graph holds them anyway (the backward needs them).
        self.keep_live = keep_live
        self.num_layers = 0
        self.attention_methods = [m for m in methods if m.uses_attention]
        self.backward_methods = [m for m in self.attention_methods if m.shared_backward]
        self.gradcam_methods = [m for m in methods if m.uses_gradcam]
        self.attentions: List[Tensor] = []
        self.layouts: List[Optional[Layout]] = []
        self.hooks: List[RemovableHandle] = []
        self.next_layer = -1
        self.in_shared_backward = False
        self.activation: Optional[Tensor] = None
        self.activation_layout: Optional[Layout] = None

    def on_attention(self, name: str, attention: Tensor, layout: Optional[Layout] = None) -> None:
        laid_out = attention.detach() if layout is None else layout(attention.detach(), 1.0)
        _check_attention(name, laid_out, self.context)
        layer = self.num_layers
        self.num_layers += 1
        if self.keep_live:
            self.attentions.append(attention)
            self.layouts.append(layout)
        with float32_math(self.device):
            for method in self.attention_methods:
                method.forward_attention(layer, laid_out)
        if self.backward_methods and attention.requires_grad:
            self.hooks.append(attention.register_hook(partial(self._on_gradient, layer, attention.detach(), layout)))
        self.next_layer = layer

    def _on_gradient(self, layer: int, attention: Tensor, layout: Optional[Layout], gradient: Tensor) -> None:
        if not self.in_shared_backward:  # a method's own backward from after_forward (LeGrad's per layer)
            return
        if layer != self.next_layer:
            raise RuntimeError(
                f"attention gradients arrived out of order (layer {layer}, expected {self.next_layer}); "
                "gradient methods need the attention layers to run once each, in sequence"
            )
        self.next_layer -= 1
        if layout is not None:
            attention, gradient = layout(attention, 1.0), layout(gradient, 0.0)
        with float32_math(self.device):
            for method in self.backward_methods:
                method.backward_attention(layer, attention, gradient)

    def on_gradcam(self, name: str, activation: Tensor, layout: Optional[Layout] = None) -> None:
        self.activation, self.activation_layout = activation, layout

    def check_backward(self) -> None:
        if self.next_layer != -1:
            total = self.num_layers
            raise RuntimeError(
                f"only {total - 1 - self.next_layer} of {total} attention layers received a gradient from the "
                "target score"
            )

    def release(self) -> None:
        """Removes the tensor hooks and drops every tensor on the autograd graph."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()
        self.attentions.clear()
        self.layouts.clear()
        self.activation = self.activation_layout = None


def input_size(images: Tensor) -> Tuple[int, ...]:
    """What an adapter's geometry takes: ``(H, W)`` of images ``(B, C, H, W)``, ``(T, H, W)`` of clips
    ``(B, T, C, H, W)``."""
    return tuple(images.shape[-2:]) if images.dim() == 4 else (images.shape[1], *images.shape[-2:])


def _refusal(error: UnsupportedModelError, method_classes: Sequence[Type[Method]]) -> UnsupportedModelError:
    """The adapter's reason, then the methods asked for that read the attention and the registered ones that do
    not (from the method registry, so a method registered later is named too)."""
    needing = [m.name for m in method_classes if m.uses_attention]
    others = [name for name in method_names() if not method_class(name).uses_attention]
    advice = f"Use method {' or '.join(repr(n) for n in others)}" if others else "No registered method works without it"
    return UnsupportedModelError(f"{error}. {advice}: the methods {needing} read the attention layers")


def attention_layers(adapter: ModelAdapter, method_classes: Sequence[Type[Method]]) -> List[Tuple[str, nn.Module]]:
    """The adapter's attention layers.

    Raises:
        UnsupportedModelError: the model has none: the adapter's reason and the methods that work instead.
    """
    try:
        return adapter.attention_layers()
    except UnsupportedModelError as error:
        raise _refusal(error, method_classes) from None


@contextmanager
def attention_settings(adapter: ModelAdapter, method_classes: Sequence[Type[Method]]) -> Iterator[None]:
    """The adapter's attention settings (fused kernels off, eager attention) for the pass, restored after it.

    Raises:
        UnsupportedModelError: the model cannot expose its attention: the reason and the methods that work.
    """
    with ExitStack() as stack:
        try:
            stack.enter_context(adapter.attention_settings())
        except UnsupportedModelError as error:
            raise _refusal(error, method_classes) from None
        yield


def run_pass(
    model: nn.Module,
    images: Tensor,
    method_classes: Sequence[Type[Method]],
    adapter: ModelAdapter,
    options: ExplainOptions,
    target: Target,
    need_output: bool = True,
) -> Tuple[List[Method], Optional[Tensor]]:
    """Runs one side pass for ``method_classes``; ``images`` and ``target`` are checked by the caller.

    ``need_output``: select the output (``output_key``) even when no method needs a gradient; otherwise a
    forward-only pass accepts any output.

    Returns:
        The methods, fed (call `Method.maps`), and the selected model output, detached (``None``
        when it was not needed).

    Raises:
        ValueError: a forward that captured nothing, a bad target for this output, a bad layer output.
    """
    geometry = adapter.geometry(input_size(images))
    context = PassContext(
        model, adapter, geometry, options.head_fusion, options.discard_ratio, options.resolved_method_options()
    )
    methods = [cls(context) for cls in method_classes]
    uses_attention = any(m.uses_attention for m in methods)
    uses_gradcam = any(m.uses_gradcam for m in methods)
    needs_grad = any(m.needs_grad for m in methods)
    layers = attention_layers(adapter, method_classes) if uses_attention else []
    hooks = _PassHooks(context, methods, images.device, keep_live=needs_grad)
    try:
        settings = attention_settings(adapter, method_classes) if uses_attention else nullcontext()
        with side_pass(model, images.device, needs_grad), settings:
            with ExitStack() as captures:
                if uses_attention:
                    captures.enter_context(adapter.capture_attention(layers, hooks.on_attention))
                    readout_of = captures.enter_context(adapter.capture_readout())
                if uses_gradcam:
                    gradcam_name = captures.enter_context(adapter.capture_gradcam(hooks.on_gradcam))
                for method in methods:
                    captures.enter_context(method.capture())
                if needs_grad:
                    images = images.detach().clone().requires_grad_(True)
                output = model(images)
                if needs_grad or need_output:
                    output = select_output(output, options.output_key)
            if uses_attention:
                if not hooks.num_layers:
                    pattern = getattr(adapter, "attention_pattern", None)
                    raise ValueError(
                        f"the attention layers of {type(adapter.root).__name__} ({adapter.family} adapter"
                        + (f", `attention_pattern`={pattern!r}" if pattern is not None else "")
                        + ") captured no attention in the forward: they never ran (is a fused attention kernel "
                        "bypassing them?)"
                    )
                context.readout = readout_of(geometry)
            if uses_gradcam and hooks.activation is None:
                raise ValueError(f"the Grad-CAM layer {gradcam_name!r} never ran in the forward")
            if needs_grad:
                _backward(hooks, methods, output, target, images.shape[0], gradcam_name if uses_gradcam else "")
        return methods, (output.detach() if needs_grad or need_output else None)
    finally:
        hooks.release()


def _backward(
    hooks: _PassHooks, methods: List[Method], output: Tensor, target: Target, batch_size: int, gradcam_name: str
) -> None:
    """``after_forward`` of every method, then the one shared backward of the summed target scores."""
    score = target_score(target, output, batch_size)
    live = LiveForward(list(hooks.attentions), list(hooks.layouts), output, score)
    for method in methods:
        method.after_forward(live)
    gradcam_methods = [m for m in hooks.gradcam_methods if m.shared_backward]
    activation = hooks.activation if gradcam_methods else None
    # The backward stops at the first attention layer (and Grad-CAM's layer): nothing below is needed.
    inputs = ([hooks.attentions[0]] if hooks.backward_methods else []) + (
        [activation] if activation is not None else []
    )
    if not inputs:
        return
    hooks.in_shared_backward = True
    try:
        gradients = torch.autograd.grad(score(output).sum(), inputs)
    finally:
        hooks.in_shared_backward = False
    if hooks.backward_methods:
        hooks.check_backward()
    if activation is not None:
        activation, gradient = activation.detach(), gradients[-1]
        if hooks.activation_layout is not None:
            activation = hooks.activation_layout(activation, 0.0)
            gradient = hooks.activation_layout(gradient, 0.0)
        with float32_math(activation.device):
            for method in gradcam_methods:
                method.gradcam(gradcam_name, activation, gradient)


def maps_of(methods: List[Method], device: torch.device) -> Dict[str, Tensor]:
    """``{name: (B, grid_h, grid_w) float32 maps}`` of fed methods (video: ``(B, T', grid_h, grid_w)``)."""
    with float32_math(device):
        return {method.name: method.maps().float() for method in methods}
