"""SaCo, the salience-guided faithfulness coefficient (Wu et al., "On the Faithfulness of Vision Transformer
Explanations", CVPR 2024).

Deletion and insertion curves ask whether the pixels a map ranks first matter; SaCo also asks whether the
map's *amounts* are right: a group of pixels the map calls twice as salient as another should hurt the
prediction more when it is removed. The map, enlarged to the image by nearest neighbour, ranks the pixels;
they are split into ``K`` groups of equal size, ``G_1`` (most salient) to ``G_K``. ``s(G_i)`` is the salience
of group ``i`` and ``Δ_i`` the drop of the target's probability when only group ``i`` is replaced by the
image's per-channel mean. Every pair ``i < j`` is weighed by ``w = s(G_i) - s(G_j)`` and counted ``+w``
when ``Δ_i >= Δ_j`` (the more salient group hurts at least as much), ``-w`` otherwise:

    F = Σ_{i<j} ±w / Σ_{i<j} |w|,   in [-1, 1].

A faithful map scores near 1, a random one about 0, an inverted one near -1. Wu et al. report, on ImageNet
with ``K = 10`` (mean of ViT-B, ViT-L and DeiT-B): Chefer ICCV'21 0.456, Chefer CVPR'21 0.390, rollout
0.245, raw attention 0.184, Grad-CAM 0.114.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_rollout.core.checks import check_int
from lightning_rollout.core.hooks import eval_mode, preserved_rng
from lightning_rollout.core.outputs import OutputKey, Target
from lightning_rollout.metrics.faithfulness import ACTIVATIONS, check_perturbation_inputs, class_logits

__all__ = ["saco"]


def _pixel_groups(maps: Tensor, image_size: Tuple[int, int], groups: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Splits each sample's pixels into ``groups`` groups by salience, most salient first.

    Pixels are ranked by the map enlarged by nearest neighbour, ties to the earlier pixel in row-major
    order; the pixel of rank ``r`` (of ``P``) goes to group ``r * groups // P``, so group sizes differ by at
    most one pixel.

    Returns:
        ``(group_of_pixel, mean, flat)``: the group of every pixel ``(B, H * W)``, the mean salience of every
        group ``(B, K)``, and ``(B, K, K)`` with ``flat[b, i, j]`` true when the salience is constant from
        the first pixel of group ``i`` to the last of group ``j`` (read only for ``i < j``).
    """
    salience = F.interpolate(maps[:, None].float(), size=image_size, mode="nearest-exact").flatten(1)
    values, order = salience.sort(dim=1, descending=True, stable=True)
    pixels = values.shape[1]
    group_at = torch.arange(pixels, device=maps.device) * groups // pixels  # the group of each rank
    group_of_pixel = torch.empty_like(order).scatter_(1, order, group_at.expand_as(order))
    sizes = torch.bincount(group_at, minlength=groups)
    mean = torch.zeros(values.shape[0], groups, device=maps.device).index_add_(1, group_at, values) / sizes
    ends = sizes.cumsum(dim=0)
    first, last = values[:, ends - sizes], values[:, ends - 1]
    return group_of_pixel, mean, first[:, :, None] == last[:, None, :]


def _coefficient(mean: Tensor, flat: Tensor, probability: Tensor) -> Tensor:
    """``F`` per sample from the groups' mean salience and the target's probability with each group replaced.

    ``Δ_i >= Δ_j`` is read as ``p_i <= p_j``: the unperturbed probability cancels. The group mean stands for
    the sum ``s(G_i)``: with groups of equal size, the factor between them cancels in ``F``; with sizes one
    pixel apart, it keeps the size from weighing in. Pairs of groups on one constant stretch of the map
    weigh exactly 0 (their means could differ by rounding).
    """
    groups = mean.shape[1]
    weight = (mean[:, :, None] - mean[:, None, :]).masked_fill(flat, 0.0)
    weight = weight * torch.ones(groups, groups, device=mean.device).triu(diagonal=1)  # pairs i < j
    sign = torch.where(probability[:, :, None] <= probability[:, None, :], 1.0, -1.0)
    total = weight.abs().sum(dim=(1, 2))
    signed = (sign * weight).sum(dim=(1, 2))
    return torch.where(total > 0, signed / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)


