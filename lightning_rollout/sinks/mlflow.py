"""Pictures into an MLflow run as step-indexed image artifacts (``MlflowClient.log_image``, mlflow >= 2.12)."""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np
from PIL import Image

from lightning_rollout.sinks.base import check_image_args, check_image_format, encode_image

__all__ = ["MLflowImageSink"]

PREVIEW_SIZE = 256
"""The longer side of the preview MLflow's image grid shows (as its own ``log_image`` makes)."""


class MLflowImageSink:
    """Logs pictures of an ``MLFlowLogger``'s run as step-indexed images under the run's ``images/`` artifacts.

    MLflow's image grid reads the key (its '/' written as '~'), the step and the time from each file's name
    (``{key}+step+{step}+timestamp+{ms}+{id}``) and shows a small ``...+compressed`` preview beside it.
    ``image_format="png"`` logs through ``MlflowClient.log_image(run_id, image, key=, step=)`` (a PNG and a
    WebP preview); ``"jpeg"`` writes the same two files as JPEG through ``log_artifact``, several times
    smaller on photographs. MLflow images have no caption; ``caption`` is ignored.

    Args:
        logger: An ``MLFlowLogger`` (anything with ``experiment`` = an ``MlflowClient`` and ``run_id``).
        image_format: ``"jpeg"`` or ``"png"``.

    Raises:
        TypeError: If ``logger.experiment`` has no callable ``log_image``.
        ValueError: If ``image_format`` is not ``"jpeg"`` or ``"png"``.

    Example:
        ```python
        sink = MLflowImageSink(MLFlowLogger(tracking_uri="sqlite:///mlruns.db"))
        sink.log_image("attention/rollout/samples", grid, step=120)
        ```
    """

    def __init__(self, logger: Any, image_format: str = "jpeg") -> None:
        if not callable(getattr(logger.experiment, "log_image", None)):
            raise TypeError(
                "`logger.experiment` must be an MlflowClient with `log_image` (mlflow >= 2.12), got "
                f"{type(logger.experiment).__name__}."
            )
        check_image_format(image_format)
        self.logger = logger
        self.image_format = image_format

    @classmethod
    def for_run(cls, client: Any, run_id: str, image_format: str = "jpeg") -> "MLflowImageSink":
        """A sink logging to the run ``run_id`` through ``client`` (an ``MlflowClient``), e.g. the active run
        of ``mlflow``'s fluent API, as Hugging Face's ``MLflowCallback`` starts it."""
        return cls(SimpleNamespace(experiment=client, run_id=run_id), image_format)

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Log ``image`` (uint8, ``(H, W, 3)``) under the key ``tag`` at ``step``.

        Raises:
            TypeError: If ``image`` is not a numpy array.
            ValueError: If ``tag`` is empty, ``image`` is not uint8 ``(H, W, 3)`` or ``step`` is negative.
        """
        check_image_args(tag, image, step)
        client = self.logger.experiment
        if self.image_format == "png":
            client.log_image(self.logger.run_id, np.ascontiguousarray(image), key=tag, step=int(step))
            return
        name = f"{tag.replace('/', '~')}+step+{int(step)}+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}"
        preview = Image.fromarray(np.ascontiguousarray(image))
        preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE))
        with tempfile.TemporaryDirectory() as folder:
            for file_name, picture in ((f"{name}.jpg", image), (f"{name}+compressed.jpg", np.asarray(preview))):
                path = os.path.join(folder, file_name)
                with open(path, "wb") as file:
                    file.write(encode_image(picture, "jpeg"))
                client.log_artifact(self.logger.run_id, path, artifact_path="images")
