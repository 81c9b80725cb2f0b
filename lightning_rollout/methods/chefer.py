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
    """``"chefer"``: `chefer_layer` folded through the shared backward."""

    name = "chefer"
    summary = "Chefer et al. (ICCV 2021): gradient-weighted relevance propagated through the layers"
    constant_map_cause = (
        "the target logit has no gradient through the attention: a zero-initialised classifier head "
        "(torchvision's ViT) gives zero gradients at init, and a `global_pool='avg'` model gives none through "
        "the class token; the maps fill in once the head trains"
    )

    def layer_factor(self, attention: Tensor, gradient: Tensor) -> Tensor:
        return chefer_layer(attention, gradient)
