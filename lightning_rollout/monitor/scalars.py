"""The numbers beside the pictures: map statistics, localisation against masks, faithfulness by perturbation
(deletion and insertion AUCs, SaCo)."""

from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from lightning_rollout.core.outputs import OutputKey
from lightning_rollout.metrics import (
    class_discrimination,
    deletion_insertion_auc,
    energy_in_mask,
    localisation_over_frames,
    normalized_entropy,
    pointing_game,
    saco,
)
from lightning_rollout.monitor.tasks import Panels


def map_scalars(maps: Tensor, masks: Optional[Tensor]) -> Dict[str, float]:
    """Batch means of the map statistics: ``entropy`` always; ``energy`` and ``pointing_game`` with masks."""
    scalars = {"entropy": float(normalized_entropy(maps).mean())}
    if masks is not None:
        masks = masks.to(maps.device)
        scalars["energy"] = float(energy_in_mask(maps, masks).mean())
        scalars["pointing_game"] = float(pointing_game(maps, masks).mean())
    return scalars


def video_scalars(maps: Tensor, masks: Optional[Tensor], tubelet: int) -> Dict[str, float]:
    """Video maps ``(P, T', h, w)``: ``entropy`` over all the clip's cells; with per-frame masks ``(P, T, H, W)``
    ``energy`` and ``pointing_game`` of every input frame's map against that frame's mask
    (`localisation_over_frames`), averaged over frames and panels, and per
    frame ``frames/energy_<t>`` and ``frames/pointing_game_<t>`` (averaged over panels)."""
    scalars = {"entropy": float(normalized_entropy(maps.flatten(1, 2)).mean())}
    if masks is None:
        return scalars
    scores = localisation_over_frames(maps, masks.to(maps.device), tubelet)
    for name in ("energy", "pointing_game"):
        scalars[name] = float(scores[name].mean())
        for frame, value in enumerate(scores[name].mean(dim=0).tolist()):
            scalars[f"frames/{name}_{frame:02d}"] = value
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
    `deletion_insertion_auc`."""
    deletion, insertion = deletion_insertion_auc(
        model,
        images,
        maps.to(images.device),
        target,
        steps=steps,
        baseline=baseline,
        activation=activation,
        output_key=output_key,
    )
    return {"deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean())}


def check_saco_groups(argument: str, groups: Any) -> None:
    """Raises unless ``groups`` is 0 (SaCo off) or an int >= 2 (SaCo's ``K``).

    Raises:
        ValueError: naming ``argument``.
    """
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 0 or groups == 1:
        raise ValueError(
            f"`{argument}` must be 0 (SaCo off) or an int >= 2 (the number of pixel groups), got {groups!r}"
        )


def saco_scalars(
    model: nn.Module,
    images: Tensor,
    maps: Mapping[str, Tensor],
    target: Tensor,
    groups: int,
    activation: str = "softmax",
    output_key: OutputKey = None,
) -> Dict[str, float]:
    """``{method: batch mean of SaCo}`` (`saco`, ``groups`` pixel groups) of
    every method's maps, one forward of the ``B * groups`` perturbed images per method.

    Raises:
        ValueError: naming ``saco_groups`` when the images have fewer than ``groups`` pixels.
    """
    pixels = images.shape[-2] * images.shape[-1]
    if groups > pixels:
        raise ValueError(
            f"`saco_groups`={groups} needs at least that many pixels, but the model's input has {pixels} "
            f"({images.shape[-2]}x{images.shape[-1]}); pass a smaller `saco_groups`, or 0"
        )
    return {
        method: float(
            saco(
                model,
                images,
                method_maps.to(images.device),
                target,
                groups=groups,
                activation=activation,
                output_key=output_key,
            ).mean()
        )
        for method, method_maps in maps.items()
    }


def all_finite(maps: Tensor) -> bool:
    """Whether every entry is finite (a diverging model gives NaN/Inf maps)."""
    return bool(torch.isfinite(maps).all())


def discrimination(maps: Tensor, masks: Optional[Tensor], labels: Optional[Tensor], panels: Panels) -> Optional[float]:
    """The share of panels whose map puts more mass on its class's object than on the sample's other present
    classes' objects (`class_discrimination`), over the panels whose sample
    holds another class; ``None`` without per-class masks, multi-hot labels or such panels."""
    if masks is None or masks.dim() != 4 or labels is None or labels.dim() != 2 or panels.classes is None:
        return None
    present = labels[panels.samples] > 0.5
    others = present.clone()
    others[torch.arange(others.shape[0]), panels.classes] = False
    keep = others.any(dim=1)
    if not bool(keep.any()):
        return None
    own = masks[panels.samples, panels.classes].float()
    other = (masks[panels.samples].float() * others[:, :, None, None]).amax(dim=1)
    return float(class_discrimination(maps[keep], own[keep], other[keep]).mean())
