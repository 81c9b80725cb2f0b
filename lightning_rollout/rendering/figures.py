"""The figures of a logging step: the samples panel, the filmstrip and the per-head picture of maps.

Pure functions from maps and display images to pictures (RGB uint8 arrays); a constant map is shown as the
bare input with a caption saying so, never as a flat overlay.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
from torch import Tensor

from lightning_rollout.rendering.images import blend, colorize_maps
from lightning_rollout.rendering.layout import render_filmstrip, render_grid, render_panel


def constant_maps(maps: Tensor) -> Tensor:
    """``(B,)`` bool: which maps are constant (all zero, or one value everywhere up to float rounding).

    A constant map carries no location; its min-max scaled overlay would be one flat colour.
    """
    flat = maps.detach().float().flatten(1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    return spread <= 1e-6 * flat.abs().amax(dim=1)


def overlays(
    display_images: np.ndarray, maps: Tensor, colormap: str, alpha: float, shared_scale: bool = False
) -> np.ndarray:
    """Blends colour-mapped ``maps`` (upsampled to the image size) over ``(B, H, W, 3)`` uint8 images.

    A constant map (`constant_maps`) gets no colour: its overlay is the input itself. ``shared_scale``:
    one colour scale for all ``B`` maps (the frames of a clip), else one per map.
    """
    heat = colorize_maps(maps, display_images.shape[1:3], colormap, shared_scale)
    blended = blend(display_images, heat, alpha)
    flat = constant_maps(maps).cpu().numpy()
    blended[flat] = display_images[flat]
    return blended


def constant_caption(maps: Tensor) -> List[Optional[str]]:
    """Per sample, a caption line for a constant map (``"constant map: 0"``), else ``None``."""
    flat = constant_maps(maps).tolist()
    values = maps.detach().float().flatten(1)[:, 0].tolist()
    return [f"constant map: {value:.3g}" if is_flat else None for is_flat, value in zip(flat, values)]


def render_samples(
    display_images: np.ndarray, maps: Tensor, sample_captions: List[List[str]], colormap: str, alpha: float
) -> np.ndarray:
    """One picture: for every sample, its input beside its overlay with the caption below.

    A constant map is shown as the bare input with a ``constant map: value`` caption line.
    """
    blended = overlays(display_images, maps, colormap, alpha)
    lines = [
        list(sample) + ([extra] if extra else []) for sample, extra in zip(sample_captions, constant_caption(maps))
    ]
    panels = [render_panel(image, overlay, text) for image, overlay, text in zip(display_images, blended, lines)]
    return render_grid(panels, ncols=min(4, len(panels)))


def render_filmstrips(
    display_images: np.ndarray,
    history: Sequence[Tuple[str, Tensor]],
    colormap: str,
    alpha: float,
) -> np.ndarray:
    """One picture: a row per sample, the input then a column per logged epoch.

    ``history`` holds ``(label, maps)`` per shown epoch, oldest first. A
    constant map's frame is the bare input, labelled ``"{label} flat"``.
    """
    chosen = list(history)
    frames = [display_images] + [overlays(display_images, maps, colormap, alpha) for _, maps in chosen]
    flat = [constant_maps(maps).tolist() for _, maps in chosen]
    rows = []
    for i in range(display_images.shape[0]):
        labels = ["input"] + [f"{label} flat" if column[i] else label for (label, _), column in zip(chosen, flat)]
        rows.append(render_filmstrip([frame[i] for frame in frames], labels))
    return render_grid(rows, ncols=1)


def render_heads(display_images: np.ndarray, heads: Tensor, colormap: str, alpha: float) -> np.ndarray:
    """One picture of per-head maps ``(B, heads, h, w)`` (DINO's figure): a row per sample, its input, then one
    overlay per head."""
    frames = [display_images] + [
        overlays(display_images, heads[:, head], colormap, alpha) for head in range(heads.shape[1])
    ]
    labels = ["input"] + [f"head {head}" for head in range(heads.shape[1])]
    rows = [render_filmstrip([frame[i] for frame in frames], labels) for i in range(display_images.shape[0])]
    return render_grid(rows, ncols=1)
