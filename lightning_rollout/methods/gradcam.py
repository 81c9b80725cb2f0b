"""Grad-CAM on the patch-token grid of a Vision Transformer."""

from torch import Tensor


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
