import math

import pytest
import torch

from lightning_rollout.metrics import (
    energy_in_mask,
    mask_area_fraction,
    mask_to_grid,
    normalized_entropy,
    pointing_game,
)


def _block_mask(size: int, rows: slice, cols: slice) -> torch.Tensor:
    """A (1, size, size) bool mask that is True on the given block."""
    mask = torch.zeros(1, size, size, dtype=torch.bool)
    mask[0, rows, cols] = True
    return mask


def _reference_energy(map_: torch.Tensor, coverage: torch.Tensor) -> float:
    """Plain-Python share of map mass inside the mask, for one sample."""
    total = sum(float(v) for v in map_.flatten())
    inside = sum(float(v) * float(c) for v, c in zip(map_.flatten(), coverage.flatten()))
    return inside / total if total > 0 else 0.0


def _reference_entropy(map_: torch.Tensor) -> float:
    """Plain-Python normalised entropy for one sample."""
    values = [float(v) for v in map_.flatten()]
    total = sum(values)
    if total == 0:
        return 1.0
    entropy = -sum(v / total * math.log(v / total) for v in values if v > 0)
    return entropy / math.log(len(values))


def test_mask_to_grid_divisible():
    mask = _block_mask(4, slice(0, 2), slice(0, 2))
    assert torch.equal(mask_to_grid(mask, (2, 2)), torch.tensor([[[1.0, 0.0], [0.0, 0.0]]]))


def test_mask_to_grid_partial_cover_and_dtype():
    mask = _block_mask(4, slice(0, 1), slice(0, 4))  # top row only
    grid = mask_to_grid(mask, (2, 2))
    assert grid.dtype == torch.float32
    assert torch.equal(grid, torch.tensor([[[0.5, 0.5], [0.0, 0.0]]]))


def test_mask_to_grid_not_divisible():
    # W=3 onto 2 cells: cell 0 covers columns 0-1, cell 1 covers columns 1-2.
    mask = torch.zeros(1, 3, 3)
    mask[0, :, 0] = 1.0
    assert torch.equal(mask_to_grid(mask, (1, 2)), torch.tensor([[[0.5, 0.0]]]))


def test_energy_in_mask_hand_values():
    maps = torch.tensor([[[3.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.cat(
        [
            _block_mask(4, slice(0, 2), slice(0, 2)),
            _block_mask(4, slice(0, 2), slice(0, 4)),
            _block_mask(4, slice(0, 4), slice(0, 4)),
        ]
    )
    scores = energy_in_mask(maps, masks)
    assert scores.dtype == torch.float32
    assert torch.allclose(scores, torch.tensor([0.75, 0.5, 0.0]))


def test_energy_in_mask_matches_reference():
    generator = torch.Generator().manual_seed(0)
    maps = torch.rand(4, 3, 5, generator=generator)
    masks = torch.rand(4, 12, 20, generator=generator) > 0.6
    coverage = mask_to_grid(masks, (3, 5))
    expected = torch.tensor([_reference_energy(maps[i], coverage[i]) for i in range(4)])
    assert torch.allclose(energy_in_mask(maps, masks), expected, atol=1e-6)


def test_energy_in_mask_does_not_track_gradients():
    maps = torch.ones(1, 2, 2, requires_grad=True)
    assert not energy_in_mask(maps, torch.ones(1, 4, 4)).requires_grad


def test_pointing_game_hits_and_misses():
    peak_top_left = torch.tensor([[5.0, 1.0], [1.0, 1.0]])
    peak_bottom_right = torch.tensor([[1.0, 1.0], [1.0, 5.0]])
    maps = torch.stack([peak_top_left, peak_bottom_right, peak_top_left, torch.zeros(2, 2)])
    masks = torch.cat(
        [
            _block_mask(4, slice(0, 2), slice(0, 2)),  # covers the peak cell
            _block_mask(4, slice(0, 2), slice(0, 2)),  # peak is elsewhere
            _block_mask(4, slice(0, 1), slice(0, 2)),  # peak cell exactly half covered
            _block_mask(4, slice(0, 4), slice(0, 4)),  # constant map has no peak
        ]
    )
    assert torch.equal(pointing_game(maps, masks), torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_pointing_game_needs_half_coverage():
    maps = torch.tensor([[[5.0, 1.0], [1.0, 1.0]]])
    mask = _block_mask(4, slice(0, 1), slice(0, 1))  # a quarter of the peak cell
    assert torch.equal(pointing_game(maps, mask), torch.tensor([0.0]))


def test_normalized_entropy_hand_values():
    maps = torch.tensor(
        [
            [[1.0, 1.0], [1.0, 1.0]],  # uniform
            [[0.0, 7.0], [0.0, 0.0]],  # one cell
            [[2.0, 2.0], [0.0, 0.0]],  # two cells: log 2 / log 4
            [[0.0, 0.0], [0.0, 0.0]],  # no mass
        ]
    )
    entropy = normalized_entropy(maps)
    assert entropy.dtype == torch.float32
    assert torch.allclose(entropy, torch.tensor([1.0, 0.0, 0.5, 1.0]))


def test_normalized_entropy_matches_reference():
    maps = torch.rand(3, 4, 6, generator=torch.Generator().manual_seed(1))
    maps[0, 0, :] = 0.0
    expected = torch.tensor([_reference_entropy(maps[i]) for i in range(3)])
    assert torch.allclose(normalized_entropy(maps), expected, atol=1e-6)


def test_mask_area_fraction():
    masks = torch.cat([_block_mask(4, slice(0, 2), slice(0, 2)), _block_mask(4, slice(0, 4), slice(0, 3))])
    assert torch.equal(mask_area_fraction(masks), torch.tensor([0.25, 0.75]))


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: mask_to_grid([[0]], (2, 2)), TypeError, "`masks` must be a torch.Tensor"),
        (lambda: mask_to_grid(torch.ones(4, 4), (2, 2)), ValueError, r"`masks` must be 3-D .* \(4, 4\)"),
        (lambda: mask_to_grid(torch.full((1, 4, 4), 2.0), (2, 2)), ValueError, r"`masks` must hold values in \[0, 1\]"),
        (lambda: mask_to_grid(torch.ones(1, 4, 4), (0, 2)), ValueError, r"`grid_size` .* got \(0, 2\)"),
        (lambda: mask_to_grid(torch.ones(1, 4, 4), 2), ValueError, "`grid_size` .* got 2"),
        (lambda: energy_in_mask(torch.ones(2, 2, 2), torch.ones(3, 4, 4)), ValueError, "same batch size, got 2 and 3"),
        (lambda: energy_in_mask(-torch.ones(1, 2, 2), torch.ones(1, 4, 4)), ValueError, "`maps` must be non-negative"),
        (lambda: pointing_game(torch.ones(1, 4), torch.ones(1, 4, 4)), ValueError, "`maps` must be 3-D"),
        (lambda: normalized_entropy(torch.ones(2, 1, 1)), ValueError, r"at least 2 cells .*, got grid \(1, 1\)"),
        (lambda: mask_area_fraction(torch.ones(1, 1, 4, 4)), ValueError, "`masks` must be 3-D"),
    ],
    ids=[
        "masks-type",
        "masks-ndim",
        "masks-range",
        "grid-size-zero",
        "grid-size-int",
        "batch-mismatch",
        "maps-negative",
        "maps-ndim",
        "single-cell",
        "area-ndim",
    ],
)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
