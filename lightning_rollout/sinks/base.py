"""The sink protocol and the argument checks every sink shares."""

from __future__ import annotations

import io
from typing import Optional, Protocol, runtime_checkable

import numpy as np
from PIL import Image

__all__ = [
    "IMAGE_FORMATS",
    "JPEG_QUALITY",
    "ImageSink",
    "VideoSink",
    "check_image_args",
    "check_image_format",
    "encode_image",
]

IMAGE_FORMATS = ("jpeg", "png")
"""How the native sinks encode pictures: ``"jpeg"`` (a few times smaller on photographs) or ``"png"``."""

JPEG_QUALITY = 85
"""JPEG quality of the native sinks: captions and overlays stay sharp, a 224-px photograph cell costs ~5 kB."""


@runtime_checkable
class ImageSink(Protocol):
    """Receives rendered pictures."""

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Store ``image`` (uint8, ``(H, W, 3)``) under ``tag`` at ``step``, with an optional ``caption``."""


@runtime_checkable
class VideoSink(Protocol):
    """A sink that also takes videos (the callbacks log clips' overlays to it when `can_log_video`)."""

    def can_log_video(self) -> bool:
        """Whether `log_video` works now (e.g. its encoder is installed)."""

    def log_video(self, tag: str, frames: np.ndarray, step: int, fps: int = 4) -> None:
        """Store ``frames`` (uint8 ``(T, H, W, 3)``) under ``tag`` at ``step``."""


def check_image_args(tag: object, image: object, step: object) -> None:
    """Raise unless the arguments of ``log_image`` are a non-empty str, an RGB uint8 array and an int >= 0."""
    if not isinstance(tag, str) or not tag.strip("/"):
        raise ValueError(f"`tag` must be a non-empty str with a name other than '/', got {tag!r}.")
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`image` must be a numpy array of shape (H, W, 3), got {type(image).__name__}.")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"`image` must be uint8 of shape (H, W, 3), got {image.dtype} {image.shape}.")
    if not isinstance(step, (int, np.integer)) or isinstance(step, bool) or step < 0:
        raise ValueError(f"`step` must be an int >= 0, got {step!r}.")


def check_image_format(image_format: object) -> None:
    """Raise unless ``image_format`` is one of `IMAGE_FORMATS`."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"`image_format` must be one of {list(IMAGE_FORMATS)}, got {image_format!r}.")


def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """``image`` (uint8 ``(H, W, 3)``) as JPEG (quality `JPEG_QUALITY`) or PNG (compression level 1) bytes.

    PNG level 1 is about 3x faster than the default level for ~2x the bytes.
    """
    buffer = io.BytesIO()
    picture = Image.fromarray(np.ascontiguousarray(image))
    if image_format == "jpeg":
        picture.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    else:
        picture.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
