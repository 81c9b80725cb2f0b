"""Pictures from maps: display images, colour maps and overlays, text, panels, filmstrips and grids.

Pure functions from tensors and arrays to RGB uint8 arrays; they know nothing of loggers or training.

- `canvas`: colours, gaps and the shared checks; `images`: display images, heat maps, overlays;
- `text`: caption text; `layout`: panels, filmstrips, grids; `figures`: a logging step's pictures.
"""

from lightning_rollout.rendering.canvas import BACKGROUND, GAP, TEXT_COLOR
from lightning_rollout.rendering.images import blend, colorize_maps, fit_display_images, to_display_images
from lightning_rollout.rendering.layout import render_filmstrip, render_grid, render_panel
from lightning_rollout.rendering.text import render_text

__all__ = [
    "BACKGROUND",
    "GAP",
    "TEXT_COLOR",
    "blend",
    "colorize_maps",
    "fit_display_images",
    "render_filmstrip",
    "render_grid",
    "render_panel",
    "render_text",
    "to_display_images",
]
