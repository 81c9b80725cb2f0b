"""The engine: one hooked side pass through a ViT feeding every requested method.

- `options`: the explain-option bundle (`ExplainOptions`), checked once.
- `run`: the side pass itself (one forward, at most one backward).
- `chunks`: a batch in chunks of samples (bounded memory; video clips one at a time), maps at input size.
- `checks`: what is checked before any model runs (`check_model`: can the methods serve this model?).
- `api`: the public functions `explain`, `explain_many`, `explain_with` and `attention_per_head`.
"""

from lightning_rollout.engine.api import attention_per_head, explain, explain_many
from lightning_rollout.engine.checks import check_model

__all__ = ["attention_per_head", "check_model", "explain", "explain_many"]
