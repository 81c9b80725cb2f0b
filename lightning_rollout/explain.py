"""``explain``: one hooked side pass through a ViT, returning a batch of explanation maps.

Data flow: validate the arguments → the model's adapter (:mod:`lightning_rollout.models`: where the
attention comes from, the token geometry, what the head reads) → capture the attention (or Grad-CAM's
activation) inside :func:`~lightning_rollout.capture.side_pass` and the adapter's settings → forward
(and, for gradient methods, one backward down to the first attention layer) → per-layer factors from
:mod:`lightning_rollout.methods`, accumulated as they arrive → read-out on the token grid.

Memory does not grow with depth: plain rollout multiplies each layer's ``(B, N, N)`` factor into the
running product as the layer runs; gradient methods fold each layer's factor into the read-out row
``u @ A_L ⋯ A_l`` (or, for heads that pool tokens, the product ``A_L ⋯ A_l``) inside a tensor hook
while the backward pass walks the layers in reverse.
"""

from functools import partial
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_rollout.capture import side_pass
from lightning_rollout.checks import Target, check_images, check_target, logits_of
from lightning_rollout.geometry import TokenGeometry
from lightning_rollout.legrad_pass import LeGradPass, check_first_layer
from lightning_rollout.methods import (
    GRADIENT_METHODS,
    HEAD_FUSIONS,
    METHODS,
    chefer_layer,
    grad_rollout_layer,
    gradcam_tokens,
    rollout_layer,
)
from lightning_rollout.methods.core import tokens_to_grid
from lightning_rollout.models.base import Layout, ModelAdapter, Readout
from lightning_rollout.models.custom import resolve_adapter



def validate_options(method: str, head_fusion: str, discard_ratio: float) -> None:
    """Checks the method options of :func:`explain` without touching a model.

    Raises:
        ValueError: naming the offending argument, its value and what is allowed.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {list(METHODS)}, got {method!r}")
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f"`head_fusion` must be one of {list(HEAD_FUSIONS)}, got {head_fusion!r}")
    if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not 0 <= discard_ratio < 1:
        raise ValueError(f"`discard_ratio` must be a number in [0, 1), got {discard_ratio!r}")


def _resolve_target(target: Target, logits: Tensor) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"gradient methods need a model returning logits of shape (B, num_classes), got {got}")
    num_classes = logits.shape[1]
    if target is None:
        return logits.argmax(dim=-1)
    if isinstance(target, int):
        target = torch.full((logits.shape[0],), target, dtype=torch.long)
    # A copy made here, outside inference mode, can be saved for backward by ``gather``.
    target = target.to(device=logits.device, dtype=torch.long).clone()
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"`target` values must be in [0, {num_classes}), got {target.tolist()}")
    return target


def _float32(device: torch.device):
    """Keeps the chain in float32 under a caller's autocast (which would run bmm in bf16/fp16)."""
    return torch.autocast(device_type=device.type, enabled=False)


def _check_attention(name: str, attention: Tensor, geometry: TokenGeometry) -> None:
    if attention.dim() != 4 or attention.shape[-1] != attention.shape[-2]:
        raise ValueError(
            f"module {name!r} returned shape {tuple(attention.shape)}, not an attention tensor (B, heads, N, N); "
            "point `attention_pattern` at the modules that output post-softmax attention"
        )
    _check_tokens(attention.shape[-1], name, geometry, "attends over")


def _check_tokens(num_tokens: int, name: str, geometry: TokenGeometry, verb: str = "outputs") -> None:
    if num_tokens != geometry.num_tokens:
        raise ValueError(
            f"module {name!r} {verb} N={num_tokens} tokens, but the geometry gives "
            f"num_prefix_tokens={geometry.num_prefix_tokens} + grid_size={geometry.grid_size} = "
            f"{geometry.num_tokens}; pass the right `num_prefix_tokens` / `grid_size`"
        )


class _ForwardRollout:
    """Attention sink multiplying each layer's rollout factor into ``R = A_l @ R`` as the layer runs."""

    def __init__(self, geometry: TokenGeometry, head_fusion: str, discard_ratio: float) -> None:
        self.geometry = geometry
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.relevance: Optional[Tensor] = None

    def __call__(self, name: str, attention: Tensor, layout: Optional[Layout] = None) -> None:
        attention = attention.detach() if layout is None else layout(attention.detach(), 1.0)
        _check_attention(name, attention, self.geometry)
        with _float32(attention.device):
            factor = rollout_layer(attention, self.head_fusion, self.discard_ratio)
            self.relevance = factor if self.relevance is None else torch.bmm(factor, self.relevance)

    def token_scores(self, readout: Readout) -> Optional[Tensor]:
        if self.relevance is None:
            return None
        with _float32(self.relevance.device):
            return readout.apply(self.relevance)


