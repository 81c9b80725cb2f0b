"""The demo: synthetic scenes with ground-truth masks and a timm classifier module.

The library never imports this package; it only serves the demo config (``configs/demo.yaml``) and users who
want a ready LightningModule around a timm model.
"""

from lightning_rollout.demo.data import (
    ImageFolderDataModule,
    SyntheticScenes,
    SyntheticScenesDataModule,
    TwoObjectScenes,
    TwoObjectScenesDataModule,
)
from lightning_rollout.demo.module import TimmClassifier

__all__ = [
    "ImageFolderDataModule",
    "SyntheticScenes",
    "SyntheticScenesDataModule",
    "TimmClassifier",
    "TwoObjectScenes",
    "TwoObjectScenesDataModule",
]
