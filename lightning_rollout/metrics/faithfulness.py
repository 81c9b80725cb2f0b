"""Faithfulness of explanation maps by perturbation: deletion and insertion curves (no masks needed).

Deletion (Petsiuk et al., BMVC 2018, "RISE"; Chefer et al., CVPR 2021, "positive perturbation") replaces the
pixels the map ranks highest first and watches the class probability fall: a faithful map makes it fall
fast (low AUC). Insertion starts from the baseline and puts the highest-ranked pixels back first: a faithful
map makes the probability rise fast (high AUC).

Baseline. RISE deletes to a constant and inserts into a blurred copy of the image; Chefer et al. delete to 0
in normalised space (the data set mean). A constant fill draws the outline of the removed region into the
image, and that outline can itself carry the class (Rong et al., ICML 2022, "ROAD", who impute instead). We
use one baseline for both curves so that they are read against the same reference, by default ``"mean"``:
each image's own per-channel mean, which removes shapes and edges and, on dark-background scans, is close to
the background. The constant ``0.0`` (the normalisation mean in the model's input space, Chefer et al.'s
choice for normalised inputs) removes colours too: on the demo it separates the methods most, but on
scikit-learn's digits it left the best deletion AUC only just below the floors, where ``"mean"`` kept a clear
gap (see the README and ``benchmarks/bench_baseline.py``). ``"blur"`` (a Gaussian blur of the image itself,
``sigma`` = the longer image side / 16, RISE's insertion canvas) keeps colours and coarse shapes: on the demo
(classes by colour) and on the digits it left every method's deletion AUC near the random floor. Any other
number, or a tensor, is available too.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_rollout.core.checks import check_images, check_int, check_target
from lightning_rollout.core.hooks import eval_mode, preserved_rng
from lightning_rollout.core.outputs import OutputKey, Target, select_output

__all__ = ["ACTIVATIONS", "BASELINES", "check_baseline", "deletion_insertion_auc", "perturbation_curves", "pixel_ranks"]

ACTIVATIONS = ("softmax", "sigmoid")
"""How `perturbation_curves` turns logits into the probability it reads."""

BASELINES = ("blur", "mean")
"""Named baselines; a float or a tensor broadcastable to the images works too."""

Baseline = Union[str, float, Tensor]


def _gaussian_blur(images: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian blur per channel, reflect padding, kernel radius 3 sigma (clipped to the image)."""
    height, width = images.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma)), height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def check_baseline(name: str, baseline: Any) -> None:
    """Raises ``ValueError`` naming argument ``name`` unless ``baseline`` is a name of `BASELINES`, a
    finite real number or a tensor (whose shape is checked against the images when it is used)."""
    if isinstance(baseline, str) and baseline in BASELINES:
        return
    if isinstance(baseline, Tensor):
        return
    if isinstance(baseline, numbers.Real) and not isinstance(baseline, bool) and math.isfinite(baseline):
        return
    raise ValueError(f"`{name}` must be one of {list(BASELINES)}, a finite number or a tensor, got {baseline!r}")


def _baseline(images: Tensor, baseline: Baseline) -> Tensor:
    """The image every pixel is replaced by (deletion) or revealed from (insertion), shape of ``images``."""
    check_baseline("baseline", baseline)
    if isinstance(baseline, str):
        if baseline == "blur":
            return _gaussian_blur(images, max(images.shape[-2:]) / 16)
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)  # "mean"
    if isinstance(baseline, Tensor):
        try:
            return baseline.to(device=images.device, dtype=images.dtype).expand_as(images)
        except RuntimeError:
            raise ValueError(
                f"a tensor `baseline` must broadcast to the images' shape {tuple(images.shape)}, "
                f"got {tuple(baseline.shape)}"
            ) from None
    return torch.full_like(images, float(baseline))


def pixel_ranks(maps: Tensor, image_size: Tuple[int, int]) -> Tensor:
    """Rank of every pixel by relevance: 0 for the pixel the map ranks highest.

    The map is upsampled bilinearly to the image; ties (a flat map, a flat patch) go to the earlier pixel in
    row-major order, so a sample's order depends on its own map only.

    Returns:
        ``(B, H * W)`` long tensor, a permutation of ``0 .. H*W-1`` per row.
    """
    upsampled = F.interpolate(maps.unsqueeze(1).float(), size=image_size, mode="bilinear", align_corners=False)
    order = torch.sort(upsampled.flatten(1), dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def class_logits(output: Any, output_key: OutputKey) -> Tensor:
    """The selected output as class logits `(B, num_classes)`.

    Raises:
        ValueError: when the selection is not 2-D.
    """
    logits = select_output(output, output_key)
    if logits.dim() != 2:
        raise ValueError(f"the model must return logits of shape (B, num_classes), got {tuple(logits.shape)}")
    return logits


def check_perturbation_inputs(images: Tensor, maps: Tensor, target: Target) -> None:
    """Raises unless `images` `(B, C, H, W)`, finite `maps` `(B, h, w)` and `target` fit together."""
    check_images(images)
    if not isinstance(maps, Tensor) or maps.dim() != 3 or maps.shape[0] != images.shape[0]:
        got = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps).__name__
        raise ValueError(f"`maps` must be a tensor of shape ({images.shape[0]}, grid_h, grid_w), got {got}")
    if not bool(torch.isfinite(maps).all()):
        raise ValueError("`maps` must be finite, got NaN or Inf values")
    check_target(target, images.shape[0])