class _BackwardChain:
    """Attention sink that puts a tensor hook on each layer's attention; during backward (last layer first)
    each layer's factor is folded into the read-out row ``u @ A_L ⋯ A_l`` or, for a read-out that is not a
    fixed row (pooling heads), into the product ``A_L ⋯ A_l``.

    ``readout`` must be set between the forward and the backward, and :meth:`release` called once the
    pass is over (also when it failed): each tensor hook is owned by the attention's autograd node and
    reaches this object, which keeps the attentions, a cycle through C++ that ``gc`` cannot break.
    """

    def __init__(self, geometry: TokenGeometry, method: str, discard_ratio: float) -> None:
        self.geometry = geometry
        self.method = method
        self.discard_ratio = discard_ratio
        self.readout: Optional[Readout] = None
        self.attentions: List[Tensor] = []
        self.hooks: List[RemovableHandle] = []
        self.num_layers = 0
        self.next_layer = -1
        self.chain: Optional[Tensor] = None

    def __call__(self, name: str, attention: Tensor, layout: Optional[Layout] = None) -> None:
        _check_attention(name, attention if layout is None else layout(attention.detach(), 1.0), self.geometry)
        if attention.requires_grad:
            self.hooks.append(attention.register_hook(partial(self._fold, self.num_layers, attention.detach(), layout)))
        self.attentions.append(attention)
        self.num_layers += 1
        self.next_layer = self.num_layers - 1

    def release(self) -> None:
        """Removes the tensor hooks and drops the attentions (and with them the autograd graph)."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()
        self.attentions.clear()

    def _fold(self, layer: int, attention: Tensor, layout: Optional[Layout], gradient: Tensor) -> None:
        if layout is not None:
            attention, gradient = layout(attention, 1.0), layout(gradient, 0.0)
        if layer != self.next_layer:
            raise RuntimeError(
                f"attention gradients arrived out of order (layer {layer}, expected {self.next_layer}); "
                "gradient methods need the attention layers to run once each, in sequence"
            )
        self.next_layer -= 1
        with _float32(attention.device):
            if self.method == "grad_rollout":
                factor = grad_rollout_layer(attention, gradient, self.discard_ratio)
            else:
                factor = chefer_layer(attention, gradient)
            if self.readout.is_linear:
                row = self.readout.vector(factor.shape[0], factor.device) if self.chain is None else self.chain
                self.chain = torch.bmm(row.unsqueeze(1), factor).squeeze(1)
            else:
                self.chain = factor if self.chain is None else torch.bmm(self.chain, factor)

    def token_scores(self) -> Optional[Tensor]:
        if not self.num_layers:
            return None
        if self.next_layer != -1 or self.chain is None:
            raise RuntimeError(
                f"only {self.num_layers - 1 - self.next_layer} of {self.num_layers} attention layers "
                "received a gradient from the target score"
            )
        if self.readout.is_linear:
            return self.chain
        with _float32(self.chain.device):
            return self.readout.apply(self.chain)


class _Recorder:
    """Sink keeping the last tensor it was handed (Grad-CAM's activation, with its autograd graph)."""

    def __init__(self) -> None:
        self.value: Optional[Tensor] = None
        self.layout: Optional[Layout] = None

    def __call__(self, name: str, value: Tensor, layout: Optional[Layout] = None) -> None:
        self.value, self.layout = value, layout


def _gradcam_map(activation: Tensor, gradient: Tensor, geometry: TokenGeometry, layer: str) -> Tensor:
    """Grad-CAM on tokens ``(B, N, C)`` (prefix dropped, laid on the token grid) or a map ``(B, C, h, w)``."""
    with _float32(activation.device):
        if activation.dim() == 4:
            height, width = activation.shape[-2:]
            tokens = activation.detach().flatten(2).transpose(1, 2)
            scores = gradcam_tokens(tokens, gradient.flatten(2).transpose(1, 2), 0)
            return scores.reshape(-1, height, width)
        if activation.dim() != 3:
            raise ValueError(
                f"the Grad-CAM layer {layer!r} must output tokens (B, N, C) or a feature map (B, C, h, w), "
                f"got shape {tuple(activation.shape)}"
            )
        _check_tokens(activation.shape[1], layer, geometry)
        scores = gradcam_tokens(activation.detach(), gradient, geometry.num_prefix_tokens)
        return scores.reshape(-1, *geometry.grid_size)


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "rollout",
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    target: Target = None,
    attention_pattern: Optional[str] = None,
    gradcam_layer: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
    legrad_first_layer: int = 0,
) -> Tensor:
    """Computes explanation maps of a batch in one hooked side pass.

    The model's state is left exactly as found, also when the forward raises: fused attention and
    attention-implementation settings, every submodule's train/eval mode, parameters' ``.grad`` and the
    global RNG state. Gradient methods work inside ``torch.no_grad()`` and ``torch.inference_mode()``;
    under autocast the chain runs in float32. A ``torch.compile``-d model (or submodule) runs eagerly
    here, without touching its compiled graphs.

    Args:
        model: a timm, Hugging Face transformers or torchvision ViT, any ``nn.MultiheadAttention`` model,
            or any module containing one that returns logits (a tensor, or an output with ``.logits``);
            a LightningModule wrapping it works as is. The family's adapter
            (:mod:`lightning_rollout.models`) says where its attention comes from, its token geometry
            and what its head reads; other models work with ``attention_pattern``,
            ``num_prefix_tokens`` and ``grid_size`` given, or with an adapter of their own.
        images: ``(B, C, H, W)`` float batch on the model's device.
        method: ``"rollout"`` (Abnar & Zuidema 2020), ``"grad_rollout"`` (class-specific gradient
            rollout), ``"chefer"`` (Chefer et al., ICCV 2021), ``"gradcam"`` (Grad-CAM on the token
            grid, or on the last feature map of hierarchical models) or ``"legrad"`` (Bousselham et al.,
            ICCV 2025: per layer, the positive gradient of the model's own head on that block's tokens
            with respect to its attention, summed over layers).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads; used by ``"rollout"``.
        discard_ratio: fraction in ``[0, 1)`` of each layer's smallest fused entries zeroed per sample
            (never entry ``[0, 0]``); used by ``"rollout"`` and ``"grad_rollout"``.
        target: class to explain for gradient methods: ``None`` for the predicted class, an int, or a
            LongTensor of shape ``(B,)``.
        attention_pattern: ``None`` (the adapter's attention layers) or an fnmatch pattern of the modules
            whose output is the post-softmax attention ``(B, heads, N, N)``.
        gradcam_layer: ``None`` (the adapter's layer: timm ViTs' last block ``norm1``) or an fnmatch
            pattern; the last matching module's ``(B, N, C)`` or ``(B, C, h, w)`` output is Grad-CAM's
            activation.
        num_prefix_tokens: override of the number of leading non-patch tokens.
        grid_size: override of the patch grid ``(grid_h, grid_w)``.
        legrad_first_layer: the first attention layer ``"legrad"`` sums: ``0`` every layer (the paper),
            ``-2`` the last two (the authors' released code); negative values count from the end.

    Returns:
        ``(B, grid_h, grid_w)`` float32, non-negative maps on ``images.device``; the scale is the
        method's own (not normalised).

    Raises:
        ValueError: on a bad argument, a model whose attention layers, Grad-CAM layer or geometry cannot
            be found, or a forward that captured nothing.
        lightning_rollout.models.UnsupportedModelError: an attention method on a model without global
            token attention (Swin, MaxViT, XCiT, ...); its message points to ``"gradcam"``.

    Example::

        model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        maps = explain(model, images, "grad_rollout", target=labels)  # (B, 14, 14)
    """
    validate_options(method, head_fusion, discard_ratio)
    check_images(images)
    check_target(target, images.shape[0])
    check_first_layer(legrad_first_layer)
    adapter = resolve_adapter(model, attention_pattern, gradcam_layer, num_prefix_tokens, grid_size)
    geometry = adapter.geometry(tuple(images.shape[-2:]))
    if method == "gradcam":
        return _explain_gradcam(model, adapter, images, geometry, target)
    if method == "legrad":
        return _explain_legrad(model, adapter, images, geometry, target, legrad_first_layer)

    layers = adapter.attention_layers()
    if method == "rollout":
        chain = _ForwardRollout(geometry, head_fusion, discard_ratio)
    else:
        chain = _BackwardChain(geometry, method, discard_ratio)
    needs_grad = method in GRADIENT_METHODS
    try:
        with side_pass(model, images.device, needs_grad), adapter.attention_settings():
            with adapter.capture_attention(layers, chain), adapter.capture_readout() as readout_of:
                if needs_grad:
                    images = images.detach().clone().requires_grad_(True)
                logits = logits_of(model(images))
            readout = readout_of(geometry)
            if needs_grad:
                chain.readout = readout
                score = _target_score(logits, target)
                if chain.attentions:
                    # The backward stops at the first attention layer: nothing below it is needed.
                    torch.autograd.grad(score, chain.attentions[0])
    finally:
        if needs_grad:
            chain.release()
    scores = chain.token_scores(readout) if method == "rollout" else chain.token_scores()
    if scores is None:
        raise ValueError(
            f"the attention layers of {type(adapter.root).__name__} ({adapter.family} adapter"
            + (f", `attention_pattern`={attention_pattern!r}" if attention_pattern is not None else "")
            + ") captured no attention in the forward: they never ran (is a fused attention kernel bypassing them?)"
        )
    return tokens_to_grid(scores, geometry.num_prefix_tokens, geometry.grid_size)


