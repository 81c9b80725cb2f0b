"""Shared, pure, batched building blocks of the attention-based methods.

Every function here takes and returns float tensors with a leading batch dimension and never keeps
state, so each can be checked by hand on a small matrix.
"""

from typing import Tuple

import torch
from torch import Tensor

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: Tensor, head_fusion: str) -> Tensor:
    """Fuses the heads of an attention tensor.

    Args:
        attention: ``(B, heads, N, N)`` attention (or attention-times-gradient) tensor.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over the head dimension.

    Returns:
        ``(B, N, N)`` float32 tensor.

    Raises:
        ValueError: if ``head_fusion`` is not one of the allowed names.
    """
    attention = attention.float()
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise ValueError(f"`head_fusion` must be one of {list(HEAD_FUSIONS)}, got {head_fusion!r}")


def discard_smallest(fused: Tensor, discard_ratio: float) -> Tensor:
    """Zeroes, per sample, the ``int(N * N * discard_ratio)`` smallest entries of an N×N matrix.

    Entry ``[0, 0]`` is never zeroed, so the first token always keeps its path to itself.

    Args:
        fused: ``(B, N, N)`` head-fused matrices.
        discard_ratio: fraction in ``[0, 1)`` of the entries to zero.

    Returns:
        A new ``(B, N, N)`` tensor; ``fused`` is left as it is.
    """
    batch, n, _ = fused.shape
    num_discard = int(n * n * discard_ratio)
    if num_discard == 0:
        return fused
    flat = fused.reshape(batch, n * n)
    # Keeping the (N² - 1 - k) largest entries besides [0, 0] is the same as zeroing the k smallest, and a
    # top-k over the kept ~10 % is several times faster than over the discarded ~90 %.
    candidates = flat.clone()
    candidates[:, 0] = float("-inf")
    kept = candidates.topk(n * n - 1 - num_discard, dim=-1, sorted=False).indices
    out = torch.zeros_like(flat).scatter_(1, kept, flat.gather(1, kept))
    out[:, 0] = flat[:, 0]
    return out.reshape(batch, n, n)


def add_identity_and_normalize(fused: Tensor) -> Tensor:
    """Accounts for the residual connection: ``A = (F + I) / 2`` with every row renormalised to sum 1.

    Args:
        fused: ``(B, N, N)`` non-negative matrices.

    Returns:
        ``(B, N, N)`` row-stochastic matrices.
    """
    eye = torch.eye(fused.shape[-1], device=fused.device, dtype=fused.dtype)
    mixed = fused + eye  # the factor 1/2 of (F + I) / 2 cancels in the row normalisation
    return mixed.div_(mixed.sum(dim=-1, keepdim=True))


def tokens_to_grid(token_scores: Tensor, num_prefix_tokens: int, grid_size: Tuple[int, int]) -> Tensor:
    """Drops the prefix-token columns and lays the patch-token scores out on the token grid.

    Args:
        token_scores: ``(B, N)`` scores of every token, prefix tokens first.
        num_prefix_tokens: how many leading tokens are not patches.
        grid_size: ``(grid_h, grid_w)`` with ``grid_h * grid_w == N - num_prefix_tokens``.

    Returns:
        ``(B, grid_h, grid_w)`` tensor.
    """
    patches = token_scores[:, num_prefix_tokens:]
    return patches.reshape(patches.shape[0], grid_size[0], grid_size[1])