@torch.no_grad()
def perturbation_curves(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    steps: int = 16,
    baseline: Baseline = "mean",
    batch_size: int = 128,
    activation: str = "softmax",
    output_key: OutputKey = None,
) -> Tuple[Tensor, Tensor]:
    """The deletion and insertion curves: the target's probability after each step.

    Args:
        model: a classifier returning logits ``(B, num_classes)`` or an object with ``.logits``.
        images: ``(B, C, H, W)`` float batch on the model's device.
        maps: ``(B, grid_h, grid_w)`` relevance maps (any real values; only their order counts).
        target: the class whose probability is read: a LongTensor ``(B,)``, an int, or ``None`` for the class
            the model predicts on the unperturbed image.
        steps: the curves have ``steps + 1`` points, fractions ``0, 1/steps, ..., 1`` of the pixels.
        baseline: ``"blur"``, ``"mean"``, a number or a tensor broadcastable to ``images`` (see the module
            docstring).
        batch_size: perturbed images per forward pass; bounds memory to ``batch_size`` images.
        activation: how logits become the probability read: ``"softmax"`` over the classes (one class per
            image) or ``"sigmoid"`` of the target's own logit (multi-label models).
        output_key: where the logits sit in the model's output, as in `api`.

    Returns:
        ``(deletion, insertion)``, float32 tensors of shape ``(B, steps + 1)`` on ``images.device``.

    Raises:
        ValueError: on a bad argument or a model that does not return 2-D logits.
    """
    check_perturbation_inputs(images, maps, target)
    check_int("steps", steps, 1)
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {list(ACTIVATIONS)}, got {activation!r}")
    check_int("batch_size", batch_size, 1)
    batch, _, height, width = images.shape
    reference = _baseline(images, baseline)
    ranks = pixel_ranks(maps.to(images.device), (height, width))
    counts = torch.round(torch.arange(steps + 1, device=images.device) * (height * width / steps)).long()

    # Every (sample, step, curve) triple is one perturbed image; they are built and scored in chunks.
    jobs = torch.cartesian_prod(torch.arange(batch), torch.arange(steps + 1), torch.arange(2)).to(images.device)
    scores = torch.empty(batch, steps + 1, 2, device=images.device)
    with preserved_rng(images.device), eval_mode(model):
        if target is None:
            target = class_logits(model(images), output_key).argmax(dim=-1)
        target = torch.as_tensor(target, device=images.device).long().expand(batch)
        for chunk in jobs.split(batch_size):
            sample, step, curve = chunk.unbind(dim=1)
            revealed = ranks[sample] < counts[step][:, None]  # the first k pixels of the order
            take_image = torch.where(curve[:, None] == 0, ~revealed, revealed).view(-1, 1, height, width)
            perturbed = torch.where(take_image, images[sample], reference[sample])
            logits = class_logits(model(perturbed), output_key).float()
            if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
                raise ValueError(f"`target` values must be in [0, {logits.shape[1]}), got {target.tolist()}")
            probabilities = logits.softmax(dim=-1) if activation == "softmax" else logits.sigmoid()
            probabilities = probabilities.gather(1, target[sample][:, None]).squeeze(1)
            scores[sample, step, curve] = probabilities
    return scores[..., 0], scores[..., 1]


def deletion_insertion_auc(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    steps: int = 16,
    baseline: Baseline = "mean",
    batch_size: int = 128,
    activation: str = "softmax",
    output_key: OutputKey = None,
) -> Tuple[Tensor, Tensor]:
    """Deletion and insertion AUCs of each sample's map (RISE, Petsiuk et al. 2018).

    Pixels are ordered by the map (upsampled bilinearly to the image; ties to the earlier pixel in row-major
    order). Deletion replaces them by the baseline, insertion reveals them over the baseline, in ``steps``
    equal fractions from none to all; the score at each step is the probability of ``target`` (softmax, or
    sigmoid for multi-label models); the AUC is the trapezoid over the fraction axis ``[0, 1]``. Lower deletion
    and higher insertion mean a more faithful map.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()``; leaves the model's train/eval modes,
    weights, ``.grad`` and the global RNG state as found. A sample's AUCs do not depend on the rest of the
    batch (the model runs in eval mode).

    The arguments are those of `perturbation_curves` (``steps + 1`` forwards per sample and curve,
    ``batch_size`` images per forward).

    Returns:
        ``(deletion, insertion)``: float32 tensors of shape ``(B,)`` with values in ``[0, 1]``.

    Example:
        ```python
        maps = explain(model, images, "grad_rollout", target=labels)
        deletion, insertion = deletion_insertion_auc(model, images, maps, labels, steps=16)
        ```
    """
    deletion, insertion = perturbation_curves(
        model,
        images,
        maps,
        target,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        activation=activation,
        output_key=output_key,
    )
    return torch.trapezoid(deletion, dx=1.0 / steps), torch.trapezoid(insertion, dx=1.0 / steps)
