"""Localisation of video maps frame by frame: each input frame's map against that frame's object mask.

A video model's map ``(B, T', h, w)`` has one slice per tubelet of ``tubelet`` input frames; input frame ``t``
is scored with slice ``t // tubelet`` (trailing frames no whole tubelet covers take the last slice), each
frame's map on its own (its own mass, its own peak) against the frame's mask. A map that ignores time (the
same slice for every frame) cannot follow a moving object, so it scores at most what a fixed region does.
"""

from typing import Dict

import torch
from torch import Tensor

from lightning_rollout.metrics.localisation import energy_in_mask, mask_area_fraction, pointing_game

__all__ = ["frame_maps", "localisation_over_frames"]


def frame_maps(maps: Tensor, num_frames: int, tubelet: int) -> Tensor:
    """Each input frame's map: ``(B, T', h, w)`` → ``(B, T, h, w)``, frame ``t`` taking slice ``t // tubelet``.

    Raises:
        ValueError: if ``maps`` is not 4-D or ``num_frames``/``tubelet`` are not positive.
    """
    if not isinstance(maps, Tensor) or maps.dim() != 4:
        raise ValueError(f"`maps` must be video maps (B, T', h, w), got {getattr(maps, 'shape', maps)!r}")
    if num_frames < 1 or tubelet < 1:
        raise ValueError(f"`num_frames` and `tubelet` must be >= 1, got {num_frames} and {tubelet}")
    index = (torch.arange(num_frames, device=maps.device) // tubelet).clamp(max=maps.shape[1] - 1)
    return maps[:, index]


def localisation_over_frames(maps: Tensor, masks: Tensor, tubelet: int) -> Dict[str, Tensor]:
    """Energy in the mask, pointing game and mask area per frame.

    Args:
        maps: non-negative video maps ``(B, T', h, w)``.
        masks: per-frame object masks ``(B, T, H, W)`` in ``[0, 1]``.
        tubelet: input frames per temporal slice of ``maps``.

    Returns:
        ``{"energy", "pointing_game", "mask_area"}``, each ``(B, T)`` float32
        (`energy_in_mask`, `pointing_game`,
        `mask_area_fraction` of every frame).

    Raises:
        ValueError: if ``masks`` is not ``(B, T, H, W)`` of the maps' batch, or as the per-frame metrics.
    """
    if not isinstance(masks, Tensor) or masks.dim() != 4 or masks.shape[0] != maps.shape[0]:
        raise ValueError(
            f"`masks` must be per-frame masks (B, T, H, W) of the maps' {maps.shape[0]} samples, got "
            f"{getattr(masks, 'shape', masks)!r}"
        )
    batch, frames = masks.shape[:2]
    per_frame = frame_maps(maps, frames, tubelet).flatten(0, 1)
    flat_masks = masks.flatten(0, 1)
    return {
        "energy": energy_in_mask(per_frame, flat_masks).view(batch, frames),
        "pointing_game": pointing_game(per_frame, flat_masks).view(batch, frames),
        "mask_area": mask_area_fraction(flat_masks).view(batch, frames),
    }
