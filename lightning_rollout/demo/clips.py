"""Synthetic clips for the video demo: the class is the direction a target moves, with per-frame masks.

Every clip shows ``num_distractors + 1`` filled squares of one size (two by default) on a smooth textured background. One, the
*target*, moves in a straight line at a constant speed; the others stand still. The class is the target's
direction (right, left, down, up). All squares take their colours from one palette with the same odds, so no
single frame tells the target apart or says the class: a model has to compare frames, and a map that ignores
time cannot follow the target (it sits somewhere else in every frame). The target's mask in every frame says
where an explanation map should look then.

Every clip is a pure function of ``(seed, split, index)``: drawn from its own
``np.random.default_rng((seed, split_id, index))``, never touching the global numpy, torch or python RNG.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

__all__ = ["DIRECTIONS", "MovingTargetClips", "MovingTargetClipsDataModule"]

DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}
"""Class name → the target's (dy, dx) step direction."""

PALETTE = ((0.9, 0.2, 0.2), (0.2, 0.8, 0.2), (0.25, 0.35, 0.95), (0.95, 0.85, 0.2), (0.9, 0.9, 0.9))
"""Colours of all squares (target and distractors alike)."""

_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


class MovingTargetClips(Dataset):
    """Clips ``(T, 3, S, S)`` (normalised with ``mean``/``std``), labels (the direction) and masks ``(T, S, S)``.

    Args:
        num_clips: clips in the split.
        split: ``"train"``, ``"val"`` or ``"test"`` (different clips for the same seed).
        num_frames: frames per clip ``T``.
        image_size: side ``S`` in pixels.
        square: side of every square in pixels.
        speed: the target's step per frame in pixels (the same for every clip).
        num_distractors: standing squares per clip.
        noise: per-pixel noise standard deviation.
        seed: seed of the clips.
        mean: normalisation mean of the pixels (``(x - mean) / std``).
        std: normalisation std of the pixels.

    Raises:
        ValueError: when the target's path does not fit in the frame, or an argument is out of range.
    """

    def __init__(
        self,
        num_clips: int,
        split: str = "train",
        num_frames: int = 8,
        image_size: int = 32,
        square: int = 8,
        speed: float = 3.0,
        num_distractors: int = 1,
        noise: float = 0.03,
        seed: int = 0,
        mean: float = 0.5,
        std: float = 0.5,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"`split` must be one of {list(_SPLIT_IDS)}, got {split!r}")
        if num_clips < 1 or num_frames < 2 or num_distractors < 0 or std <= 0:
            raise ValueError(
                f"need `num_clips` >= 1, `num_frames` >= 2, `num_distractors` >= 0 and `std` > 0, got {num_clips}, "
                f"{num_frames}, {num_distractors}, {std}"
            )
        travel = speed * (num_frames - 1)
        if square + travel > image_size:
            raise ValueError(
                f"a square of {square} px moving {speed} px per frame over {num_frames} frames needs "
                f"{square + travel:.0f} px, more than `image_size`={image_size}"
            )
        self.num_clips, self.split = num_clips, split
        self.num_frames, self.image_size, self.square, self.speed = num_frames, image_size, square, speed
        self.num_distractors, self.noise, self.seed = num_distractors, noise, seed
        self.mean, self.std = mean, std
        self._cache: dict[int, tuple[np.ndarray, int, np.ndarray]] = {}  # rendered once, reused every epoch

    @property
    def class_names(self) -> list[str]:
        return list(DIRECTIONS)

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        if index not in self._cache:
            self._cache[index] = self.render(index)
        frames, label, masks = self._cache[index]
        clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div_(255.0)
        return (clip - self.mean) / self.std, label, torch.from_numpy(masks)

    def render(self, index: int) -> tuple[np.ndarray, int, np.ndarray]:
        """Clip ``index`` as uint8 frames ``(T, S, S, 3)``, its label and bool masks ``(T, S, S)``."""
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range for {self.num_clips} clips")
        rng = np.random.default_rng((self.seed, _SPLIT_IDS[self.split], index))
        label = int(rng.integers(len(DIRECTIONS)))
        dy, dx = list(DIRECTIONS.values())[label]
        size, side, travel = self.image_size, self.square, self.speed * (self.num_frames - 1)
        # The start: along the motion, room for the whole path; across it, anywhere.
        along = rng.uniform(0, size - side - travel)
        across = rng.uniform(0, size - side)
        if dy + dx < 0:  # left / up: start at the far end
            along += travel
        start = np.array([along, across]) if dy else np.array([across, along])
        step = self.speed * np.array([dy, dx], dtype=float)
        path = [start + t * step for t in range(self.num_frames)]
        standing = self._place_distractors(path, rng)
        background = self._background(rng)
        colours = [PALETTE[int(rng.integers(len(PALETTE)))] for _ in range(1 + len(standing))]
        frames = np.empty((self.num_frames, size, size, 3))
        masks = np.zeros((self.num_frames, size, size), dtype=bool)
        for t, position in enumerate(path):
            image = background.copy()
            for where, colour in zip(standing, colours[1:]):
                image[self._pixels(where)] = colour
            masks[t] = self._pixels(position)
            image[masks[t]] = colours[0]
            frames[t] = image + rng.normal(0.0, self.noise, size=image.shape)
        return np.clip(np.rint(frames * 255.0), 0, 255).astype(np.uint8), label, masks

    def _pixels(self, corner: np.ndarray) -> np.ndarray:
        """Pixels of the square with top-left ``corner`` (subpixel: the pixels whose centres fall inside)."""
        centres = np.arange(self.image_size) + 0.5
        rows = (centres >= corner[0]) & (centres < corner[0] + self.square)
        cols = (centres >= corner[1]) & (centres < corner[1] + self.square)
        return rows[:, None] & cols[None, :]

    def _place_distractors(self, path: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
        """Top-left corners of standing squares that overlap neither the target's path nor each other."""
        placed: list[np.ndarray] = []
        for _ in range(200):
            if len(placed) == self.num_distractors:
                break
            corner = rng.uniform(0, self.image_size - self.square, size=2)
            if all(np.abs(corner - other).max() >= self.square + 1 for other in path + placed):
                placed.append(corner)
        return placed

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        """A smooth mid-tone colour texture in ``[0.3, 0.55]`` (a coarse 4×4 grid, bilinearly upsampled)."""
        coarse = torch.from_numpy(rng.uniform(0.3, 0.55, size=(1, 3, 4, 4)))
        fine = torch.nn.functional.interpolate(coarse, size=(self.image_size,) * 2, mode="bilinear", align_corners=True)
        return fine[0].permute(1, 2, 0).numpy()


class MovingTargetClipsDataModule(LightningDataModule):
    """Train and validation splits of `MovingTargetClips`.

    Args:
        num_train: training clips (drawn once, then reused every epoch).
        num_val: validation clips.
        batch_size: clips per batch.
        num_workers: data loader workers.
        **clip_args: the other arguments of `MovingTargetClips` (``num_frames``, ``image_size``,
            ``square``, ``speed``, ``num_distractors``, ``noise``, ``seed``, ``mean``, ``std``).

    Batches are ``(clips, labels, masks)`` of shapes ``(B, T, 3, S, S)``, ``(B,)`` and ``(B, T, S, S)``.
    """

    def __init__(
        self,
        num_train: int = 1024,
        num_val: int = 128,
        batch_size: int = 32,
        num_workers: int = 0,
        num_frames: int = 8,
        image_size: int = 32,
        square: int = 8,
        speed: float = 3.0,
        num_distractors: int = 1,
        noise: float = 0.03,
        seed: int = 0,
        mean: float = 0.5,
        std: float = 0.5,
    ) -> None:
        super().__init__()
        if batch_size < 1 or num_workers < 0:
            raise ValueError(f"need `batch_size` >= 1 and `num_workers` >= 0, got {batch_size} and {num_workers}")
        self.save_hyperparameters()
        self.batch_size, self.num_workers = batch_size, num_workers
        args: dict[str, Any] = dict(
            num_frames=num_frames,
            image_size=image_size,
            square=square,
            speed=speed,
            num_distractors=num_distractors,
            noise=noise,
            seed=seed,
            mean=mean,
            std=std,
        )
        self.train_set = MovingTargetClips(num_train, "train", **args)
        self.val_set = MovingTargetClips(num_val, "val", **args)

    @property
    def class_names(self) -> list[str]:
        return self.train_set.class_names

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)
