"""What one logging step shows: the picture grid, the filmstrip and the scalars of one method's maps.

Pure functions from tensors to pictures (RGB uint8 arrays) and numbers; the callback decides when and
where they go.
"""

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from lightning_rollout.metrics import deletion_insertion_auc, energy_in_mask, normalized_entropy, pointing_game
from lightning_rollout.rendering import blend, colorize_maps, render_filmstrip, render_grid, render_panel


def overlays(display_images: np.ndarray, maps: Tensor, colormap: str, alpha: float) -> np.ndarray:
    """Blends colour-mapped ``maps`` (upsampled to the image size) over ``(B, H, W, 3)`` uint8 images."""
    heat = colorize_maps(maps, display_images.shape[1:3], colormap)
    return blend(display_images, heat, alpha)


def captions(
    labels: Optional[Tensor], probabilities: Tensor, class_names: Optional[Sequence[str]] = None
) -> List[List[str]]:
    """Caption lines per sample: the true label (when known) and the prediction with its confidence."""
    def name(index: int) -> str:
        return class_names[index] if class_names is not None and index < len(class_names) else str(index)

    confidence, predicted = probabilities.float().max(dim=-1)
    lines = []
    for i in range(probabilities.shape[0]):
        sample = [] if labels is None else [f"true: {name(int(labels[i]))}"]
        sample.append(f"pred: {name(int(predicted[i]))} ({float(confidence[i]):.2f})")
        lines.append(sample)
    return lines


def render_samples(
    display_images: np.ndarray, maps: Tensor, sample_captions: List[List[str]], colormap: str, alpha: float
) -> np.ndarray:
    """One picture: for every sample, its input beside its overlay with the caption below."""
    blended = overlays(display_images, maps, colormap, alpha)
    panels = [render_panel(image, overlay, lines) for image, overlay, lines in zip(display_images, blended, sample_captions)]
    return render_grid(panels, ncols=min(4, len(panels)))


def pick_columns(count: int, max_columns: int) -> List[int]:
    """Indices of at most ``max_columns`` evenly spaced entries of ``count``, first and last included."""
    if count <= max_columns:
        return list(range(count))
    if max_columns == 1:
        return [count - 1]
    return sorted({round(i * (count - 1) / (max_columns - 1)) for i in range(max_columns)})


def render_filmstrips(
    display_images: np.ndarray,
    history: Sequence[Tuple[str, Tensor]],
    colormap: str,
    alpha: float,
    max_columns: int,
) -> np.ndarray:
    """One picture: a row per sample, the input then a column per logged epoch.

    ``history`` holds ``(label, maps)`` per logged epoch; at most ``max_columns`` of them are shown.
    """
    chosen = [history[i] for i in pick_columns(len(history), max_columns)]
    frames = [display_images] + [overlays(display_images, maps, colormap, alpha) for _, maps in chosen]
    labels = ["input"] + [label for label, _ in chosen]
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


def faithfulness_scalars(model: nn.Module, images: Tensor, maps: Tensor, target: Tensor, steps: int) -> Dict[str, float]:
    """Batch means of the deletion and insertion AUCs (``deletion_auc`` ↓, ``insertion_auc`` ↑) of ``maps``."""
    deletion, insertion = deletion_insertion_auc(model, images, maps.to(images.device), target, steps=steps)
    return {"deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean())}


def all_finite(maps: Tensor) -> bool:
    """Whether every entry is finite (a diverging model gives NaN/Inf maps)."""
    return bool(torch.isfinite(maps).all())
