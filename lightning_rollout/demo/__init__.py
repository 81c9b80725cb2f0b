"""The demo: synthetic scenes with ground-truth masks and a timm classifier module.

The library never imports this package; it only serves the demo config (``configs/demo.yaml``) and users who
want a ready LightningModule around a timm model.
"""

from lightning_rollout.core.deprecation import moved_names
from lightning_rollout.demo.data import (
    SyntheticScenes,
    SyntheticScenesDataModule,
    TwoObjectScenes,
    TwoObjectScenesDataModule,
)
from lightning_rollout.demo.module import TimmClassifier

__all__ = [
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "TimmClassifier",
    "TwoObjectScenes",
    "TwoObjectScenesDataModule",
]

# Moved to `lightning_rollout.data` (the library never imports the demo); the old path warns for one release.
__getattr__ = moved_names(__name__, {"ImageFolderDataModule": "lightning_rollout.data"})
