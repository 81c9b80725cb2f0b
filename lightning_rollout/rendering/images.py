"""Turn input batches and explanation maps into pictures a human can read.

Tensors come in, RGB ``uint8`` arrays of shape ``(H, W, 3)`` (or ``(B, H, W, 3)``) go out, always
C-contiguous. Colour maps come from ``matplotlib.colormaps`` and text is rasterised directly with FreeType
(``matplotlib.ft2font``) on matplotlib's bundled DejaVu Sans: no pyplot, no Figure, no OpenCV, so a panel
takes about a millisecond.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font
from torch import Tensor

__all__ = [
    "blend",
    "colorize_maps",
    "render_filmstrip",
    "render_grid",
    "render_panel",
    "render_text",
    "to_display_images",
]

BACKGROUND = (24, 24, 24)
"""RGB colour of caption strips, gaps and padding."""
TEXT_COLOR = (235, 235, 235)
"""RGB colour of caption text."""
GAP = 4
"""Pixels between the pictures of a panel, filmstrip or grid."""

_TEXT_MARGIN = 4
_FONT_SIZE_PER_LINE = 0.65
_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


def _check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is a positive int (bools excluded)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def _check_size(name: str, value: object) -> None:
    """Raise unless ``value`` is a pair of positive ints."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    ):
        raise ValueError(f"`{name}` must be a pair of positive ints (H, W), got {value!r}.")


def _check_rgb(name: str, image: object) -> None:
    """Raise unless ``image`` is a non-empty uint8 numpy array of shape (H, W, 3)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array of shape (H, W, 3), got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape (H, W, 3) with H, W > 0, got {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8, got {image.dtype}.")


def _check_lines(name: str, lines: object) -> None:
    """Raise unless ``lines`` is a sequence of strings (a bare string is refused)."""
    if isinstance(lines, str) or not isinstance(lines, Sequence):
        raise TypeError(f"`{name}` must be a sequence of str (one per line), got {type(lines).__name__}.")
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"`{name}` must hold only str, got an item of type {type(line).__name__}.")


def _channel_stats(name: str, values: Sequence[float], channels: int) -> Tensor:
    """Per-channel statistics as a (C or 1, 1, 1) float32 tensor ready to broadcast over (B, C, H, W)."""
    stats = torch.as_tensor(values, dtype=torch.float32)
    if stats.ndim != 1 or len(stats) not in (1, channels):
        raise ValueError(
            f"`{name}` must hold 1 or {channels} values (one per channel), got {tuple(values)!r}."
        )
    return stats.view(-1, 1, 1)


def _filled(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 canvas in the background colour."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    return canvas


def _upscale_factor(image: np.ndarray, min_size: int) -> int:
    """Smallest integer factor that brings the image's shorter side to at least ``min_size``."""
    return max(1, math.ceil(min_size / min(image.shape[:2])))


def _upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def to_display_images(
    images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
) -> np.ndarray:
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
    _check_positive_int("max_size", max_size)
    height, width = images.shape[1:3]
    scale = max_size / max(height, width)
    if scale >= 1:
        return images
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    resized = F.interpolate(pixels, size=size, mode="area").round().clamp(0, 255).to(torch.uint8)
    return np.ascontiguousarray(resized.permute(0, 2, 3, 1).numpy())


def colorize_maps(maps: Tensor, size: tuple[int, int], colormap: str) -> np.ndarray:
    """Scale each map to ``[0, 1]``, upsample it to the image size and colour it.

    Each map is min-max scaled on its own (a constant map becomes all zeros), resized bilinearly
    (``align_corners=False``) and passed through the matplotlib colour map; alpha is dropped.

    Args:
        maps: Tensor of shape ``(B, gh, gw)``, on any device.
        size: Output ``(H, W)``.
        colormap: A name in ``matplotlib.colormaps``, e.g. ``"jet"`` or ``"inferno"``.

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
    _check_size("size", size)
    if not isinstance(colormap, str) or colormap not in matplotlib.colormaps:
        raise ValueError(
            f"`colormap` must be a name in matplotlib.colormaps (e.g. 'jet', 'inferno', 'viridis'), "
            f"got {colormap!r}."
        )
    flat = maps.detach().to("cpu", torch.float32).flatten(1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(torch.float32).tiny), 0.0)
    grid = scaled.view(-1, 1, maps.shape[1], maps.shape[2])
    resized = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    rgba = matplotlib.colormaps[colormap](resized.squeeze(1).clamp(0.0, 1.0).numpy())
    return np.ascontiguousarray(rgba[..., :3], dtype=np.float32)


def blend(images: np.ndarray, heat: np.ndarray, alpha: float) -> np.ndarray:
    """Lay a colour map over images: ``round((1 - alpha) * image + alpha * heat * 255)``.

    Args:
        images: uint8 array of shape ``(..., H, W, 3)``.
        heat: Float array of the same shape with values in ``[0, 1]``, e.g. from :func:`colorize_maps`.
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


