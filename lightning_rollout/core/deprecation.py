"""Old import paths kept for one release: each warns once where it is used and names the new path."""

import importlib
import warnings
from typing import Any, Callable, Dict


def moved_names(old_module: str, new_places: Dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` answering each name of `new_places` (name → the module now defining it) with a
    `FutureWarning` that names the new path.

    Args:
        old_module: the old module's dotted path (for the messages).
        new_places: each moved name and the module it now lives in.
    """

    def __getattr__(name: str) -> Any:
        if name not in new_places:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        warnings.warn(
            f"`{old_module}.{name}` moved to `{new_places[name]}.{name}`; the old path goes in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_places[name]), name)

    return __getattr__
