"""The sink protocol and the argument checks every sink shares."""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np

__all__ = ["ImageSink", "check_image_args"]


@runtime_checkable
class ImageSink(Protocol):
    """Receives rendered pictures."""

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Store ``image`` (uint8, ``(H, W, 3)``) under ``tag`` at ``step``, with an optional ``caption``."""


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
