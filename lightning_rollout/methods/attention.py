"""Raw attention: the last attention layer's attention from the token(s) the head reads to the patches.

What DINO's ``visualize_attention.py`` shows for self-supervised ViTs (one map per head), here read with
the same read-out as every method (`Readout`: the class-token row,
the class and distillation rows of a distilled DeiT, the patch rows a pooling head averages without their
self-attention), so its maps line up with rollout's. Forward only, no gradient, class-agnostic.
"""

from typing import Optional

import torch
from torch import Tensor

from lightning_rollout.methods.base import Method, fed, grid_of, register_method
from lightning_rollout.methods.core import fuse_heads
from lightning_rollout.models.readout import Readout


def attention_per_head_scores(attention: Tensor, readout: Readout) -> Tensor:
    """Reads each head's attention out: ``(B, heads, N, N)`` → ``(B, heads, N)`` float32 token scores."""
    return torch.stack([readout.apply(attention[:, head]) for head in range(attention.shape[1])], dim=1)


def attention_scores(attention: Tensor, readout: Readout, head_fusion: str) -> Tensor:
    """Fuses the heads (``"mean"``, ``"max"``, ``"min"``), then reads out: ``(B, heads, N, N)`` → ``(B, N)``.

    With ``"mean"`` (and any read-out, which is linear) this is the mean of
    `attention_per_head_scores` over heads.
    """
    return readout.apply(fuse_heads(attention, head_fusion))


@register_method
class Attention(Method):
    """``"attention"``: keeps the last attention layer's attention, reads it out after the forward."""

    name = "attention"
    summary = "the last layer's attention from the token(s) the head reads (DINO's map); forward only"
    constant_map_cause = (
        "the last attention layer spreads the read-out token's attention evenly over the patches (or puts it "
        "all on prefix tokens)"
    )

    def __init__(self, context) -> None:
        super().__init__(context)
        self.last: Optional[Tensor] = None

    def forward_attention(self, layer: int, attention: Tensor) -> None:
        self.last = attention

    def maps(self) -> Tensor:
        last = fed(self.last, "last attention layer", f"method {self.name!r}")
        return grid_of(self.context, attention_scores(last, self.context.require_readout(), self.context.head_fusion))

    def per_head_maps(self) -> Tensor:
        """``(B, heads, grid_h, grid_w)`` float32 (video: ``(B, heads, T', grid_h, grid_w)``): each head's map,
        before fusion."""
        last = fed(self.last, "last attention layer", f"method {self.name!r}")
        scores = attention_per_head_scores(last, self.context.require_readout())
        batch, heads, num_tokens = scores.shape
        return grid_of(self.context, scores.reshape(batch * heads, num_tokens)).reshape(
            batch, heads, *self.context.geometry.map_shape
        )
