"""``explain``: one hooked side pass through a ViT, returning a batch of explanation maps.

Data flow: validate the arguments → resolve the token geometry → hook the attention modules (or the
Grad-CAM layer) inside :func:`~lightning_rollout.capture.side_pass` → forward (and, for gradient
methods, one backward to the input) → per-layer factors from :mod:`lightning_rollout.methods`,
accumulated as they arrive → read-out on the token grid.

Memory does not grow with depth: plain rollout multiplies each layer's ``(B, N, N)`` factor into the
running product inside the forward hook; gradient methods fold each layer's factor into the read-out
row ``u @ A_L ⋯ A_l`` inside a tensor hook while the backward pass walks the layers in reverse.
"""

from functools import partial
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from lightning_rollout.capture import (
    DEFAULT_ATTENTION_PATTERN,
    forward_hooks,
    require_modules,
    side_pass,
)
from lightning_rollout.geometry import TokenGeometry, resolve_geometry
from lightning_rollout.methods import (
    GRADIENT_METHODS,
    HEAD_FUSIONS,
    METHODS,
    chefer_layer,
    grad_rollout_layer,
    gradcam_tokens,
    rollout_layer,
)
from lightning_rollout.methods.core import readout_weights, tokens_to_grid

DEFAULT_GRADCAM_LAYER = "*norm1"
"""The last module matching this pattern is Grad-CAM's layer: timm ViTs' last block ``norm1``."""

Target = Union[None, int, Tensor]


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


def _check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = f"a {images.dim()}-D {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(
            images, Tensor
        ) else type(images).__name__
        raise ValueError(f"`images` must be a float tensor of shape (B, C, H, W), got {got}")


def _check_target_shape(target: Target, batch_size: int) -> None:
    if target is None:
        return
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"`target` must hold integer class indices, got dtype {target.dtype}")
        if tuple(target.shape) != (batch_size,):
            raise ValueError(f"`target` must have shape ({batch_size},) for this batch, got {tuple(target.shape)}")
        return
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"`target` must be None, an int or a LongTensor of shape (B,), got {type(target).__name__}")


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
    """Forward hook multiplying each layer's rollout factor into ``R = A_l @ R``."""

    def __init__(self, names: dict, geometry: TokenGeometry, head_fusion: str, discard_ratio: float) -> None:
        self.names = names
        self.geometry = geometry
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.relevance: Optional[Tensor] = None

    def __call__(self, module: nn.Module, inputs: tuple, attention: Tensor) -> None:
        _check_attention(self.names[module], attention, self.geometry)
        with _float32(attention.device):
            factor = rollout_layer(attention.detach(), self.head_fusion, self.discard_ratio)
            self.relevance = factor if self.relevance is None else torch.bmm(factor, self.relevance)

    def token_scores(self) -> Optional[Tensor]:
        if self.relevance is None:
            return None
        weights = readout_weights(
            self.geometry.num_tokens, self.geometry.num_prefix_tokens, self.geometry.has_class_token,
            self.relevance.device,
        )
        with _float32(self.relevance.device):
            return weights @ self.relevance


class _BackwardRow:
    """Forward hook that puts a tensor hook on each attention; during backward (last layer first) it
    folds each layer's factor into the read-out row ``u @ A_L ⋯ A_l``."""

    def __init__(self, names: dict, geometry: TokenGeometry, method: str, discard_ratio: float) -> None:
        self.names = names
        self.geometry = geometry
        self.method = method
        self.discard_ratio = discard_ratio
        self.num_layers = 0
        self.next_layer = -1
        self.row: Optional[Tensor] = None

    def __call__(self, module: nn.Module, inputs: tuple, attention: Tensor) -> None:
        _check_attention(self.names[module], attention, self.geometry)
        if attention.requires_grad:
            attention.register_hook(partial(self._fold, self.num_layers, attention.detach()))
        self.num_layers += 1
        self.next_layer = self.num_layers - 1

    def _fold(self, layer: int, attention: Tensor, gradient: Tensor) -> None:
        if layer != self.next_layer:
            raise RuntimeError(
                f"attention gradients arrived out of order (layer {layer}, expected {self.next_layer}); "
                "gradient methods need the hooked attention modules to run once each, in sequence"
            )
        self.next_layer -= 1
        with _float32(attention.device):
            if self.method == "grad_rollout":
                factor = grad_rollout_layer(attention, gradient, self.discard_ratio)
            else:
                factor = chefer_layer(attention, gradient)
            if self.row is None:
                weights = readout_weights(
                    self.geometry.num_tokens, self.geometry.num_prefix_tokens, self.geometry.has_class_token,
                    factor.device,
                )
                self.row = weights.expand(factor.shape[0], -1)
            self.row = torch.bmm(self.row.unsqueeze(1), factor).squeeze(1)

    def token_scores(self) -> Optional[Tensor]:
        if self.num_layers == 0:
            return None
        if self.next_layer != -1 or self.row is None:
            raise RuntimeError(
                f"only {self.num_layers - 1 - self.next_layer} of {self.num_layers} hooked attention layers "
                "received a gradient from the target score"
            )
        return self.row


