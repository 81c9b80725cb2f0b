"""Pictures into a Weights & Biases run, through ``WandbLogger.log_image`` or a plain run's ``log``.

``wandb`` itself is imported only when a picture is logged: by the logger, or here for a plain run.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from lightning_rollout.sinks.base import check_image_args, check_image_format

__all__ = ["WandbImageSink"]


class WandbImageSink:
    """Logs pictures as ``wandb.Image`` entries of a ``WandbLogger``'s run, at the Trainer's global step.

    The logger files each entry with ``trainer/global_step`` = ``step``, so the pictures line up with the
    loss curves on W&B's step axis; ``caption`` is shown under the picture.

    Args:
        logger: A ``WandbLogger`` of ``lightning.pytorch`` or ``pytorch_lightning`` (anything with its
            ``log_image(key, images, step, caption=...)``).
        image_format: ``"jpeg"`` (``wandb.Image(..., file_type="jpg")``) or ``"png"``.

    Raises:
        TypeError: If ``logger`` has no callable ``log_image``.
        ValueError: If ``image_format`` is not ``"jpeg"`` or ``"png"``.

    Example:
        ```python
        sink = WandbImageSink(WandbLogger(project="vit", offline=True))
        sink.log_image("attention/rollout/samples", grid, step=120, caption="0: true red | pred red")
        ```
    """

    def __init__(self, logger: Any, image_format: str = "jpeg") -> None:
        if not callable(getattr(logger, "log_image", None)):
            raise TypeError(f"`logger` must be a WandbLogger (with `log_image`), got {type(logger).__name__}.")
        check_image_format(image_format)
        self.logger = logger
        self.image_format = image_format

    @classmethod
    def for_run(cls, run: Any, image_format: str = "jpeg", step_metric: str = "train/global_step") -> "WandbImageSink":
        """A sink logging to a plain ``wandb`` run (e.g. ``wandb.run``, as Hugging Face's ``WandbCallback`` starts
        it): each picture is one ``run.log({tag: wandb.Image(...), step_metric: step})``, so that it lines up
        on the axis ``step_metric`` (the one ``WandbCallback`` defines).

        Raises:
            TypeError: If ``run`` has no callable ``log``.
        """
        if not callable(getattr(run, "log", None)):
            raise TypeError(f"`run` must be a wandb run (with `log`), got {type(run).__name__}.")
        return cls(_RunImages(run, step_metric), image_format)

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Log ``image`` (uint8, ``(H, W, 3)``) under the key ``tag`` at ``step``.

        Raises:
            TypeError: If ``image`` is not a numpy array.
            ValueError: If ``tag`` is empty, ``image`` is not uint8 ``(H, W, 3)`` or ``step`` is negative.
        """
        check_image_args(tag, image, step)
        extra = {"file_type": ["jpg" if self.image_format == "jpeg" else "png"]}
        if caption is not None:
            extra["caption"] = [caption]
        self.logger.log_image(key=tag, images=[np.ascontiguousarray(image)], step=int(step), **extra)


class _RunImages:
    """A plain ``wandb`` run behind ``WandbLogger.log_image``'s signature; the step goes in as ``step_metric``."""

    def __init__(self, run: Any, step_metric: str) -> None:
        self.run = run
        self.step_metric = step_metric

    def log_image(self, key: str, images: List[np.ndarray], step: int, **kwargs: List[Any]) -> None:
        import wandb

        per_image: List[Dict[str, Any]] = [
            {name: values[i] for name, values in kwargs.items()} for i in range(len(images))
        ]
        pictures = [wandb.Image(image, **options) for image, options in zip(images, per_image)]
        self.run.log({key: pictures, self.step_metric: step})
