"""The framework front ends: thin glue that says when the shared logging step runs and where it logs."""

from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback

__all__ = ["AttentionRolloutCallback"]