def _target_score(logits: Tensor, target: Target) -> Tensor:
    target_index = _resolve_target(target, logits)
    return logits.gather(1, target_index[:, None]).sum()


def _explain_gradcam(
    model: nn.Module, adapter: ModelAdapter, images: Tensor, geometry: TokenGeometry, target: Target
) -> Tensor:
    recorder = _Recorder()
    try:
        with side_pass(model, images.device, needs_grad=True), adapter.capture_gradcam(recorder) as layer:
            images = images.detach().clone().requires_grad_(True)
            logits = logits_of(model(images))
            if recorder.value is None:
                raise ValueError(f"the Grad-CAM layer {layer!r} never ran in the forward")
            # Grad-CAM needs the gradient at its layer only: the backward stops there.
            (gradient,) = torch.autograd.grad(_target_score(logits, target), recorder.value)
        activation, layout = recorder.value.detach(), recorder.layout
    finally:
        recorder.value = recorder.layout = None  # the activation's autograd graph goes with it
    if layout is not None:
        activation, gradient = layout(activation, 0.0), layout(gradient, 0.0)
    return _gradcam_map(activation, gradient, geometry, layer)


def _explain_legrad(
    model: nn.Module, adapter: ModelAdapter, images: Tensor, geometry: TokenGeometry, target: Target, first_layer: int
) -> Tensor:
    legrad = LeGradPass(adapter, first_layer)
    layers = adapter.attention_layers()
    try:
        with side_pass(model, images.device, needs_grad=True), adapter.attention_settings():
            with adapter.capture_attention(layers, legrad), legrad.capture_blocks():
                images = images.detach().clone().requires_grad_(True)
                logits = logits_of(model(images))
            for (name, _), attention in zip(layers, legrad.attentions):
                _check_attention(name, attention, geometry)
            legrad.check_head(logits)
            target_index = _resolve_target(target, logits)[:, None]
            scores = legrad.token_scores(lambda layer_logits: layer_logits.gather(1, target_index).squeeze(1))
    finally:
        legrad.release()
    return tokens_to_grid(scores, geometry.num_prefix_tokens, geometry.grid_size)


def check_model(
    model: nn.Module,
    methods: Sequence[str],
    *,
    attention_pattern: Optional[str] = None,
    gradcam_layer: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> ModelAdapter:
    """Checks, without running the model, that :func:`explain` can serve ``methods`` on ``model``.

    Returns:
        The adapter ``explain`` will use.

    Raises:
        ValueError: (or :class:`~lightning_rollout.models.UnsupportedModelError`) with the reason, as
            ``explain`` would raise it.
    """
    adapter = resolve_adapter(model, attention_pattern, gradcam_layer, num_prefix_tokens, grid_size)
    adapter.geometry(None)
    if any(method != "gradcam" for method in methods):
        adapter.attention_layers()
    if "legrad" in methods:
        LeGradPass(adapter)
    if "gradcam" in methods:
        adapter.gradcam_layer()
    return adapter
