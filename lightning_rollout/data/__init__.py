"""Data modules for the user's own images."""

from lightning_rollout.data.image_folder import ImageFolderDataModule

__all__ = ["ImageFolderDataModule"]
