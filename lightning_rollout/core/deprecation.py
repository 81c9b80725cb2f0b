"""Old import paths and names kept for one release: each warns where it is used and names the new one."""

import importlib
import warnings
from typing import Any, Callable, Dict


def moved_names(old_module: str, new_places: Dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` answering each name of `new_places` (name → the module now defining it, or
    ``"module:NewName"`` for a renamed one) with a `FutureWarning` that names the new path.

    Args:
        old_module: the old module's dotted path (for the messages).
        new_places: each moved name and where it lives now.
    """

    def __getattr__(name: str) -> Any:
        if name not in new_places:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = new_places[name].partition(":")
        new_name = new_name or name
        warnings.warn(
            f"`{old_module}.{name}` moved to `{module}.{new_name}`; the old path goes in the next release",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
