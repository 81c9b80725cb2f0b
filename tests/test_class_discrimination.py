"""class_discrimination: hand-checked pairs, the 0.5 of a class-agnostic map, and its errors."""

import pytest
import torch

from lightning_rollout.metrics import class_discrimination


def _masks():
    # A 4 x 4 image on a 2 x 2 grid: object "a" fills the top-left cell, object "b" the bottom-right one.
    a = torch.zeros(4, 4)
    a[:2, :2] = 1
    b = torch.zeros(4, 4)
    b[2:, 2:] = 1
    return a, b


def test_hand_checked_pairs():
    a, b = _masks()
    maps = torch.tensor(
        [
            [[3.0, 0.0], [0.0, 1.0]],  # explains a: 3 on a, 1 on b -> 1
            [[3.0, 0.0], [0.0, 1.0]],  # explains b: 1 on b, 3 on a -> 0
            [[0.0, 5.0], [5.0, 0.0]],  # nothing on either object: tie -> 0.5
            [[1.0, 0.0], [0.0, 2.0]],  # explains b: 2 on b, 1 on a -> 1
        ]
    )
    own = torch.stack([a, b, a, b])
    other = torch.stack([b, a, b, a])
    assert class_discrimination(maps, own, other).tolist() == [1.0, 0.0, 0.5, 1.0]


def test_partial_coverage_weighs_the_cells():
    # Object "a" covers half of the top-left cell (2 of its 4 pixels), "b" all of the bottom-right one.
    a = torch.zeros(4, 4)
    a[0, :2] = 1
    _, b = _masks()
    maps = torch.tensor([[[3.0, 0.0], [0.0, 2.0]], [[1.0, 0.0], [0.0, 1.0]]])
    # Own mass 3 * 0.5 = 1.5 < 2 on b; then 0.5 < 1.
    assert class_discrimination(maps, a.expand(2, 4, 4), b.expand(2, 4, 4)).tolist() == [0.0, 0.0]


def test_the_same_map_for_both_classes_scores_one_half():
    a, b = _masks()
    torch.manual_seed(0)
    maps = torch.rand(6, 2, 2)
    both = torch.cat([maps, maps])
    own = torch.cat([a.expand(6, 4, 4), b.expand(6, 4, 4)])
    other = torch.cat([b.expand(6, 4, 4), a.expand(6, 4, 4)])
    assert float(class_discrimination(both, own, other).mean()) == 0.5


def test_errors():
    a, b = _masks()
    with pytest.raises(ValueError, match="`maps` must be non-negative"):
        class_discrimination(-torch.ones(1, 2, 2), a[None], b[None])
    with pytest.raises(ValueError, match="same batch size, got 2 and 1"):
        class_discrimination(torch.ones(2, 2, 2), a[None], b[None])
    with pytest.raises(ValueError, match=r"`own_masks` and `other_masks` must have the same shape, got \(1, 4, 4\)"):
        class_discrimination(torch.ones(1, 2, 2), a[None], b[None, :2])
    with pytest.raises(ValueError, match=r"`masks` must hold values in \[0, 1\]"):
        class_discrimination(torch.ones(1, 2, 2), a[None] * 2, b[None])
