"""Caption text rasterised with FreeType (``matplotlib.ft2font``) on matplotlib's bundled DejaVu Sans."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
from matplotlib import font_manager
from matplotlib.ft2font import FT2Font

from lightning_rollout.rendering.canvas import BACKGROUND, TEXT_COLOR, check_lines, check_positive_int, paste_max

__all__ = ["render_text"]

_TEXT_MARGIN = 4
_FONT_SIZE_PER_LINE = 0.65
_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


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


def _draw_line(coverage: np.ndarray, font: FT2Font, text: str, baseline: int) -> None:
    """Rasterise one line of text into the coverage canvas with its baseline on row ``baseline``."""
    font.set_text(text)
    font.draw_glyphs_to_bitmap()
    glyphs = font.get_image()
    rows_above_baseline = glyphs.shape[0] - 1 - round(font.get_descent() / 64)
    paste_max(coverage, glyphs, baseline - rows_above_baseline, _TEXT_MARGIN)


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
    check_lines("lines", lines)
    check_positive_int("width", width)
    check_positive_int("line_height", line_height)
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
