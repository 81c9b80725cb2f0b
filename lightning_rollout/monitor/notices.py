"""Warnings a front end shows once per cause, and a failure's short traceback."""

import traceback
import warnings
from typing import Callable, Set

Warn = Callable[[str, str], None]
"""`warn(key, message)`: warns once per key."""


class WarnOnce:
    """Warns once per key, each message prefixed with the front end's name.

    Args:
        name: who speaks, e.g. `"AttentionRolloutCallback"`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._seen: Set[str] = set()

    def __call__(self, key: str, message: str) -> None:
        if key not in self._seen:
            self._seen.add(key)
            warnings.warn(f"{self.name}: {message}", UserWarning, stacklevel=3)


def short_traceback(error: BaseException, frames: int = 6) -> str:
    """The last `frames` frames of `error`'s traceback and its message, as the lines Python prints."""
    lines = traceback.format_exception(type(error), error, error.__traceback__, limit=-frames)
    return "".join(lines).rstrip()
