"""Pictures into an MLflow run as step-indexed image artifacts (``MlflowClient.log_image``, mlflow >= 2.12)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from lightning_rollout.sinks.base import check_image_args

__all__ = ["MLflowImageSink"]


class MLflowImageSink:
    """Logs pictures of an ``MLFlowLogger``'s run with ``MlflowClient.log_image(run_id, image, key=, step=)``.

    MLflow keeps them under the run's ``images/`` artifacts, one PNG (and a compressed preview) per key and
    step, the key's '/' written as '~'. MLflow images have no caption; ``caption`` is ignored.

    Args:
        logger: An ``MLFlowLogger`` (anything with ``experiment`` = an ``MlflowClient`` and ``run_id``).

    Raises:
        TypeError: If ``logger.experiment`` has no callable ``log_image``.

    Example::

        sink = MLflowImageSink(MLFlowLogger(tracking_uri="sqlite:///mlruns.db"))
        sink.log_image("attention/rollout/samples", grid, step=120)
    """

    def __init__(self, logger: Any) -> None:
        if not callable(getattr(logger.experiment, "log_image", None)):
            raise TypeError(
                "`logger.experiment` must be an MlflowClient with `log_image` (mlflow >= 2.12), got "
                f"{type(logger.experiment).__name__}."
            )
        self.logger = logger

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Log ``image`` (uint8, ``(H, W, 3)``) under the key ``tag`` at ``step``.

        Raises:
            TypeError: If ``image`` is not a numpy array.
            ValueError: If ``tag`` is empty, ``image`` is not uint8 ``(H, W, 3)`` or ``step`` is negative.
        """
        check_image_args(tag, image, step)
        client = self.logger.experiment
        client.log_image(self.logger.run_id, np.ascontiguousarray(image), key=tag, step=int(step))
