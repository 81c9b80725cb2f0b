"""The shared ground of every picture: colours, gaps, argument checks and the canvas helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "BACKGROUND",
    "GAP",
    "TEXT_COLOR",
    "check_lines",
    "check_positive_int",
    "check_rgb",
    "check_size",
    "filled",
    "paste_max",
    "upscale",
    "upscale_factor",
]

BACKGROUND = (24, 24, 24)
"""RGB colour of caption strips, gaps and padding."""
TEXT_COLOR = (235, 235, 235)
"""RGB colour of caption text."""
GAP = 4
"""Pixels between the pictures of a panel, filmstrip or grid."""


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is a positive int (bools excluded)."""
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_size(name: str, value: object) -> None:
    """Raise unless ``value`` is a pair of positive ints."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in value)
    ):
        raise ValueError(f"`{name}` must be a pair of positive ints (H, W), got {value!r}.")


def check_rgb(name: str, image: object) -> None:
    """Raise unless ``image`` is a non-empty uint8 numpy array of shape (H, W, 3)."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array of shape (H, W, 3), got {type(image).__name__}.")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"`{name}` must have shape (H, W, 3) with H, W > 0, got {image.shape}.")
    if image.dtype != np.uint8:
        raise ValueError(f"`{name}` must be uint8, got {image.dtype}.")


def check_lines(name: str, lines: object) -> None:
    """Raise unless ``lines`` is a sequence of strings (a bare string is refused)."""
    if isinstance(lines, str) or not isinstance(lines, Sequence):
        raise TypeError(f"`{name}` must be a sequence of str (one per line), got {type(lines).__name__}.")
    for line in lines:
        if not isinstance(line, str):
            raise TypeError(f"`{name}` must hold only str, got an item of type {type(line).__name__}.")


def filled(height: int, width: int) -> np.ndarray:
    """A (height, width, 3) uint8 canvas in the background colour."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    return canvas


def upscale_factor(image: np.ndarray, min_size: int) -> int:
    """Smallest integer factor that brings the image's shorter side to at least ``min_size``."""
    return max(1, math.ceil(min_size / min(image.shape[:2])))


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling by an integer factor."""
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def paste_max(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
    """Merge ``patch`` into ``canvas`` at (top, left) by element-wise maximum, clipped to the canvas."""
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + patch.shape[0], canvas.shape[0])
    x1 = min(left + patch.shape[1], canvas.shape[1])
    if y0 < y1 and x0 < x1:
        target = canvas[y0:y1, x0:x1]
        np.maximum(target, patch[y0 - top : y1 - top, x0 - left : x1 - left], out=target)
