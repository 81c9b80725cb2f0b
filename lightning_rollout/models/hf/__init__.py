"""Hugging Face ``transformers`` vision models: the adapter, its eager attention and the family table.

``transformers`` is optional: nothing here imports it at import time.

- `attention`: the side pass's eager attention, switched on for the pass only;
- `families`: what each model class's head reads, and the head itself (one table);
- `adapter`: `HFAdapter`, which finds the model, its attention layers, geometry and Grad-CAM layer.
"""

from lightning_rollout.models.hf.adapter import HFAdapter
from lightning_rollout.models.hf.attention import ATTENTION_IMPLEMENTATION, attention_forward, eager_attention

__all__ = ["ATTENTION_IMPLEMENTATION", "HFAdapter", "attention_forward", "eager_attention"]
