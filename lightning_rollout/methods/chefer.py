"""Gradient-weighted relevance of Chefer, Gur & Wolf, "Generic Attention-model Explainability" (ICCV 2021)."""

import torch
from torch import Tensor

from lightning_rollout.methods.base import register_method
from lightning_rollout.methods.chain import BackwardChain


def chefer_layer(attention: Tensor, gradient: Tensor) -> Tensor:
    """One layer's factor ``I + mean_heads(clamp(∂s/∂A ⊙ A, min=0))`` of the relevance update.

    The update ``R ← R + Ā @ R`` starting at ``R = I`` is the product ``(I + Ā_L) ⋯ (I + Ā_1)``; this
    returns one factor of it. There is no identity averaging and no row normalisation.

    Args:
        attention: ``(B, heads, N, N)`` post-softmax attention.
        gradient: ``(B, heads, N, N)`` gradient of the target score with respect to ``attention``.

    Returns:
        ``(B, N, N)`` float32 tensor.
    """
    fused = (attention.float() * gradient.float()).clamp(min=0).mean(dim=1)
    eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
    return fused + eye


@register_method
class Chefer(BackwardChain):
    """``"chefer"``: :func:`chefer_layer` folded through the shared backward."""

    name = "chefer"

    def layer_factor(self, attention: Tensor, gradient: Tensor) -> Tensor:
        return chefer_layer(attention, gradient)
