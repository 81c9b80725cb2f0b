"""Deprecated: `AttentionRolloutCallback` lives in `lightning_rollout.callbacks` (and at the top level)."""

from lightning_rollout.core.deprecation import moved_names

__getattr__ = moved_names(__name__, {"AttentionRolloutCallback": "lightning_rollout.callbacks"})
