"""The fixed batch: where images, labels and masks sit in a user's batch, and the samples kept."""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor

BatchKey = Union[int, str, None]

_DEFAULT_KEYS = {"image": (0, "image"), "label": (1, "label"), "mask": (2, "mask")}


def check_key(argument: str, key: BatchKey) -> None:
    """Raises ``ValueError`` unless ``key`` is ``None``, an int index or a str dict key."""
    if key is not None and (isinstance(key, bool) or not isinstance(key, (int, str))):
        raise ValueError(f"`{argument}` must be None (default layout), an int index or a str key, got {key!r}")


def _find(batch: Any, key: BatchKey, field: str) -> Optional[Tensor]:
    if key is None:
        index, name = _DEFAULT_KEYS[field]
        if isinstance(batch, dict):
            value = batch.get(name)
        elif isinstance(batch, (tuple, list)):
            value = batch[index] if index < len(batch) else None
        else:
            value = batch if field == "image" else None
    else:
        try:
            value = batch[key]
        except (KeyError, IndexError, TypeError):
            value = None
    if value is not None and not isinstance(value, Tensor):
        raise ValueError(f"the {field} at `{field}_key`={key!r} is a {type(value).__name__}, not a tensor")
    return value


def _pick(batch: Any, key: BatchKey, field: str) -> Tensor:
    value = _find(batch, key, field)
    if value is None:
        raise ValueError(
            f"found no {field} at `{field}_key`={key!r} in a batch of type {type(batch).__name__}; the default "
            f"layout is (images, labels[, masks]) or a dict with keys 'image', 'label', 'mask'"
        )
    return value


def _pick_optional(batch: Any, key: BatchKey, field: str) -> Optional[Tensor]:
    """The field at an explicit ``key`` must be there; at the default place it may be missing."""
    return _find(batch, key, field) if key is None else _pick(batch, key, field)


@dataclass
class FixedBatch:
    """The samples explained every epoch, kept on the CPU.

    Attributes:
        images: ``(B, C, H, W)`` as the model receives them (normalised); clips ``(B, T, C, H, W)`` for video.
        labels: ``(B,)`` class indices, or ``None`` when the batch has none.
        masks: ``(B, H, W)`` object masks (per class ``(B, C, H, W)``; per frame ``(B, T, H, W)`` for clips), or
            ``None``.
    """

    images: Tensor
    labels: Optional[Tensor] = None
    masks: Optional[Tensor] = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def extend(self, other: "FixedBatch", limit: int) -> "FixedBatch":
        """Appends ``other``'s samples, keeping at most ``limit``."""

        def cat(a: Optional[Tensor], b: Optional[Tensor]) -> Optional[Tensor]:
            return None if a is None or b is None else torch.cat([a, b])[:limit]

        return FixedBatch(
            torch.cat([self.images, other.images])[:limit], cat(self.labels, other.labels), cat(self.masks, other.masks)
        )

    def select(self, index: Union[slice, Tensor]) -> "FixedBatch":
        """The samples at ``index`` (a slice or a LongTensor of positions)."""

        def pick(value: Optional[Tensor]) -> Optional[Tensor]:
            return None if value is None else value[index]

        return FixedBatch(self.images[index], pick(self.labels), pick(self.masks))

    def state_dict(self) -> Dict[str, Optional[Tensor]]:
        return {"images": self.images, "labels": self.labels, "masks": self.masks}


def pick_labels(batch: Any, label_key: BatchKey = None) -> Optional[Tensor]:
    """The labels of ``batch`` (not copied), or ``None`` when it has none at the default place.

    Raises:
        ValueError: if an explicit ``label_key`` finds nothing, or the labels are not a tensor.
    """
    return _pick_optional(batch, label_key, "label")


def count_samples(batch: Any, image_key: BatchKey = None) -> int:
    """The number of images in ``batch`` (``images.shape[0]``), without copying anything."""
    return _pick(batch, image_key, "image").shape[0]


def take_samples(
    batch: Any,
    limit: int,
    image_key: BatchKey = None,
    label_key: BatchKey = None,
    mask_key: BatchKey = None,
    start: int = 0,
    indices: Optional[Sequence[int]] = None,
) -> FixedBatch:
    """Copies up to ``limit`` samples of a batch, from sample ``start`` on (or those at ``indices``), to the CPU.

    Args:
        batch: a tuple/list ``(images, labels[, masks])``, a dict with ``image``/``label``/``mask`` keys,
            a bare image tensor, or any indexable batch with explicit keys.
        limit: the most samples to keep.
        image_key: where the images sit (``None``: the default layout).
        label_key: where the labels sit (``None``: the default layout).
        mask_key: where the object masks sit (``None``: the default layout).
        start: the first sample to copy.
        indices: the samples to copy instead (``limit`` and ``start`` are then ignored).

    Raises:
        ValueError: if no image tensor is found, or a field is not a tensor of the batch's length.
    """
    images = _pick(batch, image_key, "image")
    labels = _pick_optional(batch, label_key, "label")
    masks = _pick_optional(batch, mask_key, "mask")
    if images.dim() not in (4, 5):
        raise ValueError(
            f"images must be (B, C, H, W) (clips: (B, T, C, H, W)), got shape {tuple(images.shape)} at "
            f"`image_key`={image_key!r}"
        )
    if masks is not None and masks.dim() == images.dim() and masks.shape[-3] == 1:
        masks = masks.squeeze(-3)  # (B, 1, H, W), or (B, T, 1, H, W) for clips
    if masks is not None and images.dim() == 5 and (masks.dim() != 4 or masks.shape[1] != images.shape[1]):
        raise ValueError(
            f"the masks of clips {tuple(images.shape)} must be per frame (B, T, H, W), got shape "
            f"{tuple(masks.shape)} at `mask_key`={mask_key!r}"
        )
    for name, value in (("label", labels), ("mask", masks)):
        if value is not None and value.shape[0] != images.shape[0]:
            raise ValueError(f"the batch has {images.shape[0]} images but {value.shape[0]} {name}s")

    rows = slice(start, start + limit) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)

    def keep(value: Tensor) -> Tensor:
        return value[rows.to(value.device) if isinstance(rows, Tensor) else rows].detach().to("cpu", copy=True)

    return FixedBatch(keep(images), None if labels is None else keep(labels), None if masks is None else keep(masks))


def is_class_indices(labels: Tensor) -> bool:
    """Whether ``labels`` hold one integer class index per sample, shape ``(B,)``."""
    return labels.dim() == 1 and not labels.is_floating_point() and labels.dtype != torch.bool
