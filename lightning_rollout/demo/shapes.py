"""The shapes the demo scenes are drawn with: filled targets and hollow or thin distractors, each with its extent.

A shape is one row of a table: how far it reaches from its centre (its *extent*, a multiple of the scale ``r``)
and how its pixels are drawn inside that reach. The scenes read the extent to place objects inside the image and
apart; the drawer gets the same reach in pixels, so each shape's size is written down once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["DISTRACTOR_SHAPES", "TARGET_SHAPES", "Shape"]

# A drawer gets pixel-centre offsets (dy, dx) from the object's centre, the object's half-extent ``half`` in
# pixels, its scale ``r`` (half the side of a square of the same area as a target; strokes are sized from it)
# and the sample's generator; it returns the object's pixels.
Drawer = Callable[[np.ndarray, np.ndarray, float, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Shape:
    """A shape of the scenes.

    Args:
        extent: half the side of the square the shape fits in, as a multiple of the scale ``r``.
        drawer: draws the shape's pixels within ``extent * r`` of its centre.
    """

    extent: float
    drawer: Drawer

    def half(self, r: float) -> float:
        """Half the side of the square the shape of scale ``r`` fits in, in pixels."""
        return self.extent * r

    def draw(self, dy: np.ndarray, dx: np.ndarray, r: float, rng: np.random.Generator) -> np.ndarray:
        """The pixels of the shape of scale ``r`` at offsets ``(dy, dx)`` from its centre (a bool array)."""
        return self.drawer(dy, dx, self.half(r), r, rng)


def _quarter_turn(dy: np.ndarray, dx: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rotate the offsets by a random multiple of 90 degrees."""
    turns = int(rng.integers(4))
    for _ in range(turns):
        dy, dx = dx, -dy
    return dy, dx


# Targets: filled shapes, all of area 4 r^2; which one is drawn says nothing about the class.
def _square(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    return (np.abs(dy) <= half) & (np.abs(dx) <= half)


def _disc(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    return dy * dy + dx * dx <= half * half


def _triangle(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    # Isosceles, base and height 2 * half, apex pointing in one of four directions.
    dy, dx = _quarter_turn(dy, dx, rng)
    depth = (dy + half) / 2.0  # 0 at the apex, half at the base
    return (dy >= -half) & (dy <= half) & (np.abs(dx) <= depth)


def _cross(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    # Plus sign: arms of half-length L = half and half-width L / 3 (area 20 L^2 / 9).
    arm = half / 3.0
    ady, adx = np.abs(dy), np.abs(dx)
    return ((ady <= arm) & (adx <= half)) | ((adx <= arm) & (ady <= half))


def _diamond(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    return np.abs(dy) + np.abs(dx) <= half


# Distractors: hollow or thin shapes, never one of the target shapes.
def _ring(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    inner = half - max(1.5, 0.6 * r)
    d2 = dy * dy + dx * dx
    return (d2 <= half * half) & (d2 > inner * inner)


def _frame(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    inner = half - max(1.5, 0.6 * r)
    ext = np.maximum(np.abs(dy), np.abs(dx))
    return (ext <= half) & (ext > inner)


def _bar(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    dy, dx = _quarter_turn(dy, dx, rng)
    return (np.abs(dy) <= max(0.8, 0.5 * r)) & (np.abs(dx) <= half)


def _corner(dy: np.ndarray, dx: np.ndarray, half: float, r: float, rng: np.random.Generator) -> np.ndarray:
    # An "L": two arms meeting at one corner of the box.
    dy, dx = _quarter_turn(dy, dx, rng)
    width = max(1.5, 0.8 * r)
    inside = (np.abs(dy) <= half) & (np.abs(dx) <= half)
    return inside & ((dy >= half - width) | (dx <= -half + width))


TARGET_SHAPES: dict[str, Shape] = {
    "square": Shape(1.0, _square),
    "disc": Shape(2.0 / math.sqrt(math.pi), _disc),  # radius of the disc of area 4 r^2
    "triangle": Shape(math.sqrt(2.0), _triangle),
    "cross": Shape(math.sqrt(36.0 / 20.0), _cross),
    "diamond": Shape(math.sqrt(2.0), _diamond),
}
"""Filled shapes a target is drawn as (uniformly, whatever its class), each of area ``4 r^2``."""

DISTRACTOR_SHAPES: dict[str, Shape] = {
    "ring": Shape(1.15, _ring),
    "frame": Shape(1.0, _frame),
    "bar": Shape(1.4, _bar),
    "corner": Shape(1.0, _corner),
}
"""Shapes only ever drawn as distractors."""
