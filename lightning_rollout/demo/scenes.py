"""The demo's data sets: synthetic scenes with ground-truth masks, one target (`SyntheticScenes`) or two
(`TwoObjectScenes`) per scene.

`SyntheticScenes` draws one *target*, a filled shape whose colour decides the class, plus hollow or thin
distractor shapes, on a mid-tone textured background. Target and distractors take their colours from the same
palette (each in a light or a dark shade with equal odds), so neither colour nor brightness tells the target
apart: a model has to find the one shape from the target set and read its colour, and the mask of the target
says where an explanation map should look. The colour fills the whole target, so the evidence lies inside the
mask, not only along its border.

Every sample is a pure function of ``(seed, split, index)``: it is drawn from its own
``np.random.default_rng((seed, split_id, index))`` and never touches the global numpy, torch or python RNG.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lightning_rollout.data.image_folder import channel_values
from lightning_rollout.demo.canvas import COLOURS, background, finish, paint
from lightning_rollout.demo.shapes import DISTRACTOR_SHAPES, TARGET_SHAPES

__all__ = ["SyntheticScenes", "TwoObjectScenes"]


_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 3}
# In table order: a sample draws an index into these, so reordering the tables changes every sample.
_TARGETS = list(TARGET_SHAPES.values())
_DISTRACTORS = list(DISTRACTOR_SHAPES.values())


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(int(v) for v in value)
    if len(pair) != 2 or min(pair) < 16:
        raise ValueError(f"`{name}` must be an int or a pair of ints, each >= 16, got {value!r}")
    return pair[0], pair[1]


class SyntheticScenes(Dataset):
    """Scenes of one filled target among hollow or thin distractors, the target's colour being the class, with its mask.

    Args:
        size: number of samples.
        image_size: ``int`` or ``(height, width)`` in pixels (each at least 16).
        num_classes: number of classes, the first ``num_classes`` colours of `COLOURS` (red, green,
            blue, yellow, magenta); targets and distractors are painted from these colours only.
        num_distractors: distractor objects per scene (fewer when they do not fit).
        target_area: range of the target's area as a fraction of the image, drawn uniformly.
        noise: standard deviation of the per-pixel noise, in ``[0, 1]`` intensity units.
        seed: seed of the whole data set.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``: each split draws different scenes.
        mean: per-channel (or single) mean subtracted from the ``[0, 1]`` image.
        std: per-channel (or single) standard deviation the image is divided by.
        cache: keep rendered samples (as 8-bit images) in memory after their first use.

    Items are ``(image, label, mask)``: a ``(3, H, W)`` float32 image, an int label and a ``(H, W)`` bool mask
    of the target's pixels.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        ```python
        scenes = SyntheticScenes(8, image_size=32, num_classes=4, seed=0, split="val")
        image, label, mask = scenes[0]
        ```
    """

    def __init__(
        self,
        size: int,
        image_size: int | Sequence[int] = 32,
        num_classes: int = 4,
        num_distractors: int = 3,
        target_area: Sequence[float] = (0.06, 0.12),
        distractor_scale: Sequence[float] = (0.7, 1.1),
        noise: float = 0.05,
        seed: int = 0,
        split: str = "train",
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.5,
        cache: bool = True,
    ) -> None:
        if size < 0:
            raise ValueError(f"`size` must be >= 0, got {size}")
        if not 2 <= num_classes <= len(COLOURS):
            raise ValueError(f"`num_classes` must be in [2, {len(COLOURS)}], got {num_classes}")
        if num_distractors < 0:
            raise ValueError(f"`num_distractors` must be >= 0, got {num_distractors}")
        low, high = (float(v) for v in target_area)
        if not 0.0 < low <= high <= 0.5:
            raise ValueError(f"`target_area` must satisfy 0 < low <= high <= 0.5, got {target_area!r}")
        d_low, d_high = (float(v) for v in distractor_scale)
        if not 0.0 < d_low <= d_high:
            raise ValueError(f"`distractor_scale` must satisfy 0 < low <= high, got {distractor_scale!r}")
        if noise < 0:
            raise ValueError(f"`noise` must be >= 0, got {noise}")
        if seed < 0:
            raise ValueError(f"`seed` must be >= 0, got {seed}")
        if split not in _SPLIT_IDS:
            raise ValueError(f"`split` must be one of {sorted(_SPLIT_IDS)}, got {split!r}")
        std_values = channel_values(std, "std")
        if min(std_values) <= 0:
            raise ValueError(f"`std` must be > 0, got {std!r}")

        self.size = int(size)
        self.image_size = _pair(image_size, "image_size")
        self.num_classes = int(num_classes)
        self.num_distractors = int(num_distractors)
        self.target_area = (low, high)
        self.distractor_scale = (d_low, d_high)
        self.noise = float(noise)
        self.seed = int(seed)
        self.split = split
        self.mean = torch.tensor(channel_values(mean, "mean"), dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std_values, dtype=torch.float32).view(3, 1, 1)
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, int, np.ndarray]] = {}

        height, width = self.image_size
        self._dy = np.arange(height, dtype=np.float64)[:, None] + 0.5
        self._dx = np.arange(width, dtype=np.float64)[None, :] + 0.5

    @property
    def class_names(self) -> list[str]:
        """Names of the target colours, in class order."""
        return list(COLOURS)[: self.num_classes]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if not -self.size <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        index = index % self.size
        sample = self._cache.get(index)
        if sample is None:
            sample = self.render(index)
            if self.cache:
                self._cache[index] = sample
        pixels, label, mask = sample
        image = torch.from_numpy(pixels).permute(2, 0, 1).float().div_(255.0)
        image = (image - self.mean) / self.std
        return image, label, torch.from_numpy(mask)

    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Draw sample ``index``: an ``(H, W, 3)`` uint8 image, its label and the ``(H, W)`` bool target mask."""
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], int(index)))
        height, width = self.image_size
        image = background(height, width, rng)

        label = int(rng.integers(self.num_classes))
        area = rng.uniform(*self.target_area) * height * width
        scale = math.sqrt(area) / 2.0
        shape = _TARGETS[int(rng.integers(len(_TARGETS)))]
        half = shape.half(scale)
        cy = rng.uniform(half, height - half)
        cx = rng.uniform(half, width - half)
        placed = [(cy, cx, half)]
        mask = shape.draw(self._dy - cy, self._dx - cx, scale, rng)
        paint(image, mask, label, rng)

        self._add_distractors(image, placed, scale, mask, rng)
        return finish(image, self.noise, rng), label, mask

    def _place(self, half: float, placed: list[tuple[float, float, float]], rng: np.random.Generator):
        """A centre ``(y, x)`` for an object of half-extent ``half`` clear of the ``placed`` ones, or ``None``.

        Objects are kept apart by their (square) extents plus a one-pixel gap; 30 tries.
        """
        height, width = self.image_size
        for _attempt in range(30):
            y = rng.uniform(half, height - half)
            x = rng.uniform(half, width - half)
            if all(max(abs(y - py), abs(x - px)) > half + h + 1.0 for py, px, h in placed):
                placed.append((y, x, half))
                return y, x
        return None

    def _room_beside(self, placed: tuple[float, float, float]) -> bool:
        """Whether an object small enough is clear of the ``placed`` one, as `_place` keeps them apart."""
        y, x, half = placed
        height, width = self.image_size
        return max(y, height - y, x, width - x) > half + 1.0

    def _add_distractors(
        self,
        image: np.ndarray,
        placed: list[tuple[float, float, float]],
        scale: float,
        targets: np.ndarray,
        rng: np.random.Generator,
    ) -> None:
        """Paint ``num_distractors`` distractors (those that fit) of about ``scale``, never over ``targets``."""
        height, width = self.image_size
        for _ in range(self.num_distractors):
            shape = _DISTRACTORS[int(rng.integers(len(_DISTRACTORS)))]
            d_scale = scale * rng.uniform(*self.distractor_scale)
            d_half = shape.half(d_scale)
            if 2 * d_half >= min(height, width):
                continue
            centre = self._place(d_half, placed, rng)
            if centre is not None:
                pixels = shape.draw(self._dy - centre[0], self._dx - centre[1], d_scale, rng)
                paint(image, pixels & ~targets, int(rng.integers(self.num_classes)), rng)


class TwoObjectScenes(SyntheticScenes):
    """Multi-label scenes: two filled targets of two different classes among the distractors, a mask per class.

    Built like `SyntheticScenes` (same arguments, shapes, palette, background and noise): each target is
    a filled shape painted in its class's colour, drawn at an area from ``target_area``, and the two are kept
    apart, so every pixel of a mask belongs to one object. A map explaining one class should put its mass on
    that class's object, not the other's (see `class_discrimination`).

    Items are ``(image, labels, masks)``: a ``(3, H, W)`` float32 image, ``(num_classes,)`` float32 multi-hot
    labels (two ones) and ``(num_classes, H, W)`` bool masks, all-false for the absent classes.

    Example:
        ```python
        scenes = TwoObjectScenes(8, image_size=48, num_classes=4, seed=0, split="val")
        image, labels, masks = scenes[0]  # labels e.g. [1., 0., 0., 1.]; masks[0] and masks[3] hold the objects
        ```
    """

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # type: ignore[override]  # multi-hot labels instead of one class
        image, labels, masks = super().__getitem__(index)
        return image, torch.from_numpy(labels), masks

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[override]  # multi-hot labels instead of one class
        """Draw sample ``index``: an ``(H, W, 3)`` uint8 image, ``(C,)`` float32 multi-hot labels and
        ``(C, H, W)`` bool masks."""
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], int(index)))
        height, width = self.image_size
        image = background(height, width, rng)
        labels = np.zeros(self.num_classes, dtype=np.float32)
        masks = np.zeros((self.num_classes, height, width), dtype=bool)
        placed: list[tuple[float, float, float]] = []
        scales = []
        for label in rng.choice(self.num_classes, size=2, replace=False):
            scale = math.sqrt(rng.uniform(*self.target_area) * height * width) / 2.0
            shape = _TARGETS[int(rng.integers(len(_TARGETS)))]
            centre = self._place(shape.half(scale), placed, rng)
            if centre is None and not self._room_beside(placed[0]):
                raise ValueError(
                    f"`target_area`={self.target_area} is too large for two objects in a {height}x{width} image: "
                    f"sample {index}'s first target leaves no room for the second; lower `target_area`"
                )
            while centre is None:  # no room beside the first target: shrink the second until it fits
                scale *= 0.8
                centre = self._place(shape.half(scale), placed, rng)
            masks[label] = shape.draw(self._dy - centre[0], self._dx - centre[1], scale, rng)
            labels[label] = 1.0
            scales.append(scale)
            paint(image, masks[label], int(label), rng)
        self._add_distractors(image, placed, sum(scales) / 2.0, np.asarray(masks.any(axis=0)), rng)
        return finish(image, self.noise, rng), labels, masks
