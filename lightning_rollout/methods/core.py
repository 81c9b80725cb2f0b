"""Shared, pure, batched building blocks of the attention-based methods.

Every function here takes and returns float tensors with a leading batch dimension and never keeps
state, so each can be checked by hand on a small matrix.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
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
    """Zeroes, per sample, the ``k = int(N * N * discard_ratio)`` smallest entries of an N×N matrix, but
    never entry ``[0, 0]``.

    This is the count rule of the rollout recipe in jacobgil/vit-explain: the ``k`` smallest of all ``N²``
    entries are picked, entry ``[0, 0]`` is dropped from that set when it is in it, and the rest is zeroed.
    So ``k - 1`` entries are zeroed when ``[0, 0]`` is among the ``k`` smallest and ``k`` otherwise, and
    the first token always keeps its path to itself. Unlike that recipe, every sample of the batch is
    discarded, each by its own order. Ties are broken by position: of equal entries, the one earlier in
    row-major order counts as the smaller, so the result does not depend on the device or the batch.

    Args:
        fused: ``(B, N, N)`` head-fused matrices.
        discard_ratio: fraction in ``[0, 1)`` of the ``N²`` entries picked as the smallest.

    Returns:
        A new ``(B, N, N)`` tensor, or ``fused`` itself when ``k == 0``; ``fused`` is never modified.
    """
    batch, n, _ = fused.shape
    num_discard = int(n * n * discard_ratio)
    if num_discard == 0:
        return fused
    flat = fused.reshape(batch, n * n)
    # The k-th smallest value, as the least of the N² - k + 1 largest (at the default ratio 0.9 a top-k over
    # ~10 % of the entries, several times faster than one over the ~90 % smallest). Every entry below it is
    # among the k smallest, and of the entries equal to it the earliest fill the places left.
    threshold = flat.topk(n * n - num_discard + 1, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    below = flat < threshold
    tied = flat == threshold
    places_left = num_discard - below.sum(dim=-1, keepdim=True, dtype=torch.int32)
    smallest = below | (tied & (tied.cumsum(dim=-1, dtype=torch.int32) <= places_left))
    smallest[:, 0] = False
    return flat.masked_fill(smallest, 0.0).reshape(batch, n, n)


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


def tokens_to_grid(token_scores: Tensor, num_prefix_tokens: int, grid_size: Sequence[int]) -> Tensor:
    """Drops the prefix-token columns and lays the patch-token scores out on the token grid.

    Args:
        token_scores: ``(B, N)`` scores of every token, prefix tokens first.
        num_prefix_tokens: how many leading tokens are not patches.
        grid_size: ``(grid_h, grid_w)``, or ``(T', grid_h, grid_w)`` for video tokens ordered time first
            (`TokenGeometry`); the product is ``N - num_prefix_tokens``.

    Returns:
        ``(B, *grid_size)`` tensor.
    """
    patches = token_scores[:, num_prefix_tokens:]
    return patches.reshape(patches.shape[0], *grid_size)


def upsample_maps(maps: Tensor, size: Sequence[int], tubelet: int = 1) -> Tensor:
    """Token-grid maps at input resolution: bilinear in space, nearest in time.

    Args:
        maps: ``(B, h, w)`` image maps, or ``(B, T', h, w)`` video maps.
        size: ``(H, W)``, or ``(T, H, W)`` for video maps.
        tubelet: input frames per temporal slice (video). Frame ``t`` takes slice ``t // tubelet`` (the
            tubelet it lies in); trailing frames no whole tubelet covers (``T`` not a multiple) take the last.

    Returns:
        ``(B, H, W)`` or ``(B, T, H, W)`` float32 maps (bilinear, ``align_corners=False``: each cell's value
        sits at its centre, as the patch it scores).

    Raises:
        ValueError: when ``size`` does not match the maps' form.
    """
    if maps.dim() - 1 != len(size) or maps.dim() not in (3, 4):
        raise ValueError(
            f"`size` must be (H, W) for (B, h, w) maps or (T, H, W) for (B, T', h, w) maps, got {tuple(size)} for "
            f"maps of shape {tuple(maps.shape)}"
        )
    maps = maps.float()
    if maps.dim() == 3:
        return F.interpolate(maps[:, None], size=tuple(size[-2:]), mode="bilinear", align_corners=False)[:, 0]
    frames = (torch.arange(size[0], device=maps.device) // tubelet).clamp(max=maps.shape[1] - 1)
    spatial = F.interpolate(maps, size=tuple(size[-2:]), mode="bilinear", align_corners=False)
    return spatial[:, frames]
