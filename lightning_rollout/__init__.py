"""lightning_rollout: explanation maps of Vision Transformers, logged while they train."""

from lightning_rollout.callback import AttentionRolloutCallback
from lightning_rollout.explain import attention_per_head, explain, explain_many
from lightning_rollout.geometry import TokenGeometry
from lightning_rollout.models import ModelAdapter, register_adapter
from lightning_rollout.models.custom import resolve_geometry

__version__ = "0.1.0"

__all__ = [
    "AttentionRolloutCallback",
    "ModelAdapter",
    "TokenGeometry",
    "__version__",
    "attention_per_head",
    "explain",
    "explain_many",
    "register_adapter",
    "resolve_geometry",
]
