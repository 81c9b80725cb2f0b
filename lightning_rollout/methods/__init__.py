"""Explanation methods: pure, batched torch functions, one small module per method."""

from lightning_rollout.methods.chefer import chefer_layer
from lightning_rollout.methods.core import HEAD_FUSIONS
from lightning_rollout.methods.grad_rollout import grad_rollout_layer
from lightning_rollout.methods.gradcam import gradcam_tokens
from lightning_rollout.methods.legrad import legrad_layer
from lightning_rollout.methods.rollout import rollout_layer

METHODS = ("rollout", "grad_rollout", "chefer", "gradcam", "legrad")
GRADIENT_METHODS = ("grad_rollout", "chefer", "gradcam", "legrad")

__all__ = [
    "GRADIENT_METHODS",
    "HEAD_FUSIONS",
    "METHODS",
    "chefer_layer",
    "grad_rollout_layer",
    "gradcam_tokens",
    "legrad_layer",
    "rollout_layer",
]
