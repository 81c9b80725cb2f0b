"""Grad-CAM on the patch-token grid of a Vision Transformer (or a hierarchical model's last feature map)."""

from typing import Optional

from torch import Tensor

from lightning_rollout.methods.base import Method, check_tokens, fed, register_method


def gradcam_tokens(activations: Tensor, gradients: Tensor, num_prefix_tokens: int) -> Tensor:
    """Grad-CAM scores of the patch tokens.

    Channel weights are the gradient averaged over the patch tokens; the map is
    ``ReLU(Σ_c w_c · a_c)``.

    Args:
        activations: ``(B, N, C)`` token activations (timm: the last block's ``norm1`` output).
        gradients: ``(B, N, C)`` gradient of the target score with respect to ``activations``.
        num_prefix_tokens: leading non-patch tokens, dropped before anything else.

    Returns:
        ``(B, N - num_prefix_tokens)`` float32 non-negative scores.
    """
    patches = activations[:, num_prefix_tokens:].float()
    weights = gradients[:, num_prefix_tokens:].float().mean(dim=1)
    return (patches * weights[:, None, :]).sum(dim=-1).clamp(min=0)


@register_method
class GradCAM(Method):
    """``"gradcam"``: tokens ``(B, N, C)`` (prefix dropped, laid on the token grid) or a map ``(B, C, h, w)``."""

    name = "gradcam"
    summary = "Grad-CAM on the token grid (or a hierarchical model's last feature map)"
    constant_map_cause = (
        "the target logit has no gradient at `gradcam_layer` (a zero-initialised classifier head gives zero "
        "gradients at init) or every channel weight is negative; the maps fill in once the head trains"
    )
    uses_attention = False
    uses_gradcam = True
    needs_grad = True
    shared_backward = True

    def __init__(self, context) -> None:
        super().__init__(context)
        self.result: Optional[Tensor] = None

    def gradcam(self, layer_name: str, activation: Tensor, gradient: Tensor) -> None:
        if activation.dim() in (4, 5):  # a feature map (B, C, h, w) or, for video, (B, C, t, h, w)
            cells = activation.shape[2:]
            tokens = activation.flatten(2).transpose(1, 2)
            scores = gradcam_tokens(tokens, gradient.flatten(2).transpose(1, 2), 0)
            self.result = scores.reshape(-1, *cells)
            return
        if activation.dim() != 3:
            raise ValueError(
                f"the Grad-CAM layer {layer_name!r} must output tokens (B, N, C) or a feature map (B, C, h, w) "
                f"(video: (B, C, t, h, w)), got shape {tuple(activation.shape)}"
            )
        geometry = self.context.geometry
        check_tokens(activation.shape[1], layer_name, geometry)
        scores = gradcam_tokens(activation, gradient, geometry.num_prefix_tokens)
        self.result = scores.reshape(-1, *geometry.map_shape)

    def maps(self) -> Tensor:
        return fed(self.result, "Grad-CAM activation and gradient", f"method {self.name!r}")
