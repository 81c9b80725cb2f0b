"""The engine: one hooked side pass through a ViT feeding every requested method.

- `options`: the explain-option bundle (`ExplainOptions`), checked once.
- `run`: the side pass itself (one forward, at most one backward).
- `chunks`: a batch in chunks of samples (bounded memory; video clips one at a time), maps at input size.
- `api`: the public functions `explain`, `explain_many`, `attention_per_head` and `check_model`.
"""

from lightning_rollout.engine.api import attention_per_head, check_model, explain, explain_many

__all__ = ["attention_per_head", "check_model", "explain", "explain_many"]
