"""The pixels of the demo scenes: the palette, the textured background, painting an object, the noise.

The scenes call these in a fixed order on the sample's own generator, so a sample stays a pure function of
``(seed, split, index)``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLOURS", "background", "finish", "paint"]

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.92, 0.18, 0.15),
    "green": (0.15, 0.78, 0.2),
    "blue": (0.2, 0.35, 0.95),
    "yellow": (0.9, 0.85, 0.12),
    "magenta": (0.85, 0.2, 0.85),
}
"""Palette in class order: class ``k`` is a target of the ``k``-th colour (light shade; the dark one is half)."""


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A mid-tone, smooth colour texture: coarse random grid, bilinearly upsampled, in ``[0.35, 0.6]``.

    Returns the ``(height, width, 3)`` float64 canvas the objects are painted on.
    """
    coarse = rng.uniform(0.35, 0.6, size=(5, 5, 3))
    ys = np.linspace(0, 4, height)
    xs = np.linspace(0, 4, width)
    y0 = np.minimum(ys.astype(int), 3)
    x0 = np.minimum(xs.astype(int), 3)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    top = coarse[y0][:, x0] * (1 - fx) + coarse[y0][:, x0 + 1] * fx
    bottom = coarse[y0 + 1][:, x0] * (1 - fx) + coarse[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def paint(image: np.ndarray, pixels: np.ndarray, colour: int, rng: np.random.Generator) -> None:
    """Fill ``pixels`` of ``image`` with palette colour ``colour``, in its light or dark (half) shade with equal odds.

    Each channel is jittered by up to 0.05. Targets and distractors share this distribution, so neither the colour
    nor the brightness of an object marks it as the target.
    """
    shade = 1.0 if rng.random() < 0.5 else 0.5
    rgb = np.asarray(list(COLOURS.values())[colour]) * shade
    image[pixels] = np.clip(rgb + rng.uniform(-0.05, 0.05, size=3), 0.0, 1.0)


def finish(image: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Add per-pixel noise of standard deviation ``noise`` (none when 0) and quantise to ``(H, W, 3)`` uint8."""
    if noise > 0:
        image += rng.normal(0.0, noise, size=image.shape)
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
