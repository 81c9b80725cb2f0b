"""Gradient attention rollout: rollout over attention weighted by the target score's gradient."""

from torch import Tensor

from lightning_rollout.methods.base import register_method
from lightning_rollout.methods.chain import BackwardChain
from lightning_rollout.methods.core import add_identity_and_normalize, discard_smallest


def grad_rollout_layer(attention: Tensor, gradient: Tensor, discard_ratio: float) -> Tensor:
    """One layer's factor of the class-specific gradient rollout.

    ``F = clamp(mean_heads(A ⊙ ∂s/∂A), min=0)``, then the same discard, identity and renormalisation as
    plain rollout.

    Args:
        attention: ``(B, heads, N, N)`` post-softmax attention.
        gradient: ``(B, heads, N, N)`` gradient of the target score with respect to ``attention``.
        discard_ratio: fraction in ``[0, 1)`` of the ``N²`` fused entries taken as the smallest and zeroed, per
            sample, entry ``[0, 0]`` excepted (``discard_smallest``).

    Returns:
        ``(B, N, N)`` float32 row-stochastic factor.
    """
    fused = (attention.float() * gradient.float()).mean(dim=1).clamp(min=0)
    return add_identity_and_normalize(discard_smallest(fused, discard_ratio))


@register_method
class GradRollout(BackwardChain):
    """``"grad_rollout"``: :func:`grad_rollout_layer` folded through the shared backward."""

    name = "grad_rollout"

    def layer_factor(self, attention: Tensor, gradient: Tensor) -> Tensor:
        return grad_rollout_layer(attention, gradient, self.context.discard_ratio)
