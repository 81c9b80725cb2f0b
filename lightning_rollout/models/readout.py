"""What a model's head reads of its last tokens, as the read-out of relevance maps: token rows and pools."""

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from lightning_rollout.core.geometry import TokenGeometry

__all__ = ["Readout", "patch_mean_readout", "token_readout"]


@dataclass(frozen=True)
class Readout:
    """Which rows of the relevance matrix ``R`` the model's head reads, and with what weight.

    ``R`` is ``(B, N, N)``: row ``i`` says how much output token ``i`` draws from each input token. The
    read-out is ``rows @ R + pooled @ R̊``, where ``R̊`` is ``R`` with its diagonal zeroed:

    - ``rows`` weights rows read as they are: the class token (``e_0``), or the class and distillation
      tokens of a distilled DeiT (``(e_0 + e_1) / 2``);
    - ``pooled`` weights rows of tokens a pooling head averages (average pooling, attention pooling).

    Why the diagonal goes for pooled rows: every row of a rollout/relevance product keeps a large share on
    its own token (the residual path; the identity of ``R = I + …``). A head that averages many tokens
    sums those self-shares into a near-uniform floor that swamps what flows *between* tokens, which is
    what the maps are after. Removing the self-relevance before pooling is the step Chefer et al.
    (ICCV 2021) take for tokens whose self-attention is read together (``R − I``).

    Attributes:
        rows: ``(N,)`` weights, or ``None``.
        pooled: ``(N,)`` or ``(B, N)`` weights, or ``None``. ``rows`` and ``pooled`` together sum to 1.
    """

    rows: Optional[Tensor] = None
    pooled: Optional[Tensor] = None

    @property
    def is_linear(self) -> bool:
        """Whether the read-out is a fixed row vector ``u @ R`` (which can be folded through a product)."""
        return self.pooled is None

    def vector(self, batch_size: int, device: torch.device) -> Tensor:
        """``(B, N)`` float32 row vectors ``u`` of a linear read-out.

        Raises:
            ValueError: if the read-out has no ``rows`` (it pools only).
        """
        if self.rows is None:
            raise ValueError("the read-out has no `rows` to give as row vectors (it pools only: `pooled`)")
        return self.rows.to(device, torch.float32).expand(batch_size, -1)

    def apply(self, relevance: Tensor) -> Tensor:
        """Reads ``(B, N, N)`` relevance out into ``(B, N)`` float32 token scores."""
        relevance = relevance.float()
        batch = relevance.shape[0]
        scores = torch.zeros(relevance.shape[:2], device=relevance.device)
        if self.rows is not None:
            scores = scores + torch.bmm(self.vector(batch, relevance.device).unsqueeze(1), relevance).squeeze(1)
        if self.pooled is not None:
            weights = self.pooled.to(relevance.device, torch.float32).expand(batch, -1)
            off_diagonal = relevance - torch.diag_embed(relevance.diagonal(dim1=-2, dim2=-1))
            scores = scores + torch.bmm(weights.unsqueeze(1), off_diagonal).squeeze(1)
        return scores


def token_readout(num_tokens: int, tokens: Sequence[int] = (0,)) -> Readout:
    """The head reads ``tokens`` (default: the class token), averaged."""
    rows = torch.zeros(num_tokens)
    rows[list(tokens)] = 1.0 / len(tokens)
    return Readout(rows=rows)


def patch_mean_readout(geometry: TokenGeometry, class_weight: float = 0.0, include_prefix: bool = False) -> Readout:
    """The head averages the patch tokens; with ``class_weight`` > 0 it also reads the class token.

    ``include_prefix``: the average runs over every token, prefix tokens included.
    """
    pooled = torch.zeros(geometry.num_tokens)
    first = 0 if include_prefix else geometry.num_prefix_tokens
    pooled[first:] = (1.0 - class_weight) / (geometry.num_tokens - first)
    rows = None
    if class_weight:
        rows = torch.zeros(geometry.num_tokens)
        rows[0] = class_weight
    return Readout(rows=rows, pooled=pooled)
