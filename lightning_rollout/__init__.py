"""lightning_rollout: explanation maps of Vision Transformers, logged while they train.

The public names are imported on first use (``from lightning_rollout import explain`` works as usual), so
that importing the package, and ``lightning-rollout --help``, needs neither torch nor Lightning.
"""

import importlib
import sys
import types
from typing import Any, List

__version__ = "0.1.0"

_PUBLIC = {
    "AttentionRolloutCallback": "lightning_rollout.callback",
    "ModelAdapter": "lightning_rollout.models",
    "TokenGeometry": "lightning_rollout.geometry",
    "attention_per_head": "lightning_rollout.explain",
    "explain": "lightning_rollout.explain",
    "explain_many": "lightning_rollout.explain",
    "register_adapter": "lightning_rollout.models",
    "resolve_geometry": "lightning_rollout.models.custom",
}
"""Each public name and the module that defines it."""

__all__ = sorted([*_PUBLIC, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_PUBLIC))


class _Package(types.ModuleType):
    """The package's module type: ``lightning_rollout.explain`` stays the function.

    Importing the submodule of the same name (which any of the other public names does) makes Python set
    the package attribute ``explain`` to that submodule; this property keeps answering with the function.
    """

    @property
    def explain(self) -> Any:
        value = self.__dict__.get("explain")
        if value is None or isinstance(value, types.ModuleType):
            value = importlib.import_module("lightning_rollout.explain").explain
        return value

    @explain.setter
    def explain(self, value: Any) -> None:
        self.__dict__["explain"] = value


sys.modules[__name__].__class__ = _Package
