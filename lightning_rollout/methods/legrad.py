"""LeGrad (Bousselham et al., ICCV 2025): per-layer gradients of the model's own head on the attention maps.

For every layer ``l`` the score ``s_l`` is the model's head (final norm, pooling, classifier) applied to the
tokens after block ``l``, taken at the target. The layer's explanation is the positive part of
``∂s_l / ∂A_l`` on that block's post-softmax attention ``A_l``, averaged over heads and query rows; the map
is the sum of the layers' explanations over the key (token) columns.
"""

from torch import Tensor


def legrad_layer(gradient: Tensor) -> Tensor:
    """One layer's token scores ``E_l = mean_heads,queries(ReLU(∂s_l / ∂A_l))``.

    Args:
        gradient: ``(B, heads, Q, N)`` gradient of layer ``l``'s score ``s_l`` with respect to its
            post-softmax attention ``A_l`` (``Q`` query rows, ``N`` key tokens; ``Q == N`` for
            self-attention).

    Returns:
        ``(B, N)`` float32 non-negative scores, one per key token (prefix tokens included).
    """
    return gradient.float().clamp(min=0).mean(dim=(1, 2))