@functools.lru_cache(maxsize=None)
def _font(pixel_size: int) -> FT2Font:
    """DejaVu Sans at ``pixel_size`` pixels per em, loaded once per size.

    The font object keeps the last laid-out text as state, so it is not safe to share between threads.
    """
    font = FT2Font(font_manager.findfont("DejaVu Sans"))
    font.set_size(pixel_size, 72)  # 72 dpi: one point is one pixel
    return font


def _text_width(font: FT2Font, text: str) -> float:
    """Advance width of ``text`` in pixels."""
    font.set_text(text)
    return font.get_width_height()[0] / 64


def _fit(font: FT2Font, text: str, max_width: float) -> str:
    """``text`` itself if it fits in ``max_width`` pixels, else its longest prefix that fits with "…"."""
    if _text_width(font, text) <= max_width:
        return text
    low, high = 0, len(text) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if _text_width(font, text[:middle].rstrip() + _ELLIPSIS) <= max_width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + _ELLIPSIS


def _paste_max(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Merge ``patch`` into ``canvas`` at (top, left) by element-wise maximum, clipped to the canvas."""
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + patch.shape[0], canvas.shape[0])
    x1 = min(left + patch.shape[1], canvas.shape[1])
    if y0 < y1 and x0 < x1:
        target = canvas[y0:y1, x0:x1]
        np.maximum(target, patch[y0 - top : y1 - top, x0 - left : x1 - left], out=target)


def _draw_line(coverage: np.ndarray, font: FT2Font, text: str, baseline: int) -> None:
    """Rasterise one line of text into the coverage canvas with its baseline on row ``baseline``."""
    font.set_text(text)
    font.draw_glyphs_to_bitmap()
    glyphs = font.get_image()
    rows_above_baseline = glyphs.shape[0] - 1 - round(font.get_descent() / 64)
    _paste_max(coverage, glyphs, baseline - rows_above_baseline, _TEXT_MARGIN)


def _shade(coverage: np.ndarray) -> np.ndarray:
    """Turn a glyph coverage canvas (0..255) into text-coloured pixels on the background."""
    weight = coverage[..., None].astype(np.float32) / 255.0
    background = np.asarray(BACKGROUND, dtype=np.float32)
    foreground = np.asarray(TEXT_COLOR, dtype=np.float32)
    return np.ascontiguousarray(np.rint(background + (foreground - background) * weight).astype(np.uint8))


def render_text(lines: Sequence[str], width: int, line_height: int = 16) -> np.ndarray:
    """Draw lines of light text on a dark strip.

    The font is DejaVu Sans at about 0.65 x ``line_height`` pixels. A line too long for the strip is cut
    and ends with "…".

    Args:
        lines: The lines to draw, top to bottom.
        width: Width of the strip in pixels.
        line_height: Height of each line in pixels.

    Returns:
        uint8 array of shape ``(len(lines) * line_height, width, 3)``; zero rows for no lines.

    Raises:
        TypeError: If ``lines`` is not a sequence of str (a bare str is refused).
        ValueError: If ``width`` or ``line_height`` is not a positive int.
    """
    _check_lines("lines", lines)
    _check_positive_int("width", width)
    _check_positive_int("line_height", line_height)
    pixel_size = max(1, round(line_height * _FONT_SIZE_PER_LINE))
    font = _font(pixel_size)
    ascent = pixel_size * font.ascender / font.units_per_EM
    descent = -pixel_size * font.descender / font.units_per_EM
    baseline = round((line_height - ascent - descent) / 2 + ascent)
    coverage = np.zeros((len(lines) * line_height, width), dtype=np.uint8)
    for index, line in enumerate(lines):
        text = _fit(font, line, width - 2 * _TEXT_MARGIN)
        _draw_line(coverage, font, text, index * line_height + baseline)
    return _shade(coverage)


def render_panel(image: np.ndarray, overlay: np.ndarray, lines: Sequence[str], min_size: int = 128) -> np.ndarray:
    """One sample: the input and its overlay side by side, with a caption below.

    Both pictures are upscaled by the same integer factor (nearest neighbour) so that the shorter side is at
    least ``min_size`` pixels, and separated by a :data:`GAP`-pixel gap.

    Args:
        image: uint8 input image of shape ``(H, W, 3)``.
        overlay: uint8 overlay of the same shape, e.g. from :func:`blend`.
        lines: Caption lines, e.g. ``["true: cat", "pred: dog (0.83)"]``.
        min_size: Smallest shorter side of the upscaled pictures.

    Returns:
        uint8 array of shape ``(f * H + caption height, 2 * f * W + GAP, 3)`` with ``f`` the upscale factor.

    Raises:
        TypeError: If an image is not a numpy array or ``lines`` is not a sequence of str.
        ValueError: If an image is not uint8 ``(H, W, 3)``, the shapes differ, or ``min_size`` is not a
            positive int.
    """
    _check_rgb("image", image)
    _check_rgb("overlay", overlay)
    if overlay.shape != image.shape:
        raise ValueError(f"`overlay` must have the shape of `image` {image.shape}, got {overlay.shape}.")
    _check_lines("lines", lines)
    _check_positive_int("min_size", min_size)
    factor = _upscale_factor(image, min_size)
    height, width = image.shape[0] * factor, image.shape[1] * factor
    pictures = _filled(height, 2 * width + GAP)
    pictures[:, :width] = _upscale(image, factor)
    pictures[:, width + GAP :] = _upscale(overlay, factor)
    return np.concatenate([pictures, render_text(lines, pictures.shape[1])], axis=0)


def render_filmstrip(frames: Sequence[np.ndarray], labels: Sequence[str], min_size: int = 96) -> np.ndarray:
    """One row of frames of the same sample (e.g. at successive epochs), each under its label.

    Frames are upscaled by one integer factor (nearest neighbour) so that their shorter side is at least
    ``min_size`` pixels, laid out left to right with a :data:`GAP`-pixel gap.

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
    _check_lines("labels", labels)
    if len(labels) != len(frames):
        raise ValueError(f"`labels` must hold one label per frame ({len(frames)}), got {len(labels)}.")
    for index, frame in enumerate(frames):
        _check_rgb(f"frames[{index}]", frame)
        if frame.shape != frames[0].shape:
            raise ValueError(
                f"`frames` must share one shape {frames[0].shape}, frames[{index}] has {frame.shape}."
            )
    _check_positive_int("min_size", min_size)
    factor = _upscale_factor(frames[0], min_size)
    width = frames[0].shape[1] * factor
    columns = [
        np.concatenate([render_text([label], width), _upscale(frame, factor)], axis=0)
        for frame, label in zip(frames, labels)
    ]
    return render_grid(columns, ncols=len(columns))


def render_grid(panels: Sequence[np.ndarray], ncols: int) -> np.ndarray:
    """Tile panels row by row into one image.

    Cells are as large as the largest panel; a smaller panel sits in the top-left corner of its cell and
    the rest of the cell, the :data:`GAP`-pixel gaps and the empty cells of the last row are filled with
    :data:`BACKGROUND`. With fewer panels than ``ncols`` the grid has one column per panel.

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
        _check_rgb(f"panels[{index}]", panel)
    _check_positive_int("ncols", ncols)
    ncols = min(ncols, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    cell_height = max(panel.shape[0] for panel in panels)
    cell_width = max(panel.shape[1] for panel in panels)
    grid = _filled(nrows * cell_height + (nrows - 1) * GAP, ncols * cell_width + (ncols - 1) * GAP)
    for index, panel in enumerate(panels):
        row, col = divmod(index, ncols)
        top, left = row * (cell_height + GAP), col * (cell_width + GAP)
        grid[top : top + panel.shape[0], left : left + panel.shape[1]] = panel
    return grid
