"""Attention rollout (Abnar & Zuidema, 2020): one layer's factor of the rollout product."""

from torch import Tensor

from lightning_rollout.methods.core import add_identity_and_normalize, discard_smallest, fuse_heads


def rollout_layer(attention: Tensor, head_fusion: str, discard_ratio: float) -> Tensor:
    """Turns one layer's attention into its row-stochastic rollout factor.

    Args:
        attention: ``(B, heads, N, N)`` post-softmax attention.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
        discard_ratio: fraction in ``[0, 1)`` of the smallest fused entries zeroed per sample.

    Returns:
        ``(B, N, N)`` float32 ``A`` with ``R = A_L ⋯ A_1``.
    """
    fused = discard_smallest(fuse_heads(attention, head_fusion), discard_ratio)
    return add_identity_and_normalize(fused)