class _GradCAMRecorder:
    """Forward hook keeping the Grad-CAM layer's output (with its autograd graph)."""

    def __init__(self) -> None:
        self.output: Optional[Tensor] = None

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if not isinstance(output, Tensor) or output.dim() != 3:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"the Grad-CAM layer must output tokens (B, N, C), got {got}")
        self.output = output


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "rollout",
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    target: Target = None,
    attention_pattern: str = DEFAULT_ATTENTION_PATTERN,
    gradcam_layer: str = DEFAULT_GRADCAM_LAYER,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """Computes explanation maps of a batch in one hooked side pass.

    The model's state is left exactly as found, also when the forward raises: fused attention flags,
    every submodule's train/eval mode, parameters' ``.grad`` and the global RNG state. Gradient methods
    work inside ``torch.no_grad()`` and ``torch.inference_mode()``; under autocast the chain runs in
    float32. A ``torch.compile``-d model (or submodule) runs eagerly here, without touching its compiled
    graphs.

    Args:
        model: a timm ViT or any module containing one that returns logits (a LightningModule wrapping
            it works as is); other models with ``num_prefix_tokens`` and ``grid_size`` given.
        images: ``(B, C, H, W)`` float batch on the model's device.
        method: ``"rollout"`` (Abnar & Zuidema 2020), ``"grad_rollout"`` (class-specific gradient
            rollout), ``"chefer"`` (Chefer et al., ICCV 2021) or ``"gradcam"`` (Grad-CAM on the token
            grid).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads; used by ``"rollout"``.
        discard_ratio: fraction in ``[0, 1)`` of each layer's smallest fused entries zeroed per sample
            (never entry ``[0, 0]``); used by ``"rollout"`` and ``"grad_rollout"``.
        target: class to explain for gradient methods: ``None`` for the predicted class, an int, or a
            LongTensor of shape ``(B,)``.
        attention_pattern: fnmatch pattern of the modules whose output is the post-softmax attention
            ``(B, heads, N, N)``; the default matches timm.
        gradcam_layer: fnmatch pattern; the last matching module's ``(B, N, C)`` output is Grad-CAM's
            activation (default: timm's last block ``norm1``).
        num_prefix_tokens: override of the number of leading non-patch tokens.
        grid_size: override of the patch grid ``(grid_h, grid_w)``.

    Returns:
        ``(B, grid_h, grid_w)`` float32, non-negative maps on ``images.device``; the scale is the
        method's own (not normalised).

    Raises:
        ValueError: on a bad argument, a model without matching modules or readable geometry, or a
            forward that captured nothing.

    Example::

        model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        maps = explain(model, images, "grad_rollout", target=labels)  # (B, 14, 14)
    """
    validate_options(method, head_fusion, discard_ratio)
    _check_images(images)
    _check_target_shape(target, images.shape[0])
    geometry = resolve_geometry(model, tuple(images.shape[-2:]), num_prefix_tokens, grid_size)

    if method == "gradcam":
        hooked = [require_modules(model, gradcam_layer, "gradcam_layer")[-1]]
        recorder = _GradCAMRecorder()
    else:
        hooked = require_modules(model, attention_pattern, "attention_pattern")
        names = {module: name for name, module in hooked}
        if method == "rollout":
            recorder = _ForwardRollout(names, geometry, head_fusion, discard_ratio)
        else:
            recorder = _BackwardRow(names, geometry, method, discard_ratio)

    needs_grad = method in GRADIENT_METHODS
    with side_pass(model, images.device, needs_grad), forward_hooks([m for _, m in hooked], recorder):
        if needs_grad:
            images = images.detach().clone().requires_grad_(True)
        logits = model(images)
        if method == "gradcam":
            layer_name = hooked[0][0]
            if recorder.output is None:
                raise ValueError(
                    f"the Grad-CAM layer {layer_name!r} (from `gradcam_layer`={gradcam_layer!r}) never ran in "
                    "the forward"
                )
            _check_tokens(recorder.output.shape[1], layer_name, geometry)
        if needs_grad:
            target_index = _resolve_target(target, logits)
            score = logits.gather(1, target_index[:, None]).sum()
            # Grad-CAM needs the gradient at its layer only; the attention methods' tensor hooks fire while
            # the backward walks down to the input.
            gradient_of = recorder.output if method == "gradcam" else images
            (gradient,) = torch.autograd.grad(score, gradient_of)

    if method == "gradcam":
        with _float32(images.device):
            scores = gradcam_tokens(recorder.output.detach(), gradient, geometry.num_prefix_tokens)
        return scores.reshape(-1, *geometry.grid_size)

    scores = recorder.token_scores()
    if scores is None:
        raise ValueError(
            f"the modules matched by `attention_pattern`={attention_pattern!r} captured no attention in the "
            "forward: they never ran (is a fused attention kernel bypassing them?)"
        )
    return tokens_to_grid(scores, geometry.num_prefix_tokens, geometry.grid_size)
