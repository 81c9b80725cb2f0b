"""lightning_rollout: explanation maps of Vision Transformers, logged while they train.

The public names are imported on first use (``from lightning_rollout import explain`` works as usual), so
that importing the package, and ``lightning-rollout --help``, needs neither torch nor Lightning.
"""

import importlib
from typing import Any, List

__version__ = "0.1.0"

_PUBLIC = {
    "AttentionRolloutCallback": "lightning_rollout.callbacks.attention_rollout",
    "AttentionRolloutTrainerCallback": "lightning_rollout.callbacks.trainer",
    "ModelAdapter": "lightning_rollout.models.base",
    "TokenGeometry": "lightning_rollout.core.geometry",
    "attention_per_head": "lightning_rollout.engine.api",
    "explain": "lightning_rollout.engine.api",
    "explain_many": "lightning_rollout.engine.api",
    "register_adapter": "lightning_rollout.models.registry",
    "resolve_geometry": "lightning_rollout.models.overrides",
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

