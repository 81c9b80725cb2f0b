"""Explanation methods, one small module per method: its pure, batched torch math and its
`Method`, the accumulator the shared side pass feeds.

A new method is one module: the math as pure functions, a `Method` subclass saying what it needs
(attention layers, Grad-CAM's layer, a gradient) and folding what it receives, and
`register_method`. See `lightning_rollout.methods.base` for the protocol.
"""

from lightning_rollout.methods.base import (
    LiveForward,
    Method,
    PassContext,
    check_method_options,
    method_class,
    method_names,
    method_summaries,
    register_method,
    unregister_method,
)
from lightning_rollout.methods.core import HEAD_FUSIONS, upsample_maps

# The built-in methods register themselves as they are imported: this order is the registry's.
# isort: off
from lightning_rollout.methods.rollout import rollout_layer
from lightning_rollout.methods.grad_rollout import grad_rollout_layer
from lightning_rollout.methods.chefer import chefer_layer
from lightning_rollout.methods.gradcam import gradcam_tokens
from lightning_rollout.methods.legrad import legrad_layer
from lightning_rollout.methods.attention import attention_per_head_scores, attention_scores
# isort: on

METHODS = tuple(method_names())
"""The built-in methods' names. Checks read the registry (`method_names`, `method_class`) at call
time instead, so that methods registered later are known to them."""

__all__ = [
    "HEAD_FUSIONS",
    "LiveForward",
    "METHODS",
    "Method",
    "PassContext",
    "attention_per_head_scores",
    "attention_scores",
    "check_method_options",
    "chefer_layer",
    "grad_rollout_layer",
    "gradcam_tokens",
    "legrad_layer",
    "method_class",
    "method_names",
    "method_summaries",
    "register_method",
    "rollout_layer",
    "unregister_method",
    "upsample_maps",
]
