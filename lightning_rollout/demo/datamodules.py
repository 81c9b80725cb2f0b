"""The demo's Lightning data modules: train and validation splits of the synthetic scenes."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from lightning_rollout.demo.scenes import SyntheticScenes, TwoObjectScenes

__all__ = ["SyntheticScenesDataModule", "TwoObjectScenesDataModule"]


class SyntheticScenesDataModule(LightningDataModule):
    """Train and validation splits of `SyntheticScenes`.

    Args:
        image_size: ``int`` or ``[height, width]`` in pixels.
        num_classes: number of classes, i.e. target colours (2 to 5).
        num_train: training samples (drawn once, then reused every epoch).
        num_val: validation samples.
        batch_size: samples per batch.
        num_workers: data loader workers.
        seed: seed of the scenes (the training order still follows the global seed).
        mean: per-channel (or single) normalisation mean.
        std: per-channel (or single) normalisation standard deviation.
        num_distractors: distractor objects per scene.
        target_area: ``[low, high]`` range of the target's area fraction.
        noise: per-pixel noise standard deviation.

    Batches are ``(images, labels, masks)`` of shapes ``(B, 3, H, W)``, ``(B,)`` and ``(B, H, W)``.

    Example:
        ```python
        data = SyntheticScenesDataModule(image_size=32, num_train=512, num_val=64)
        data.setup("fit")
        images, labels, masks = next(iter(data.val_dataloader()))
        ```
    """

    dataset_class: type[SyntheticScenes] = SyntheticScenes
    """The scenes of both splits."""

    def __init__(
        self,
        image_size: int | list[int] = 32,
        num_classes: int = 4,
        num_train: int = 8192,
        num_val: int = 512,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        mean: float | list[float] = 0.5,
        std: float | list[float] = 0.5,
        num_distractors: int = 3,
        target_area: list[float] = [0.06, 0.12],  # noqa: B006 (plain list for LightningCLI; never mutated)
        noise: float = 0.05,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"`num_workers` must be >= 0, got {num_workers}")
        self.save_hyperparameters()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._scene_args: dict[str, Any] = dict(
            image_size=image_size,
            num_classes=num_classes,
            num_distractors=num_distractors,
            target_area=tuple(target_area),
            noise=noise,
            seed=seed,
            mean=mean,
            std=std,
        )
        self._sizes = {"train": num_train, "val": num_val}
        # Build (and so validate) the splits now; they render lazily, so this is cheap.
        self.train_set = self.dataset_class(num_train, split="train", **self._scene_args)
        self.val_set = self.dataset_class(num_val, split="val", **self._scene_args)

    @property
    def num_classes(self) -> int:
        """The number of classes (known at construction, so a config can link it into the model)."""
        return self.train_set.num_classes

    @property
    def class_names(self) -> list[str]:
        """The target colours' names, in class order."""
        return self.train_set.class_names

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class TwoObjectScenesDataModule(SyntheticScenesDataModule):
    """Train and validation splits of `TwoObjectScenes` (multi-label), with the arguments of
    `SyntheticScenesDataModule`.

    Batches are ``(images, labels, masks)`` of shapes ``(B, 3, H, W)``, ``(B, C)`` (float multi-hot) and
    ``(B, C, H, W)`` (one mask per class).
    """

    dataset_class = TwoObjectScenes
