"""Panels, filmstrips and grids: pictures laid side by side with their captions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lightning_rollout.rendering.canvas import (
    GAP,
    check_lines,
    check_positive_int,
    check_rgb,
    filled,
    upscale,
    upscale_factor,
)
from lightning_rollout.rendering.text import render_text

__all__ = ["render_filmstrip", "render_grid", "render_panel"]


def render_panel(image: np.ndarray, overlay: np.ndarray, lines: Sequence[str], min_size: int = 128) -> np.ndarray:
    """One sample: the input and its overlay side by side, with a caption below.

    Both pictures are upscaled by the same integer factor (nearest neighbour) so that the shorter side is at
    least ``min_size`` pixels, and separated by a `GAP`-pixel gap.

    Args:
        image: uint8 input image of shape ``(H, W, 3)``.
        overlay: uint8 overlay of the same shape, e.g. from `blend`.
        lines: Caption lines, e.g. ``["true: cat", "pred: dog (0.83)"]``.
        min_size: Smallest shorter side of the upscaled pictures.

    Returns:
        uint8 array of shape ``(f * H + caption height, 2 * f * W + GAP, 3)`` with ``f`` the upscale factor.

    Raises:
        TypeError: If an image is not a numpy array or ``lines`` is not a sequence of str.
        ValueError: If an image is not uint8 ``(H, W, 3)``, the shapes differ, or ``min_size`` is not a
            positive int.
    """
    check_rgb("image", image)
    check_rgb("overlay", overlay)
    if overlay.shape != image.shape:
        raise ValueError(f"`overlay` must have the shape of `image` {image.shape}, got {overlay.shape}.")
    check_lines("lines", lines)
    check_positive_int("min_size", min_size)
    factor = upscale_factor(image, min_size)
    height, width = image.shape[0] * factor, image.shape[1] * factor
    pictures = filled(height, 2 * width + GAP)
    pictures[:, :width] = upscale(image, factor)
    pictures[:, width + GAP :] = upscale(overlay, factor)
    return np.concatenate([pictures, render_text(lines, pictures.shape[1])], axis=0)


def render_filmstrip(frames: Sequence[np.ndarray], labels: Sequence[str], min_size: int = 96) -> np.ndarray:
    """One row of frames of the same sample (e.g. at successive epochs), each under its label.

    Frames are upscaled by one integer factor (nearest neighbour) so that their shorter side is at least
    ``min_size`` pixels, laid out left to right with a `GAP`-pixel gap.

    Args:
        frames: uint8 images of one shape ``(H, W, 3)``, oldest first.
        labels: One label per frame, e.g. ``"epoch 3"``, drawn in a strip above it.
        min_size: Smallest shorter side of the upscaled frames.

    Returns:
        uint8 array of shape ``(header + f * H, n * f * W + (n - 1) * GAP, 3)`` for ``n`` frames.

    Raises:
        TypeError: If a frame is not a numpy array or ``labels`` is not a sequence of str.
        ValueError: If there are no frames, the numbers of frames and labels differ, the frames are not uint8
            ``(H, W, 3)`` of one shape, or ``min_size`` is not a positive int.
    """
    if len(frames) == 0:
        raise ValueError("`frames` must hold at least one image, got none.")
    check_lines("labels", labels)
    if len(labels) != len(frames):
        raise ValueError(f"`labels` must hold one label per frame ({len(frames)}), got {len(labels)}.")
    for index, frame in enumerate(frames):
        check_rgb(f"frames[{index}]", frame)
        if frame.shape != frames[0].shape:
            raise ValueError(f"`frames` must share one shape {frames[0].shape}, frames[{index}] has {frame.shape}.")
    check_positive_int("min_size", min_size)
    factor = upscale_factor(frames[0], min_size)
    width = frames[0].shape[1] * factor
    columns = [
        np.concatenate([render_text([label], width), upscale(frame, factor)], axis=0)
        for frame, label in zip(frames, labels)
    ]
    return render_grid(columns, ncols=len(columns))


def render_grid(panels: Sequence[np.ndarray], ncols: int) -> np.ndarray:
    """Tile panels row by row into one image.

    Cells are as large as the largest panel; a smaller panel sits in the top-left corner of its cell and
    the rest of the cell, the `GAP`-pixel gaps and the empty cells of the last row are filled with
    `BACKGROUND`. With fewer panels than ``ncols`` the grid has one column per panel.

    Args:
        panels: uint8 images of shape ``(H, W, 3)``.
        ncols: Maximum number of panels per row.

    Returns:
        uint8 array of shape ``(rows * cell_h + (rows - 1) * GAP, cols * cell_w + (cols - 1) * GAP, 3)``.

    Raises:
        TypeError: If a panel is not a numpy array.
        ValueError: If there are no panels, a panel is not uint8 ``(H, W, 3)``, or ``ncols`` is not a positive
            int.
    """
    if len(panels) == 0:
        raise ValueError("`panels` must hold at least one image, got none.")
    for index, panel in enumerate(panels):
        check_rgb(f"panels[{index}]", panel)
    check_positive_int("ncols", ncols)
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    cell_height = max(panel.shape[0] for panel in panels)
    cell_width = max(panel.shape[1] for panel in panels)
    grid = filled(nrows * cell_height + (nrows - 1) * GAP, ncols * cell_width + (ncols - 1) * GAP)
    for index, panel in enumerate(panels):
        row, col = divmod(index, ncols)
        top, left = row * (cell_height + GAP), col * (cell_width + GAP)
        grid[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
    return grid