@torch.no_grad()
def saco(
    model: nn.Module,
    images: Tensor,
    maps: Tensor,
    target: Target = None,
    *,
    groups: int = 10,
    activation: str = "softmax",
    output_key: OutputKey = None,
    batch_size: Optional[int] = None,
) -> Tensor:
    """Salience-guided faithfulness coefficient (SaCo, Wu et al. 2024) of each sample's map.

    The map, enlarged to the image by nearest neighbour, ranks the pixels (ties to the earlier pixel in
    row-major order); they are split into ``groups`` groups of equal size (sizes one pixel apart when
    ``groups`` does not divide ``H * W``), ``G_1`` the most salient. For every pair ``i < j``, with
    ``w = s(G_i) - s(G_j)`` the difference of the groups' salience (their mean salience, which gives the
    same ``F`` as their summed salience when the groups are equal in size) and ``Δ_i`` the drop of the target's
    probability when only ``G_i`` is replaced by the image's per-channel mean (one group at a time, not
    cumulative), the pair counts ``+w`` if ``Δ_i >= Δ_j`` and ``-w`` otherwise;
    ``F = Σ ±w / Σ |w|``. ``F`` is defined as 0 when ``Σ |w| = 0``: a constant map says nothing about
    which group matters more.

    The ``B * groups`` perturbed images go through the model in one forward, or in chunks of
    ``batch_size`` images; with ``target=None`` one more forward of the ``B`` images finds the predicted
    classes. Runs under ``torch.no_grad()`` (works inside ``torch.inference_mode()`` too) with the model in
    eval mode, and leaves the model's train/eval modes, weights, ``.grad`` and the global RNG state as it
    found them. A sample's score does not depend on the rest of the batch.

    Args:
        model: a classifier returning logits ``(B, num_classes)`` or an output holding them (see
            ``output_key``).
        images: ``(B, C, H, W)`` float batch on the model's device.
        maps: ``(B, h, w)`` finite salience maps with ``h <= H`` and ``w <= W`` (a token grid, or the
            image's own size). Their values count, not only their order: use maps on one scale, such as
            the methods' non-negative maps.
        target: the class whose probability is read: a LongTensor ``(B,)``, an int, or ``None`` for the
            class the model predicts on the unperturbed image.
        groups: ``K``, the number of pixel groups, an int from 2 to ``H * W``; ``K * (K - 1) / 2`` pairs.
        activation: ``"softmax"`` over the classes (one class per image) or ``"sigmoid"`` of the target's
            own logit (multi-label models).
        output_key: where the logits sit in the model's output: ``None`` (a tensor, ``.logits`` or
            ``"logits"``), a key or an index, as in ``explain``.
        batch_size: perturbed images per forward; ``None`` sends all ``B * groups`` in one.

    Returns:
        float32 tensor ``(B,)`` on ``images.device``, values in ``[-1, 1]``.

    Raises:
        ValueError: naming the argument, on a bad argument, or when the model does not return 2-D logits.

    Example:
        ```python
        maps = explain(model, images, "chefer", target=labels)
        faithfulness = saco(model, images, maps, labels, groups=10, batch_size=256).mean()
        ```
    """
    check_perturbation_inputs(images, maps, target)
    batch, _, height, width = images.shape
    if maps.shape[1] > height or maps.shape[2] > width:
        raise ValueError(f"`maps` must not be larger than the images ({height}, {width}), got {tuple(maps.shape[1:])}")
    check_int("groups", groups, 2)
    if groups > height * width:
        raise ValueError(f"`groups` must be at most the number of pixels H * W = {height * width}, got {groups}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {list(ACTIVATIONS)}, got {activation!r}")
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    chunk_size = batch * groups if batch_size is None else batch_size

    group_of_pixel, mean, flat = _pixel_groups(maps.to(images.device), (height, width), groups)
    fill = images.mean(dim=(2, 3), keepdim=True)
    jobs = torch.cartesian_prod(torch.arange(batch), torch.arange(groups)).to(images.device)
    probability = torch.empty(batch, groups, device=images.device)
    with preserved_rng(images.device), eval_mode(model):
        if target is None:
            target = torch.cat(
                [class_logits(model(part), output_key).argmax(dim=-1) for part in images.split(chunk_size)]
            )
        target = torch.as_tensor(target, device=images.device).long().expand(batch)
        for chunk in jobs.split(chunk_size):
            sample, group = chunk.unbind(dim=1)
            replaced = (group_of_pixel[sample] == group[:, None]).view(-1, 1, height, width)
            perturbed = torch.where(replaced, fill[sample], images[sample])
            logits = class_logits(model(perturbed), output_key).float()
            if int(target.min()) < 0 or int(target.max()) >= logits.shape[1]:
                raise ValueError(f"`target` values must be in [0, {logits.shape[1]}), got {target.tolist()}")
            probabilities = logits.softmax(dim=-1) if activation == "softmax" else logits.sigmoid()
            probability[sample, group] = probabilities.gather(1, target[sample][:, None]).squeeze(1)
    return _coefficient(mean, flat, probability)
