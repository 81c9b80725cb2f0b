"""Where rendered pictures go: one sink per attached logger.

A sink is anything with ``log_image(tag, image, step, caption=None)`` taking an RGB uint8 array of shape
``(H, W, 3)``. `sink_for_logger` picks the native sink of a Lightning logger:

================================  ===================================================================
logger                            sink
================================  ===================================================================
``TensorBoardLogger``             `TensorBoardImageSink` (any logger whose ``experiment`` has
                                  ``add_image``)
``WandbLogger``                   `WandbImageSink` (``wandb.Image`` with a caption)
``MLFlowLogger``                  `MLflowImageSink` (step-indexed image artifacts)
anything else (``CSVLogger``...)  ``None``: the callback writes `PNGImageSink` files instead
================================  ===================================================================

The W&B and MLflow sinks import nothing of their packages; the loggers do, when a picture is logged.
"""

from typing import Any, Optional

from lightning_rollout.sinks.base import ImageSink, VideoSink
from lightning_rollout.sinks.mlflow import MLflowImageSink
from lightning_rollout.sinks.png import PNGImageSink
from lightning_rollout.sinks.tensorboard import TensorBoardImageSink
from lightning_rollout.sinks.wandb import WandbImageSink

__all__ = [
    "ImageSink",
    "MLflowImageSink",
    "PNGImageSink",
    "TensorBoardImageSink",
    "VideoSink",
    "WandbImageSink",
    "sink_for_logger",
]


def _class_names(obj: Any) -> set:
    """Names of the classes ``obj`` is an instance of (the same for lightning.pytorch and pytorch_lightning)."""
    return {cls.__name__ for cls in type(obj).__mro__}


def sink_for_logger(logger: Any, image_format: str = "jpeg") -> Optional[ImageSink]:
    """The native image sink of a Lightning logger, or ``None`` when the logger cannot show images.

    Recognises ``WandbLogger`` and ``MLFlowLogger`` by class name (no import of ``wandb`` / ``mlflow``
    here) and TensorBoard by an ``experiment`` with ``add_image`` (which starts the logger's writer); the
    sink encodes pictures as ``image_format`` (``"jpeg"`` or ``"png"``).
    """
    names = _class_names(logger)
    if "WandbLogger" in names:
        return WandbImageSink(logger, image_format)
    if "MLFlowLogger" in names:
        return MLflowImageSink(logger, image_format)
    if "TensorBoardLogger" in names or callable(getattr(getattr(logger, "experiment", None), "add_image", None)):
        return TensorBoardImageSink(logger.experiment, image_format)
    return None
