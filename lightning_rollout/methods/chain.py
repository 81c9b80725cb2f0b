"""The backward fold shared by the gradient-weighted attention methods (gradient rollout, Chefer).

During the shared backward each layer's factor arrives last layer first. It is folded into the read-out
row ``u @ F_L ⋯ F_l`` (a ``(B, N)`` vector: memory does not grow with depth) or, for a read-out that is
not a fixed row (pooling heads), into the product ``F_L ⋯ F_l``, read out at the end.
"""

from typing import Optional

import torch
from torch import Tensor

from lightning_rollout.methods.base import Method, fed, grid_of


class BackwardChain(Method):
    """Base of the methods whose per-layer factor ``(B, N, N)`` needs the attention's gradient.

    Subclasses set ``name`` and implement `layer_factor`.
    """

    needs_grad = True
    shared_backward = True

    def __init__(self, context) -> None:
        super().__init__(context)
        self.chain: Optional[Tensor] = None

    def layer_factor(self, attention: Tensor, gradient: Tensor) -> Tensor:
        """One layer's ``(B, N, N)`` float32 factor from its ``(B, heads, N, N)`` attention and gradient."""
        raise NotImplementedError

    def backward_attention(self, layer: int, attention: Tensor, gradient: Tensor) -> None:
        factor = self.layer_factor(attention, gradient)
        readout = self.context.require_readout()
        if readout.is_linear:
            row = readout.vector(factor.shape[0], factor.device) if self.chain is None else self.chain
            self.chain = torch.bmm(row.unsqueeze(1), factor).squeeze(1)
        else:
            self.chain = factor if self.chain is None else torch.bmm(self.chain, factor)

    def maps(self) -> Tensor:
        readout = self.context.require_readout()
        chain = fed(self.chain, "attention gradients", f"method {self.name!r}")
        return grid_of(self.context, chain if readout.is_linear else readout.apply(chain))
