"""`discard_smallest`: vit-explain's count rule, per sample, checked by hand and against a plain loop."""

import pytest
import torch

from lightning_rollout.methods.core import discard_smallest


def naive_discard(fused: torch.Tensor, ratio: float) -> torch.Tensor:
    """One sample at a time: sort all N² entries (stably: ties by position), take the int(N² ratio) smallest,
    leave out entry [0, 0], zero the rest of them."""
    out = fused.clone()
    n = fused.shape[-1]
    count = int(n * n * ratio)
    for sample in range(fused.shape[0]):
        values = fused[sample].flatten().tolist()
        smallest = sorted(range(n * n), key=lambda index: values[index])[:count]
        for index in smallest:
            if index != 0:
                out[sample, index // n, index % n] = 0.0
    return out


def test_by_hand_with_and_without_entry_00_among_the_smallest():
    fused = torch.tensor(
        [
            # k = int(9 * 0.5) = 4 smallest: 0.05 [0,0], 0.10, 0.15, 0.20 → [0,0] is spared, 3 entries go
            [[0.05, 0.30, 0.20], [0.10, 0.60, 0.40], [0.15, 0.50, 0.70]],
            # its own 4 smallest: 0.05, 0.10, 0.15, 0.20, none of them [0,0] → 4 entries go
            [[0.90, 0.05, 0.30], [0.20, 0.80, 0.10], [0.60, 0.15, 0.70]],
        ]
    )
    expected = torch.tensor(
        [
            [[0.05, 0.30, 0.00], [0.00, 0.60, 0.40], [0.00, 0.50, 0.70]],
            [[0.90, 0.00, 0.30], [0.00, 0.80, 0.00], [0.60, 0.00, 0.70]],
        ]
    )
    before = fused.clone()
    out = discard_smallest(fused, 0.5)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert [int((out[b] == 0).sum()) for b in range(2)] == [3, 4]
    assert torch.equal(fused, before), "the input must not be modified"


def test_each_sample_by_its_own_order_not_by_the_first_samples():
    first = torch.tensor([[0.9, 0.1], [0.8, 0.7]])
    second = torch.tensor([[0.2, 0.6], [0.4, 0.5]])  # [0,0] is its smallest: only 0.4 goes
    out = discard_smallest(torch.stack([first, second]), 0.5)  # k = int(4 * 0.5) = 2
    torch.testing.assert_close(out[0], torch.tensor([[0.9, 0.0], [0.8, 0.0]]), rtol=0, atol=0)
    torch.testing.assert_close(out[1], torch.tensor([[0.2, 0.6], [0.0, 0.5]]), rtol=0, atol=0)


def test_ties_go_by_position():
    # All equal: the 4 smallest are entries 0..3 in row-major order; [0,0] is one of them and is spared.
    flat = torch.full((1, 3, 3), 0.25)
    expected = torch.tensor([[[0.25, 0.0, 0.0], [0.0, 0.25, 0.25], [0.25, 0.25, 0.25]]])
    torch.testing.assert_close(discard_smallest(flat, 0.5), expected, rtol=0, atol=0)
    # Three entries tie at the threshold: the two earlier ones go, the later one stays.
    tied = torch.tensor([[[0.5, 0.2, 0.2], [0.2, 0.9, 0.9], [0.9, 0.9, 0.9]]])
    expected = torch.tensor([[[0.5, 0.0, 0.0], [0.2, 0.9, 0.9], [0.9, 0.9, 0.9]]])
    torch.testing.assert_close(discard_smallest(tied, 0.25), expected, rtol=0, atol=0)  # k = 2


@pytest.mark.parametrize("ratio", [0.1, 0.5, 0.9, 0.99])
@pytest.mark.parametrize("ties", [False, True])
def test_matches_a_per_sample_loop(ratio, ties):
    generator = torch.Generator().manual_seed(int(ratio * 100) + ties)
    fused = torch.rand(6, 7, 7, generator=generator)
    if ties:
        fused = (fused * 4).floor() / 4 + 0.25  # four distinct values: many ties at every threshold
    fused[:3, 0, 0] = -1.0  # [0,0] the smallest in half of the samples
    fused[3:, 0, 0] = 2.0  # and the largest in the other half
    out = discard_smallest(fused, ratio)
    torch.testing.assert_close(out, naive_discard(fused, ratio), rtol=0, atol=0)
    count = int(49 * ratio)
    assert (out == 0).flatten(1).sum(dim=1).tolist() == [count - 1] * 3 + [count] * 3


def test_a_sample_does_not_depend_on_the_rest_of_the_batch():
    fused = torch.rand(5, 6, 6, generator=torch.Generator().manual_seed(0))
    together = discard_smallest(fused, 0.7)
    for sample in range(5):
        torch.testing.assert_close(together[sample : sample + 1], discard_smallest(fused[sample : sample + 1], 0.7))


def test_rounds_down_and_zero_ratio_is_identity():
    fused = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(1)) + 0.1
    fused[:, 0, 0] = 2.0  # [0,0] never among the smallest: exactly int(9 * 0.2) = 1 entry per sample goes
    assert discard_smallest(fused, 0.0) is fused
    assert discard_smallest(fused, 0.1) is fused  # int(9 * 0.1) = 0
    assert int((discard_smallest(fused, 0.2) == 0).sum()) == 2 * 1
