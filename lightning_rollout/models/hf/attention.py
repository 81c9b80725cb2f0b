"""The side pass's eager attention for Hugging Face models: registered in transformers' attention interface
and switched on for the pass only (every config's previous value written back afterwards)."""

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator, Optional, Tuple

import torch
from torch import Tensor, nn

from lightning_rollout.models.base import UnsupportedModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _configs(root: nn.Module) -> list:
    """Every config object of ``root``'s Hugging Face models, sub-configs included (each once)."""
    from transformers import PreTrainedModel

    found, pending = {}, [m.config for m in root.modules() if isinstance(m, PreTrainedModel)]
    while pending:
        config = pending.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        pending.extend(getattr(config, key) for key in getattr(config, "sub_configs", {}) if getattr(config, key, None))
    return list(found.values())


ATTENTION_IMPLEMENTATION = "lightning_rollout_eager"
"""The name `attention_forward` is registered under in transformers' attention interface."""


def attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    **kwargs,
) -> Tuple[Tensor, Tensor]:
    """Eager attention for the side pass, in transformers' attention-interface signature.

    Computes what transformers' ``eager_attention_forward`` computes, with fewer passes over the
    ``(B, heads, N, N)`` tensors: the scale is applied to the queries (the ``(B·heads, N, d)`` copy that a
    batched product of the head-split views makes anyway) instead of to the scores, and both products
    are ``bmm`` on ``(B·heads, ·, ·)`` views. The post-softmax attention it returns is the tensor
    multiplied with the values, so gradients of the output reach it. For a power-of-two scale
    (``head_dim`` 16, 64, 256, ...) every output is bit-identical to transformers' eager attention; other
    scales differ by float rounding.

    Args:
        module: the attention module (unused; part of the interface).
        query: ``(B, heads, N, d)``.
        key: ``(B, heads, S, d)``.
        value: ``(B, heads, S, d)``.
        attention_mask: additive mask broadcastable to ``(B, heads, N, S)``, or ``None``.
        scaling: factor of the scores; ``None`` gives ``d ** -0.5``.
        dropout: must be 0 (the side pass runs in eval mode).

    Returns:
        ``(output (B, N, heads, d), attention (B, heads, N, S))``.

    Raises:
        ValueError: if ``dropout`` is not 0.
    """
    if dropout:
        raise ValueError(f"the side pass's attention takes no dropout (it runs in eval mode), got dropout={dropout}")
    batch, heads, length, head_dim = query.shape
    keys = key.shape[2]
    scaling = head_dim**-0.5 if scaling is None else scaling
    queries = query.reshape(batch * heads, length, head_dim) * scaling
    # Keys copied as (B·heads, d, S), the layout ``torch.matmul`` gives them: the same product kernel.
    scores = torch.bmm(queries, key.transpose(2, 3).reshape(batch * heads, head_dim, keys))
    scores = scores.view(batch, heads, length, keys)
    if attention_mask is not None:
        scores = scores + attention_mask
    if scores.dtype == torch.float32:
        attention = scores.softmax(dim=-1)
    else:  # as transformers' eager attention: the softmax in float32, the result in the queries' dtype
        attention = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.bmm(attention.view(batch * heads, length, keys), value.reshape(batch * heads, keys, head_dim))
    return output.view(batch, heads, length, head_dim).transpose(1, 2).contiguous(), attention


def register_attention() -> None:
    """Registers `attention_forward` (and the eager mask format it adds) with transformers, once."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ATTENTION_IMPLEMENTATION not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        ALL_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def eager_attention(root: "PreTrainedModel") -> Iterator[None]:
    """Switches ``root`` to `attention_forward`; writes every config's previous value back on exit.

    Raises:
        UnsupportedModelError: if the model cannot switch (its attention does not follow transformers'
            attention interface).
    """
    saved = [(config, config.__dict__.get("_attn_implementation_internal")) for config in _configs(root)]
    try:
        register_attention()
        root.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        if root.config._attn_implementation != ATTENTION_IMPLEMENTATION:  # noqa: SLF001  (transformers keeps the active implementation only there)
            raise UnsupportedModelError(
                f"{type(root).__name__} cannot switch to an eager attention implementation, so its "
                "attention weights are never materialised"
            )
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation  # noqa: SLF001  (restores the config's own field, as set_attn_implementation does)
