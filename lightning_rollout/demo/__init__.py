"""The demo: synthetic scenes with ground-truth masks and a timm classifier module.

``shapes`` (the shapes and their extents) and ``canvas`` (palette, background, paint, noise) → ``scenes`` (the
data sets) → ``datamodules`` (their Lightning data modules); ``module`` holds the classifier.

The library never imports this package; it only serves the demo config (``configs/demo.yaml``) and users who
want a ready LightningModule around a timm model.
"""

from lightning_rollout.core.deprecation import moved_names
from lightning_rollout.demo.canvas import COLOURS
from lightning_rollout.demo.datamodules import SyntheticScenesDataModule, TwoObjectScenesDataModule
from lightning_rollout.demo.module import TimmClassifier
from lightning_rollout.demo.scenes import SyntheticScenes, TwoObjectScenes

__all__ = [
    "COLOURS",
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "TimmClassifier",
    "TwoObjectScenes",
    "TwoObjectScenesDataModule",
]

# Moved to `lightning_rollout.data` (the library never imports the demo); the old path warns for one release.
__getattr__ = moved_names(__name__, {"ImageFolderDataModule": "lightning_rollout.data"})
