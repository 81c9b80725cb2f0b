"""Pictures into TensorBoard event files."""

from __future__ import annotations

import importlib.util
from typing import Any, Optional

import numpy as np
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter

from lightning_rollout.sinks.base import check_image_args, check_image_format, encode_image

__all__ = ["TensorBoardImageSink"]


class TensorBoardImageSink:
    """Logs pictures through a TensorBoard ``SummaryWriter`` (or anything with the same ``add_image``).

    With a ``SummaryWriter`` the picture is written as the image summary ``add_image`` writes, but encoded
    as ``image_format``: TensorBoard's image plugin tells JPEG from PNG by the bytes and shows both.

    Args:
        writer: The writer, e.g. ``TensorBoardLogger.experiment``.
        image_format: ``"jpeg"`` or ``"png"`` (see `IMAGE_FORMATS`).

    Raises:
        TypeError: If ``writer`` has no callable ``add_image``.
        ValueError: If ``image_format`` is not ``"jpeg"`` or ``"png"``.

    Example:
        ```python
        sink = TensorBoardImageSink(SummaryWriter("runs/demo"))
        sink.log_image("rollout/overlays", grid, step=3)
        ```
    """

    def __init__(self, writer: Any, image_format: str = "jpeg") -> None:
        if not callable(getattr(writer, "add_image", None)):
            raise TypeError(
                f"`writer` must have an `add_image` method (e.g. a SummaryWriter), got {type(writer).__name__}."
            )
        check_image_format(image_format)
        self.writer = writer
        self.image_format = image_format

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Write ``image`` (uint8, ``(H, W, 3)``) to TensorBoard under ``tag`` at ``step``.

        TensorBoard images have no caption; ``caption`` is ignored (the callback draws captions into the
        pictures).

        Raises:
            TypeError: If ``image`` is not a numpy array.
            ValueError: If ``tag`` is empty, ``image`` is not uint8 ``(H, W, 3)`` or ``step`` is negative.
        """
        check_image_args(tag, image, step)
        if not isinstance(self.writer, SummaryWriter):
            self.writer.add_image(tag, image, global_step=int(step), dataformats="HWC")
            return
        height, width = image.shape[:2]
        encoded = encode_image(image, self.image_format)
        picture = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=encoded)
        summary = Summary(value=[Summary.Value(tag=tag, image=picture)])
        self.writer._get_file_writer().add_summary(summary, int(step))  # noqa: SLF001  (SummaryWriter exposes its file writer only privately)

    def can_log_video(self) -> bool:
        """Whether `log_video` works: the writer has ``add_video`` and ``moviepy`` (which TensorBoard's
        ``add_video`` needs to encode the GIF) is installed."""
        return callable(getattr(self.writer, "add_video", None)) and importlib.util.find_spec("moviepy") is not None

    def log_video(self, tag: str, frames: np.ndarray, step: int, fps: int = 4) -> None:
        """Write ``frames`` (uint8 ``(T, H, W, 3)``) as a TensorBoard video (an animated GIF) at ``step``.

        Raises:
            ValueError: If ``frames`` is not uint8 ``(T, H, W, 3)``, or as `log_image` for ``tag``/``step``.
        """
        if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
            raise ValueError(f"`frames` must be uint8 of shape (T, H, W, 3), got {getattr(frames, 'shape', frames)!r}.")
        check_image_args(tag, frames[0], step)
        import torch

        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[None]
        self.writer.add_video(tag, video, global_step=int(step), fps=fps)
