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
    """``"grad_rollout"``: `grad_rollout_layer` folded through the shared backward."""

    name = "grad_rollout"
    summary = "gradient rollout: attention weighted by the target's gradient, rolled out over layers"
    constant_map_cause = (
        "the target logit has no gradient through the attention: a zero-initialised classifier head "
        "(torchvision's ViT) gives zero gradients at init, and a `global_pool='avg'` model gives none through "
        "the class token; the maps fill in once the head trains, or lower `discard_ratio`"
    )

    def layer_factor(self, attention: Tensor, gradient: Tensor) -> Tensor:
        return grad_rollout_layer(attention, gradient, self.context.discard_ratio)
