"""The framework front ends: thin glue that says when the shared logging step runs and where it logs.

`AttentionRolloutCallback` (Lightning) is imported with the package; `AttentionRolloutTrainerCallback`
(Hugging Face `transformers.Trainer`) on first use, so that importing this package never imports
`transformers`.
"""

from typing import Any

from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback

__all__ = ["AttentionRolloutCallback", "AttentionRolloutTrainerCallback"]


def __getattr__(name: str) -> Any:
    if name == "AttentionRolloutTrainerCallback":
        from lightning_rollout.callbacks.trainer import AttentionRolloutTrainerCallback

        return AttentionRolloutTrainerCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
