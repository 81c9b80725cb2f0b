"""Display images and heat maps: un-normalised inputs, colour-mapped maps and their overlays.

Tensors come in, RGB ``uint8`` arrays of shape ``(B, H, W, 3)`` go out, always C-contiguous. Colour maps
come from ``matplotlib.colormaps``: no pyplot, no Figure, no OpenCV.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_rollout.rendering.canvas import check_positive_int, check_size

__all__ = ["blend", "colorize_maps", "fit_display_images", "to_display_images"]


def _channel_stats(name: str, values: Sequence[float], channels: int) -> Tensor:
    """Per-channel statistics as a (C or 1, 1, 1) float32 tensor ready to broadcast over (B, C, H, W)."""
    stats = torch.as_tensor(values, dtype=torch.float32)
    if stats.ndim != 1 or len(stats) not in (1, channels):
        raise ValueError(f"`{name}` must hold 1 or {channels} values (one per channel), got {tuple(values)!r}.")
    return stats.view(-1, 1, 1)


def to_display_images(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Undo input normalisation and convert a batch to displayable RGB images.

    Computes ``x * std + mean`` per channel, clips to ``[0, 1]`` and scales to ``0..255``. A ``None`` mean
    adds nothing and a ``None`` std scales by one, so pass both as ``None`` for images already in
    ``[0, 1]``. Grayscale inputs are repeated to RGB.

    Args:
        images: Float tensor of shape ``(B, C, H, W)`` with ``C`` equal to 1 or 3, on any device.
        mean: Per-channel mean used to normalise the inputs (1 or ``C`` values), or ``None``.
        std: Per-channel standard deviation used to normalise the inputs (1 or ``C`` values), or ``None``.

    Returns:
        uint8 array of shape ``(B, H, W, 3)``.

    Raises:
        TypeError: If ``images`` is not a tensor.
        ValueError: If ``images`` is not 4-D, ``C`` is neither 1 nor 3, or ``mean``/``std`` do not hold 1 or
            ``C`` values.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"`images` must be a torch.Tensor of shape (B, C, H, W), got {type(images).__name__}.")
    if images.ndim != 4:
        raise ValueError(f"`images` must be 4-D (B, C, H, W), got shape {tuple(images.shape)}.")
    channels = images.shape[1]
    if channels not in (1, 3):
        raise ValueError(f"`images` must have 1 or 3 channels, got {channels} (shape {tuple(images.shape)}).")
    pixels = images.detach().to("cpu", torch.float32)
    if std is not None:
        pixels = pixels * _channel_stats("std", std, channels)
    if mean is not None:
        pixels = pixels + _channel_stats("mean", mean, channels)
    pixels = pixels.clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    pixels = pixels.expand(-1, 3, -1, -1)
    return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).numpy())


def fit_display_images(images: np.ndarray, max_size: int) -> np.ndarray:
    """Downscale ``(B, H, W, 3)`` uint8 images whose longer side exceeds ``max_size`` (area averaging, aspect
    ratio kept); smaller images are returned as they are.

    Raises:
        ValueError: If ``images`` is not uint8 ``(B, H, W, 3)`` or ``max_size`` is not a positive int.
    """
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"`images` must be uint8 of shape (B, H, W, 3), got {getattr(images, 'shape', images)!r}.")
    check_positive_int("max_size", max_size)
    height, width = images.shape[1:3]
    scale = max_size / max(height, width)
    if scale >= 1:
        return images
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    resized = F.interpolate(pixels, size=size, mode="area").round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(resized.permute(0, 2, 3, 1).numpy())


def colorize_maps(maps: Tensor, size: tuple[int, int], colormap: str, shared_scale: bool = False) -> np.ndarray:
    """Scale each map to ``[0, 1]``, upsample it to the image size and colour it.

    Each map is min-max scaled on its own (a constant map becomes all zeros), resized bilinearly
    (``align_corners=False``) and passed through the matplotlib colour map; alpha is dropped.

    Args:
        maps: Tensor of shape ``(B, gh, gw)``, on any device.
        size: Output ``(H, W)``.
        colormap: A name in ``matplotlib.colormaps``, e.g. ``"jet"`` or ``"inferno"``.
        shared_scale: one min-max over all ``B`` maps instead (the frames of one clip: a frame the model
            looks at less shows less colour).

    Returns:
        float32 array of shape ``(B, H, W, 3)`` with values in ``[0, 1]``.

    Raises:
        TypeError: If ``maps`` is not a tensor.
        ValueError: If ``maps`` is not 3-D, ``size`` is not two positive ints, or ``colormap`` is unknown.
    """
    if not isinstance(maps, Tensor):
        raise TypeError(f"`maps` must be a torch.Tensor of shape (B, gh, gw), got {type(maps).__name__}.")
    if maps.ndim != 3:
        raise ValueError(f"`maps` must be 3-D (B, gh, gw), got shape {tuple(maps.shape)}.")
    check_size("size", size)
    if not isinstance(colormap, str) or colormap not in matplotlib.colormaps:
        raise ValueError(
            f"`colormap` must be a name in matplotlib.colormaps (e.g. 'jet', 'inferno', 'viridis'), got {colormap!r}."
        )
    flat = maps.detach().to("cpu", torch.float32).flatten(1)
    pooled = flat.flatten()[None] if shared_scale else flat
    low = pooled.amin(dim=1, keepdim=True)
    span = pooled.amax(dim=1, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    grid = scaled.view(-1, 1, maps.shape[1], maps.shape[2])
    resized = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    rgba = matplotlib.colormaps[colormap](resized.squeeze(1).clamp(0.0, 1.0).numpy())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.float32)


def blend(images: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """Lay a colour map over images: ``round((1 - alpha) * image + alpha * heat * 255)``.

    Args:
        images: uint8 array of shape ``(..., H, W, 3)``.
        heat: Float array of the same shape with values in ``[0, 1]``, e.g. from `colorize_maps`.
        alpha: Weight of the heat map, in ``[0, 1]``.

    Returns:
        uint8 array of the same shape as ``images``.

    Raises:
        TypeError: If ``images`` or ``heat`` is not a numpy array.
        ValueError: If ``images`` is not uint8 RGB, the shapes differ, or ``alpha`` is outside ``[0, 1]``.
    """
    for name, array in (("images", images), ("heat", heat)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"`{name}` must be a numpy array, got {type(array).__name__}.")
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 3:
        raise ValueError(f"`images` must be uint8 of shape (..., H, W, 3), got {images.dtype} {images.shape}.")
    if heat.shape != images.shape:
        raise ValueError(f"`heat` must have the shape of `images` {images.shape}, got {heat.shape}.")
    if not isinstance(alpha, numbers.Real) or isinstance(alpha, bool) or not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")
    mixed = (1.0 - alpha) * images.astype(np.float64) + alpha * 255.0 * heat.astype(np.float64)
    return np.ascontiguousarray(np.rint(mixed).clip(0, 255).astype(np.uint8))
