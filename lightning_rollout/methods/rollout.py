"""Attention rollout (Abnar & Zuidema, 2020): one layer's factor of the rollout product, and the method."""

from typing import Optional

import torch
from torch import Tensor

from lightning_rollout.methods.base import Method, fed, grid_of, register_method
from lightning_rollout.methods.core import add_identity_and_normalize, discard_smallest, fuse_heads


def rollout_layer(attention: Tensor, head_fusion: str, discard_ratio: float) -> Tensor:
    """Turns one layer's attention into its row-stochastic rollout factor.

    Args:
        attention: ``(B, heads, N, N)`` post-softmax attention.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
        discard_ratio: fraction in ``[0, 1)`` of the ``N²`` fused entries taken as the smallest and zeroed, per
            sample, entry ``[0, 0]`` excepted (``discard_smallest``).

    Returns:
        ``(B, N, N)`` float32 ``A`` with ``R = A_L ⋯ A_1``.
    """
    fused = discard_smallest(fuse_heads(attention, head_fusion), discard_ratio)
    return add_identity_and_normalize(fused)


@register_method
class Rollout(Method):
    """``"rollout"``: multiplies each layer's factor into ``R = A_l @ R`` as the layer runs (forward only)."""

    name = "rollout"
    summary = "attention rollout (Abnar & Zuidema 2020): heads fused, layers multiplied; forward only"
    constant_map_cause = (
        "every class-to-patch entry was discarded: untrained layer-scale models (deit3, DINOv2 with registers) "
        "keep almost all attention on the diagonal; lower `discard_ratio` (e.g. 0.5 or 0)"
    )

    def __init__(self, context) -> None:
        super().__init__(context)
        self.relevance: Optional[Tensor] = None

    def forward_attention(self, layer: int, attention: Tensor) -> None:
        factor = rollout_layer(attention, self.context.head_fusion, self.context.discard_ratio)
        self.relevance = factor if self.relevance is None else torch.bmm(factor, self.relevance)

    def maps(self) -> Tensor:
        relevance = fed(self.relevance, "attention layers", f"method {self.name!r}")
        return grid_of(self.context, self.context.require_readout().apply(relevance))
