"""The pictures of video maps: display clips, a strip of frames with their overlays per sample, overlay frames.

A video model's map ``(T', h, w)`` has one slice per tubelet of ``tubelet`` input frames. The strip shows one
frame per slice (the first frame of its tubelet; at most ``max_frames`` slices, evenly spread) above that
slice's overlay, all of a clip's overlays on one colour scale (a slice the model looks at less shows less
colour). What every logger shows is such an image; `overlay_frames` gives every input frame with its
overlay, for loggers that take a video.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from lightning_rollout.rendering.canvas import GAP, filled
from lightning_rollout.rendering.figures import constant_maps, overlays
from lightning_rollout.rendering.images import fit_display_images, to_display_images
from lightning_rollout.rendering.layout import render_filmstrip, render_grid
from lightning_rollout.rendering.text import render_text

__all__ = [
    "fit_display_clips",
    "mean_frames",
    "overlay_frames",
    "render_clip_strips",
    "strip_slices",
    "to_display_clips",
]


def to_display_clips(clips: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """``(B, T, C, H, W)`` model input → ``(B, T, H, W, 3)`` uint8 frames (`to_display_images` per frame).

    Raises:
        ValueError: If ``clips`` is not 5-D, or as `to_display_images`.
    """
    if not isinstance(clips, Tensor) or clips.dim() != 5:
        raise ValueError(f"`clips` must be a tensor (B, T, C, H, W), got {getattr(clips, 'shape', clips)!r}.")
    frames = to_display_images(clips.flatten(0, 1), mean, std)
    return frames.reshape(clips.shape[0], clips.shape[1], *frames.shape[1:])


def fit_display_clips(clips: np.ndarray, max_size: int) -> np.ndarray:
    """Downscales ``(B, T, H, W, 3)`` frames as `fit_display_images` does images."""
    frames = fit_display_images(np.ascontiguousarray(clips.reshape(-1, *clips.shape[2:])), max_size)
    return frames.reshape(*clips.shape[:2], *frames.shape[1:])


def mean_frames(clips: np.ndarray) -> np.ndarray:
    """``(B, T, H, W, 3)`` → ``(B, H, W, 3)``: each clip's frames averaged (a moving object leaves its trail)."""
    return np.ascontiguousarray(np.rint(clips.astype(np.float64).mean(axis=1)).astype(np.uint8))


def strip_slices(temporal_size: int, max_frames: int) -> list[int]:
    """The temporal slices a strip shows: all, or ``max_frames`` of them evenly spread (first and last kept)."""
    if temporal_size <= max_frames:
        return list(range(temporal_size))
    return sorted({round(i * (temporal_size - 1) / (max_frames - 1)) for i in range(max_frames)})


def render_clip_strips(
    clips: np.ndarray,
    maps: Tensor,
    tubelet: int,
    sample_captions: list[list[str]],
    colormap: str,
    alpha: float,
    max_frames: int = 8,
) -> np.ndarray:
    """One picture: per sample, a row of frames (one per shown temporal slice), the row of their overlays
    below, then the caption.

    Args:
        clips: ``(B, T, H, W, 3)`` uint8 display frames.
        maps: ``(B, T', h, w)`` video maps.
        tubelet: input frames per temporal slice; slice ``s`` is shown on frame ``s * tubelet``.
        sample_captions: caption lines per sample.
        colormap: a matplotlib colour map name, as the overlays of images.
        alpha: overlay opacity in ``[0, 1]``.
        max_frames: the most slices a strip shows.
    """
    panels = []
    for sample, lines in enumerate(sample_captions):
        slices = strip_slices(maps.shape[1], max_frames)
        first = [min(s * tubelet, clips.shape[1] - 1) for s in slices]
        frames = clips[sample, first]
        blended = overlays(frames, maps[sample, slices], colormap, alpha, shared_scale=True)
        spans = [f"frames {t}-{t + tubelet - 1}" if tubelet > 1 else f"frame {t}" for t in first]
        top = render_filmstrip(list(frames), [f"frame {t}" for t in first])
        bottom = render_filmstrip(list(blended), spans)
        flat = bool(constant_maps(maps[sample].reshape(1, -1, maps.shape[-1]))[0])
        text = render_text(list(lines) + (["constant map"] if flat else []), top.shape[1])
        panel = filled(top.shape[0] + GAP + bottom.shape[0] + text.shape[0], top.shape[1])
        panel[: top.shape[0]] = top
        panel[top.shape[0] + GAP : top.shape[0] + GAP + bottom.shape[0]] = bottom
        panel[top.shape[0] + GAP + bottom.shape[0] :] = text
        panels.append(panel)
    return render_grid(panels, ncols=1)


def overlay_frames(clip: np.ndarray, maps: Tensor, tubelet: int, colormap: str, alpha: float) -> np.ndarray:
    """Every frame of one clip ``(T, H, W, 3)`` with its slice's overlay (one colour scale): ``(T, H, W, 3)``."""
    index = (torch.arange(clip.shape[0]) // tubelet).clamp(max=maps.shape[0] - 1)
    return overlays(clip, maps.cpu()[index], colormap, alpha, shared_scale=True)
