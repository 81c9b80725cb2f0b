"""Localisation scores of explanation maps against object masks.

Every function is pure, batched torch: it works on any device, computes in float32, and never builds an
autograd graph. Maps live on the patch grid, shape ``(B, gh, gw)``; masks live on the pixel grid, shape
``(B, H, W)``, with values in ``[0, 1]`` (bool masks are fine; soft masks count by their weight).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "class_discrimination",
    "energy_in_mask",
    "mask_area_fraction",
    "mask_to_grid",
    "normalized_entropy",
    "pointing_game",
]


def _as_float_3d(name: str, value: Tensor) -> Tensor:
    """Check that ``value`` is a 3-D tensor and return it detached, as float32."""
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape (B, H, W), got {type(value).__name__}.")
    if value.ndim != 3:
        raise ValueError(f"`{name}` must be 3-D (B, H, W), got shape {tuple(value.shape)}.")
    return value.detach().float()


def _as_mask(masks: Tensor) -> Tensor:
    """Check a mask batch: 3-D, values in [0, 1]; return it as float32."""
    masks = _as_float_3d("masks", masks)
    if masks.numel() and (masks.min() < 0 or masks.max() > 1):
        raise ValueError(
            f"`masks` must hold values in [0, 1], got values in [{masks.min().item()}, {masks.max().item()}]."
        )
    return masks


def _as_map(maps: Tensor) -> Tensor:
    """Check a map batch: 3-D, non-negative; return it as float32."""
    maps = _as_float_3d("maps", maps)
    if maps.numel() and maps.min() < 0:
        raise ValueError(f"`maps` must be non-negative, got a minimum of {maps.min().item()}.")
    return maps


def _check_same_batch(maps: Tensor, masks: Tensor) -> None:
    """Check that maps and masks describe the same number of samples."""
    if maps.shape[0] != masks.shape[0]:
        raise ValueError(f"`maps` and `masks` must have the same batch size, got {maps.shape[0]} and {masks.shape[0]}.")


def _cell_mass(maps: Tensor) -> Tensor:
    """Sum of each map over its cells, shape (B,)."""
    return maps.flatten(1).sum(dim=1)


def mask_to_grid(masks: Tensor, grid_size: tuple[int, int]) -> Tensor:
    """Pool pixel masks onto the patch grid.

    Each grid cell receives the mean of the mask over the pixels it covers (area pooling with
    ``F.adaptive_avg_pool2d``). When ``H`` or ``W`` is not a multiple of the grid, cell ``i`` covers pixels
    ``floor(i * H / gh)`` to ``ceil((i + 1) * H / gh)``, so a pixel on a border counts toward both cells.

    Args:
        masks: Masks of shape ``(B, H, W)``, bool or float with values in ``[0, 1]``.
        grid_size: Patch grid ``(gh, gw)``; both positive.

    Returns:
        Float32 tensor of shape ``(B, gh, gw)``: the fraction of each cell covered by the mask.

    Raises:
        TypeError: If ``masks`` is not a tensor.
        ValueError: If ``masks`` is not 3-D or holds values outside ``[0, 1]``, or ``grid_size`` is not two
            positive ints.
    """
    masks = _as_mask(masks)
    if (
        not isinstance(grid_size, (tuple, list))
        or len(grid_size) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid_size)
    ):
        raise ValueError(f"`grid_size` must be a pair of positive ints (gh, gw), got {grid_size!r}.")
    return F.adaptive_avg_pool2d(masks.unsqueeze(1), (grid_size[0], grid_size[1])).squeeze(1)


def energy_in_mask(maps: Tensor, masks: Tensor) -> Tensor:
    """Share of each map's mass that falls inside the mask (energy-based pointing game).

    ``sum(map * coverage) / sum(map)``, with ``coverage = mask_to_grid(masks, map grid)``.

    Args:
        maps: Non-negative maps of shape ``(B, gh, gw)``.
        masks: Masks of shape ``(B, H, W)`` with values in ``[0, 1]``.

    Returns:
        Float32 tensor of shape ``(B,)`` in ``[0, 1]``; a map that sums to 0 scores 0.

    Raises:
        TypeError: If an input is not a tensor.
        ValueError: If an input is not 3-D, the batch sizes differ, a map is negative or a mask leaves
            ``[0, 1]``.
    """
    maps, masks = _as_map(maps), _as_mask(masks)
    _check_same_batch(maps, masks)
    coverage = mask_to_grid(masks, (maps.shape[1], maps.shape[2]))
    total = _cell_mass(maps)
    inside = _cell_mass(maps * coverage)
    return torch.where(total > 0, inside / total.clamp_min(torch.finfo(torch.float32).tiny), 0.0)


def pointing_game(maps: Tensor, masks: Tensor) -> Tensor:
    """Whether each map's peak lands on the object.

    A sample is a hit when the map's arg-max cell is at least half covered by the mask
    (``mask_to_grid(...) >= 0.5`` at that cell). Ties go to the first maximal cell in row-major order. A
    constant map (every cell equal, e.g. all zero) has no peak and scores a miss.

    Args:
        maps: Non-negative maps of shape ``(B, gh, gw)``.
        masks: Masks of shape ``(B, H, W)`` with values in ``[0, 1]``.

    Returns:
        Float32 tensor of shape ``(B,)`` holding 1.0 for a hit and 0.0 for a miss.

    Raises:
        TypeError: If an input is not a tensor.
        ValueError: If an input is not 3-D, the batch sizes differ, a map is negative or a mask leaves
            ``[0, 1]``.
    """
    maps, masks = _as_map(maps), _as_mask(masks)
    _check_same_batch(maps, masks)
    coverage = mask_to_grid(masks, (maps.shape[1], maps.shape[2])).flatten(1)
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1, keepdim=True)
    hit = coverage.gather(1, peak).squeeze(1) >= 0.5
    has_peak = flat.amax(dim=1) > flat.amin(dim=1)
    return (hit & has_peak).float()


def normalized_entropy(maps: Tensor) -> Tensor:
    """Shannon entropy of each map seen as a distribution over its cells, divided by ``log(cells)``.

    1 means the map is uniform (it says nothing about where to look), 0 means all mass sits on one cell.
    A map that sums to 0 carries no information and scores 1.

    Args:
        maps: Non-negative maps of shape ``(B, gh, gw)`` with at least two cells.

    Returns:
        Float32 tensor of shape ``(B,)`` in ``[0, 1]``.

    Raises:
        TypeError: If ``maps`` is not a tensor.
        ValueError: If ``maps`` is not 3-D, is negative, or has fewer than two cells.
    """
    maps = _as_map(maps)
    cells = maps.shape[1] * maps.shape[2]
    if cells < 2:
        raise ValueError(f"`maps` needs at least 2 cells for a normalised entropy, got grid {tuple(maps.shape[1:])}.")
    flat = maps.flatten(1)
    total = flat.sum(dim=1, keepdim=True)
    probs = flat / total.clamp_min(torch.finfo(torch.float32).tiny)
    entropy = -torch.xlogy(probs, probs).sum(dim=1) / math.log(cells)
    return torch.where(total.squeeze(1) > 0, entropy.clamp(0.0, 1.0), 1.0)


def mask_area_fraction(masks: Tensor) -> Tensor:
    """Fraction of each image's pixels that lie inside the mask.

    Args:
        masks: Masks of shape ``(B, H, W)`` with values in ``[0, 1]``.

    Returns:
        Float32 tensor of shape ``(B,)`` in ``[0, 1]``.

    Raises:
        TypeError: If ``masks`` is not a tensor.
        ValueError: If ``masks`` is not 3-D or holds values outside ``[0, 1]``.
    """
    return _as_mask(masks).mean(dim=(1, 2))


def class_discrimination(maps: Tensor, own_masks: Tensor, other_masks: Tensor) -> Tensor:
    """Whether each map, explaining one class, puts more mass on that class's object than on the other's.

    Per sample ``sum(map * own coverage)`` is compared with ``sum(map * other coverage)`` (coverages from
    `mask_to_grid`): 1.0 when the own object gets more, 0.0 when it gets less, 0.5 on a tie (e.g. an
    all-zero map). A class-agnostic map (the same for both classes of a scene) scores 1 for one class and
    0 for the other unless the objects tie: 0.5 on average. The batch mean is the share of
    ``(sample, class)`` pairs told apart.

    Args:
        maps: Non-negative maps of shape ``(B, gh, gw)``, each explaining one class of its scene.
        own_masks: Masks ``(B, H, W)`` of the explained class's object, values in ``[0, 1]``.
        other_masks: Masks ``(B, H, W)`` of the other present class's object (the union of them, when several).

    Returns:
        Float32 tensor of shape ``(B,)`` holding 1.0, 0.5 or 0.0.

    Raises:
        TypeError: If an input is not a tensor.
        ValueError: If an input is not 3-D, the batch sizes or mask shapes differ, a map is negative or a mask
            leaves ``[0, 1]``.
    """
    maps, own_masks, other_masks = _as_map(maps), _as_mask(own_masks), _as_mask(other_masks)
    _check_same_batch(maps, own_masks)
    if own_masks.shape != other_masks.shape:
        raise ValueError(
            f"`own_masks` and `other_masks` must have the same shape, got {tuple(own_masks.shape)} and "
            f"{tuple(other_masks.shape)}."
        )
    grid = (maps.shape[1], maps.shape[2])
    own = _cell_mass(maps * mask_to_grid(own_masks, grid))
    other = _cell_mass(maps * mask_to_grid(other_masks, grid))
    return (own > other).float() + 0.5 * (own == other).float()
