"""The per-layer math, checked by hand on small matrices."""

import pytest
import torch

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.methods import chefer_layer, grad_rollout_layer, gradcam_tokens, rollout_layer
from lightning_rollout.methods.core import (
    add_identity_and_normalize,
    fuse_heads,
    tokens_to_grid,
)
from lightning_rollout.models import patch_mean_readout, token_readout

HEADS = torch.tensor([[[[0.2, 0.8], [0.6, 0.4]], [[0.4, 0.6], [0.2, 0.8]]]])  # (1, 2 heads, 2, 2)


@pytest.mark.parametrize(
    "fusion, expected",
    [
        ("mean", [[0.3, 0.7], [0.4, 0.6]]),
        ("max", [[0.4, 0.8], [0.6, 0.8]]),
        ("min", [[0.2, 0.6], [0.2, 0.4]]),
    ],
)
def test_fuse_heads(fusion, expected):
    torch.testing.assert_close(fuse_heads(HEADS, fusion), torch.tensor([expected]))


def test_fuse_heads_is_float32_for_half_input():
    assert fuse_heads(HEADS.to(torch.bfloat16), "mean").dtype == torch.float32


def test_identity_then_rows_renormalised():
    fused = torch.tensor([[[0.3, 0.7], [0.4, 0.6]]])
    # (F + I) / 2 = [[0.65, 0.35], [0.2, 0.8]]: rows already sum to 1
    torch.testing.assert_close(add_identity_and_normalize(fused), torch.tensor([[[0.65, 0.35], [0.2, 0.8]]]))
    after_discard = torch.tensor([[[0.0, 0.7], [0.0, 0.6]]])
    # (F + I) / 2 = [[0.5, 0.35], [0, 0.8]] → rows divided by 0.85 and 0.8 (not columns: vit-explain #16)
    expected = torch.tensor([[[0.5 / 0.85, 0.35 / 0.85], [0.0, 1.0]]])
    torch.testing.assert_close(add_identity_and_normalize(after_discard), expected)


def test_rollout_layer_combines_fusion_discard_identity():
    out = rollout_layer(HEADS, "max", 0.0)
    fused = torch.tensor([[[0.4, 0.8], [0.6, 0.8]]])
    mixed = (fused + torch.eye(2)) / 2
    torch.testing.assert_close(out, mixed / mixed.sum(-1, keepdim=True))
    torch.testing.assert_close(out.sum(-1), torch.ones(1, 2))


def test_grad_rollout_clamps_after_head_mean():
    attention = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])
    gradient = torch.tensor([[[[2.0, -2.0], [1.0, 0.0]], [[-1.0, -4.0], [1.0, 0.0]]]])
    # mean over heads of A*dA = [[0.25, -1.5], [0.5, 0]] → clamp → [[0.25, 0], [0.5, 0]]
    mixed = (torch.tensor([[0.25, 0.0], [0.5, 0.0]]) + torch.eye(2)) / 2
    expected = mixed / mixed.sum(-1, keepdim=True)
    torch.testing.assert_close(grad_rollout_layer(attention, gradient, 0.0), expected[None])


def test_chefer_clamps_before_head_mean_and_adds_identity():
    attention = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]]]])
    gradient = torch.tensor([[[[2.0, -2.0], [1.0, 0.0]], [[-1.0, -4.0], [1.0, 0.0]]]])
    # clamp(A*dA) per head = [[1,0],[.5,0]] and [[0,0],[.5,0]] → mean [[.5,0],[.5,0]] → + I
    torch.testing.assert_close(chefer_layer(attention, gradient), torch.tensor([[[1.5, 0.0], [0.5, 1.0]]]))


def test_gradcam_tokens_by_hand():
    # one prefix token (dropped), two patch tokens, two channels
    activations = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [3.0, -4.0]]])
    gradients = torch.tensor([[[9.0, 9.0], [1.0, 0.0], [3.0, 2.0]]])
    # weights = mean over patches = [2, 1]; scores = [1*2 + 2*1, 3*2 - 4*1] = [4, 2]
    torch.testing.assert_close(gradcam_tokens(activations, gradients, 1), torch.tensor([[4.0, 2.0]]))
    torch.testing.assert_close(gradcam_tokens(-activations, gradients, 1), torch.tensor([[0.0, 0.0]]))


def test_readouts_by_hand():
    # R for 4 tokens (1 prefix token, 3 patches); row i: what output token i draws from each input token.
    relevance = torch.tensor([[[0.4, 0.2, 0.3, 0.1], [0.1, 0.5, 0.2, 0.2], [0.0, 0.3, 0.6, 0.1], [0.2, 0.2, 0.2, 0.4]]])
    geometry = TokenGeometry(1, True, (1, 3))
    torch.testing.assert_close(token_readout(4).apply(relevance), relevance[:, 0])
    torch.testing.assert_close(token_readout(4, (0, 1)).apply(relevance), torch.tensor([[0.25, 0.35, 0.25, 0.15]]))
    # Patch rows 1-3 without their diagonal entries, averaged: ([.1, 0, .2, .2] + [0, .3, 0, .1] + [.2, .2, .2, 0]) / 3
    pooled = torch.tensor([[0.1, 0.5 / 3, 0.4 / 3, 0.1]])
    readout = patch_mean_readout(geometry)
    assert not readout.is_linear
    torch.testing.assert_close(readout.apply(relevance), pooled)
    torch.testing.assert_close(
        patch_mean_readout(geometry, class_weight=0.5).apply(relevance), 0.5 * relevance[:, 0] + 0.5 * pooled
    )


def test_tokens_to_grid_drops_prefix_and_keeps_row_major_order():
    scores = torch.arange(8.0)[None]  # 2 prefix tokens, then a 2×3 grid
    torch.testing.assert_close(tokens_to_grid(scores, 2, (2, 3)), torch.tensor([[[2.0, 3, 4], [5, 6, 7]]]))
