"""What one logging step shows: the picture grid, the filmstrip and the scalars of one method's maps.

Pure functions from tensors to pictures (RGB uint8 arrays) and numbers; the callback decides when and
where they go.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from lightning_rollout.core.checks import OutputKey
from lightning_rollout.metrics import deletion_insertion_auc, energy_in_mask, normalized_entropy, pointing_game
from lightning_rollout.rendering.images import blend, colorize_maps, render_filmstrip, render_grid, render_panel


def constant_maps(maps: Tensor) -> Tensor:
    """``(B,)`` bool: which maps are constant (all zero, or one value everywhere up to float rounding).

    A constant map carries no location; its min-max scaled overlay would be one flat colour.
    """
    flat = maps.detach().float().flatten(1)
    spread = flat.amax(dim=1) - flat.amin(dim=1)
    return spread <= 1e-6 * flat.abs().amax(dim=1)


def overlays(display_images: np.ndarray, maps: Tensor, colormap: str, alpha: float) -> np.ndarray:
    """Blends colour-mapped ``maps`` (upsampled to the image size) over ``(B, H, W, 3)`` uint8 images.

    A constant map (:func:`constant_maps`) gets no colour: its overlay is the input itself.
    """
    heat = colorize_maps(maps, display_images.shape[1:3], colormap)
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


def pick_columns(count: int, max_columns: int) -> List[int]:
    """Indices of at most ``max_columns`` evenly spaced entries of ``count``, first and last included."""
    if count <= max_columns:
        return list(range(count))
    if max_columns == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (max_columns - 1)) for i in range(max_columns)})


def thin_columns(positions: Sequence[int], max_columns: int) -> List[int]:
    """Indices of the columns to keep so that at most ``max_columns`` remain, evenly spread.

    ``positions`` are the columns' logging ordinals, ascending. While there are too many, the interior column
    whose removal leaves the smallest gap between its neighbours goes (the earliest on ties); the first and
    the last column always stay (with ``max_columns=1`` only the last). Applied after each new column, the
    kept columns never number more than ``max_columns`` and spread over the whole run.
    """
    kept = list(range(len(positions)))
    if max_columns == 1:
        return kept[-1:]
    while len(kept) > max_columns:
        gaps = [positions[kept[i + 1]] - positions[kept[i - 1]] for i in range(1, len(kept) - 1)]
        del kept[1 + gaps.index(min(gaps))]
    return kept


def render_filmstrips(
    display_images: np.ndarray,
    history: Sequence[Tuple[str, Tensor]],
    colormap: str,
    alpha: float,
    max_columns: int,
) -> np.ndarray:
    """One picture: a row per sample, the input then a column per logged epoch.

    ``history`` holds ``(label, maps)`` per logged epoch; at most ``max_columns`` of them are shown. A
    constant map's frame is the bare input, labelled ``"{label} flat"``.
    """
    chosen = [history[i] for i in pick_columns(len(history), max_columns)]
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


def map_scalars(maps: Tensor, masks: Optional[Tensor]) -> Dict[str, float]:
    """Batch means of the map statistics: ``entropy`` always; ``energy`` and ``pointing_game`` with masks."""
    scalars = {"entropy": float(normalized_entropy(maps).mean())}
    if masks is not None:
        masks = masks.to(maps.device)
        scalars["energy"] = float(energy_in_mask(maps, masks).mean())
        scalars["pointing_game"] = float(pointing_game(maps, masks).mean())
    return scalars


def faithfulness_scalars(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Tensor,
    steps: int,
    baseline: Union[float, str, Tensor],
    activation: str = "softmax",
    output_key: OutputKey = None,
) -> Dict[str, float]:
    """Batch means of the deletion and insertion AUCs (``deletion_auc`` ↓, ``insertion_auc`` ↑) of ``maps``,
    with ``steps``, ``baseline``, ``activation`` and ``output_key`` as in
    :func:`~lightning_rollout.metrics.deletion_insertion_auc`."""
    deletion, insertion = deletion_insertion_auc(
        model, images, maps.to(images.device), target, steps=steps, baseline=baseline, activation=activation,
        output_key=output_key,
    )
    return {"deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean())}


def all_finite(maps: Tensor) -> bool:
    """Whether every entry is finite (a diverging model gives NaN/Inf maps)."""
    return bool(torch.isfinite(maps).all())
