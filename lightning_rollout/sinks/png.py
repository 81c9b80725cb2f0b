"""Pictures as PNG files on disk, for loggers that cannot show images."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from lightning_rollout.sinks.base import check_image_args

__all__ = ["PNGImageSink"]

_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def _tag_to_relative_path(tag: str) -> Path:
    """Map a tag to folders: each '/' opens a sub-folder, other odd characters become '_'.

    Empty parts (from '//' or a leading '/') are dropped; parts made only of dots become '_' so that no tag
    can leave the root folder.
    """
    parts = [_UNSAFE_CHARACTERS.sub("_", part) for part in tag.split("/") if part]
    return Path(*("_" if set(part) == {"."} else part for part in parts))


class PNGImageSink:
    """Writes each picture to ``root/<tag>/step_<step:08d>.png``.

    Every '/' in the tag opens a sub-folder; characters other than letters, digits, '.', '_' and '-' become
    '_'. Folders are created as needed and an existing file for the same tag and step is replaced.

    Args:
        root: Folder that receives the pictures.

    Example:
        ```python
        sink = PNGImageSink("explanations")
        sink.log_image("rollout/sample 0", panel, step=3)  # explanations/rollout/sample_0/step_00000003.png
        ```
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def log_image(self, tag: str, image: np.ndarray, step: int, caption: Optional[str] = None) -> None:
        """Save ``image`` (uint8, ``(H, W, 3)``) as a PNG file for ``tag`` and ``step``; ``caption`` is ignored.

        Raises:
            TypeError: If ``image`` is not a numpy array.
            ValueError: If ``tag`` is empty, ``image`` is not uint8 ``(H, W, 3)`` or ``step`` is negative.
        """
        check_image_args(tag, image, step)
        folder = self.root / _tag_to_relative_path(tag)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(image)).save(folder / f"step_{int(step):08d}.png")
