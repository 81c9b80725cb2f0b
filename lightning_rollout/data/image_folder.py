"""The user's own images as a Lightning data module: one folder per class, names from the folders."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "TRAIN_AUGMENTATIONS", "ImageFolderDataModule", "channel_values"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channel_values(value: float | Sequence[float], name: str) -> tuple[float, float, float]:
    """`value` as 3 per-channel floats (one float is repeated).

    Raises:
        ValueError: naming `name`, unless `value` is a float or 3 floats.
    """
    values = (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    if len(values) != 3:
        raise ValueError(f"`{name}` must be a float or 3 floats, got {value!r}")
    return values


TRAIN_AUGMENTATIONS = ("crop_flip", "flip", "none")


def _interleaved(labels: Sequence[int]) -> list[int]:
    """Indices taking the classes in turn (the first of each class, then the second of each, ...), so that the
    first validation batches, hence the sanity check, show every class instead of the first folder's."""
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    rounds = max((len(indices) for indices in by_class.values()), default=0)
    return [indices[turn] for turn in range(rounds) for indices in by_class.values() if turn < len(indices)]


class ImageFolderDataModule(LightningDataModule):
    """The user's own images: ``root/train/<class>/*`` and ``root/val/<class>/*``.

    The classes are the class folders, in sorted order (as torchvision's ``ImageFolder`` numbers them):
    `num_classes` and `class_names` come from there, read from ``root/train`` when first asked (so
    right after construction, before `setup`: a LightningCLI config links ``data.num_classes`` into the
    model), and `AttentionRolloutCallback` captions its pictures with the folder names.

    Args:
        root: folder holding ``train/`` and ``val/``, each with one sub-folder per class.
        image_size: side of the square images fed to the model.
        batch_size: samples per batch.
        num_workers: data loader workers.
        mean: per-channel normalisation mean (ImageNet's by default).
        std: per-channel normalisation standard deviation (ImageNet's by default).
        train_augmentation: ``"crop_flip"`` (a random resized crop and a horizontal flip), ``"flip"`` (a
            horizontal flip of the validation view) or ``"none"`` (the validation view: for data where crops
            or mirror images change the class, e.g. digits).

    Validation images (and training images without the crop) are resized (to ``image_size / 0.875``) and
    centre-cropped; validation batches take the classes in turn (not folder after folder), so the sanity check
    already meets every class. Batches are ``(images, labels)``.

    Raises:
        ValueError: on a bad argument; in `setup`, when ``train/`` and ``val/`` hold different class
            folders, or the model being trained has a ``num_classes`` other than the number of class folders.
        FileNotFoundError: naming ``root``, from `num_classes` and `class_names` if ``root/train``
            is missing or holds no class folder, and from `setup` if ``root/train`` or ``root/val`` is
            missing.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 224,
        batch_size: int = 32,
        num_workers: int = 0,
        mean: list[float] = list(IMAGENET_MEAN),  # noqa: B006 (plain list for LightningCLI; never mutated)
        std: list[float] = list(IMAGENET_STD),  # noqa: B006  (a plain list for LightningCLI; never mutated)
        train_augmentation: str = "crop_flip",
    ) -> None:
        super().__init__()
        if image_size < 1:
            raise ValueError(f"`image_size` must be >= 1, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        if train_augmentation not in TRAIN_AUGMENTATIONS:
            raise ValueError(
                f"`train_augmentation` must be one of {list(TRAIN_AUGMENTATIONS)}, got {train_augmentation!r}"
            )
        self.save_hyperparameters()
        self.root = root
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.mean = list(channel_values(mean, "mean"))
        self.std = list(channel_values(std, "std"))
        self.train_augmentation = train_augmentation
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self._classes: list[str] | None = None

    def setup(self, stage: str | None = None) -> None:
        from torchvision import datasets, transforms

        root = Path(self.root)
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise FileNotFoundError(
                    f"`root`={self.root!r} must hold a `{split}/` folder of class folders; {root / split} is missing"
                )
        normalize = transforms.Normalize(self.mean, self.std)
        view = [transforms.Resize(int(round(self.image_size / 0.875))), transforms.CenterCrop(self.image_size)]
        augmentation = {
            "crop_flip": [transforms.RandomResizedCrop(self.image_size), transforms.RandomHorizontalFlip()],
            "flip": view + [transforms.RandomHorizontalFlip()],
            "none": view,
        }[self.train_augmentation]
        train_tf = transforms.Compose(augmentation + [transforms.ToTensor(), normalize])
        val_tf = transforms.Compose(view + [transforms.ToTensor(), normalize])
        train_set = datasets.ImageFolder(str(root / "train"), transform=train_tf)
        val_set = datasets.ImageFolder(str(root / "val"), transform=val_tf)
        classes = self._classes = list(train_set.classes)
        if val_set.classes != classes:
            raise ValueError(
                f"`root`={self.root!r}: train/ holds the class folders {classes} but val/ holds "
                f"{val_set.classes}; both need the same folders (the labels are their sorted positions)"
            )
        self.train_set = train_set
        self.val_set = Subset(val_set, _interleaved(val_set.targets))
        if len(classes) == 1:
            warnings.warn(
                f"`root`={self.root!r} holds a single class folder ({classes[0]!r}): a classifier learns nothing "
                "from it and the explanation maps and AUCs say nothing; add a folder per class",
                UserWarning,
                stacklevel=2,
            )
        model = self.trainer.lightning_module if self.trainer is not None else None
        expected = (getattr(model, "hparams", None) or {}).get("num_classes")
        if isinstance(expected, int) and expected != len(classes):
            raise ValueError(
                f"the model has `num_classes`={expected} but `root`={self.root!r} holds {len(classes)} class "
                f"folders ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''}); set the model's "
                f"`num_classes` to {len(classes)}"
            )

    @property
    def num_classes(self) -> int:
        """The number of class folders in ``root/train``."""
        return len(self._class_folders())

    @property
    def class_names(self) -> list[str]:
        """The class folders' names, in label order (sorted, as ``ImageFolder`` numbers them)."""
        return list(self._class_folders())

    def _class_folders(self) -> list[str]:
        """The sorted class folders of ``root/train``, read once (only the folder names, no image is opened)."""
        if self._classes is None:
            train = Path(self.root) / "train"
            if not train.is_dir():
                raise FileNotFoundError(
                    f"`root`={self.root!r} must hold a `train/` folder of class folders; {train} is missing"
                )
            classes = sorted(entry.name for entry in os.scandir(train) if entry.is_dir())
            if not classes:
                raise FileNotFoundError(f"`root`={self.root!r}: {train} holds no class folder (one per class)")
            self._classes = classes
        return self._classes

    def train_dataloader(self) -> DataLoader:
        if self.train_set is None:
            self.setup("fit")
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        if self.val_set is None:
            self.setup("validate")
        return self._loader(self.val_set, shuffle=False)

    def _loader(self, dataset: Dataset | None, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,  # type: ignore[arg-type]  # a Subset is a Dataset
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
