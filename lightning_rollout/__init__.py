"""lightning_rollout: explanation maps of Vision Transformers, logged while they train."""

from lightning_rollout.callback import AttentionRolloutCallback
from lightning_rollout.capture import DEFAULT_ATTENTION_PATTERN
from lightning_rollout.explain import explain
from lightning_rollout.geometry import TokenGeometry, resolve_geometry

__version__ = "0.1.0"

__all__ = [
    "AttentionRolloutCallback",
    "DEFAULT_ATTENTION_PATTERN",
    "TokenGeometry",
    "__version__",
    "explain",
    "resolve_geometry",
]
