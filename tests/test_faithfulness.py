"""Deletion/insertion AUCs and the model-randomisation check, on hand-built and tiny random-init models."""

import pytest
import torch
from model_zoo import tiny_vit
from torch import nn

from lightning_rollout import explain
from lightning_rollout.metrics import (
    deletion_insertion_auc,
    perturbation_curves,
    randomized_copy,
    rank_correlation,
)
from lightning_rollout.metrics.faithfulness import pixel_ranks


class RegionReader(nn.Module):
    """Class 0's logit reads the mean of one known 8×8 region of a 16×16 image; class 1's is fixed at 0."""

    def __init__(self) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.5)  # changes mode-sensitive state if the mode is not restored
        self.scale = nn.Parameter(torch.tensor(12.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        region = x[:, :, 4:12, 8:16].mean(dim=(1, 2, 3))
        score = self.scale * region - 4.0
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def _region_batch():
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(4, 3, 16, 16, generator=generator)
    images[:, :, 4:12, 8:16] += 0.8
    covering = torch.zeros(4, 4, 4)
    covering[:, 1:3, 2:4] = 1.0  # the 4×4 grid cells over pixels [4:12, 8:16]
    random_maps = torch.rand(4, 4, 4, generator=generator)
    return images, covering, random_maps, torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize("baseline", [0.0, "mean"])
def test_a_map_on_the_region_the_model_reads_beats_a_random_map_and_its_inverse_is_worst(baseline):
    model = RegionReader().eval()
    images, covering, random_maps, target = _region_batch()
    scores = {
        name: deletion_insertion_auc(model, images, maps, target, steps=16, baseline=baseline)
        for name, maps in (("covering", covering), ("random", random_maps), ("inverted", 1.0 - covering))
    }
    for deletion, insertion in scores.values():
        assert deletion.shape == insertion.shape == (4,)
        assert ((deletion >= 0) & (deletion <= 1) & (insertion >= 0) & (insertion <= 1)).all()
    assert (scores["covering"][0] < scores["random"][0]).all() and (scores["random"][0] < scores["inverted"][0]).all()
    assert (scores["covering"][1] > scores["random"][1]).all() and (scores["random"][1] > scores["inverted"][1]).all()
    # The region is a quarter of the image: after 4 of 16 steps the covering map has deleted all of it
    # (the score is the baseline's) or revealed all of it (the score is the full image's).
    deletion_curve, insertion_curve = perturbation_curves(model, images, covering, target, steps=16, baseline=baseline)
    assert deletion_curve.shape == (4, 17)
    assert torch.allclose(deletion_curve[:, 0], insertion_curve[:, -1])  # both the unperturbed image
    assert torch.allclose(deletion_curve[:, -1], insertion_curve[:, 0])  # both the baseline
    assert torch.allclose(deletion_curve[:, 4], deletion_curve[:, -1], atol=1e-6)
    assert torch.allclose(insertion_curve[:, 4], insertion_curve[:, -1], atol=1e-6)


def test_auc_is_the_trapezoid_of_the_curve():
    model = RegionReader().eval()
    images, covering, _, target = _region_batch()
    deletion, insertion = deletion_insertion_auc(model, images, covering, target, steps=4, baseline=0.0)
    curves = perturbation_curves(model, images, covering, target, steps=4, baseline=0.0)
    for auc, curve in zip((deletion, insertion), curves):
        expected = (curve[:, :-1] + curve[:, 1:]).sum(dim=1) / 2 / 4
        assert torch.allclose(auc, expected)


def test_pixel_order_follows_the_upsampled_map_and_ties_go_row_major():
    flat = torch.zeros(2, 2, 2)
    assert torch.equal(pixel_ranks(flat, (4, 4)), torch.arange(16).expand(2, 16))
    peaked = torch.zeros(1, 2, 2)
    peaked[0, 1, 1] = 1.0
    ranks = pixel_ranks(peaked, (4, 4)).view(4, 4)
    assert ranks[3, 3] == 0  # the peak cell's corner pixel, untouched by the bilinear blend
    # Row 0 and column 0 upsample to exactly 0: tied, they come last, in row-major order.
    tied = [ranks[0, 0], ranks[0, 1], ranks[0, 2], ranks[0, 3], ranks[1, 0], ranks[2, 0], ranks[3, 0]]
    assert [int(r) for r in tied] == list(range(9, 16))


def test_a_samples_aucs_do_not_depend_on_the_rest_of_the_batch():
    model = tiny_vit()
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    target = torch.tensor([0, 1, 2, 3, 4])
    maps = explain(model, images, "grad_rollout", target=target)
    deletion, insertion = deletion_insertion_auc(model, images, maps, target, steps=8, batch_size=7)
    for i in (0, 3):
        alone = deletion_insertion_auc(model, images[i : i + 1], maps[i : i + 1], target[i : i + 1], steps=8)
        assert torch.allclose(alone[0], deletion[i : i + 1], atol=1e-5)
        assert torch.allclose(alone[1], insertion[i : i + 1], atol=1e-5)


def test_inference_mode_and_state_restored():
    model = tiny_vit(drop_rate=0.3)
    model.train()
    model.blocks[1].eval()
    for parameter in model.parameters():
        parameter.grad = torch.ones_like(parameter)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(4))
    modes = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(123)
    rng = torch.get_rng_state()
    with torch.inference_mode():
        inside = deletion_insertion_auc(model, images, maps, 1, steps=4)
    outside = deletion_insertion_auc(model, images, maps, torch.tensor([1, 1, 1]), steps=4)
    assert torch.equal(torch.get_rng_state(), rng)
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert all(torch.equal(p, weights[name]) for name, p in model.named_parameters())
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert torch.allclose(inside[0], outside[0]) and torch.allclose(inside[1], outside[1])


def test_models_returning_an_object_with_logits_and_a_predicted_target():
    class WithLogits(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = RegionReader()

        def forward(self, x):
            return type("Output", (), {"logits": self.inner(x)})()

    images, covering, _, target = _region_batch()
    expected = deletion_insertion_auc(RegionReader(), images, covering, target, baseline=0.0)
    got = deletion_insertion_auc(WithLogits(), images, covering, None, baseline=0.0)  # the region wins: class 0
    assert torch.allclose(expected[0], got[0]) and torch.allclose(expected[1], got[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "`steps` must be an int >= 1"),
        (dict(batch_size=0), "`batch_size` must be an int >= 1"),
        (dict(baseline="zeros"), "`baseline` must be one of"),
        (dict(baseline=torch.zeros(2, 3, 16, 16)), "must broadcast"),
        (dict(target=torch.tensor([0.0, 0, 0, 0])), "`target` must hold integer class indices"),
        (dict(target=5), r"`target` values must be in \[0, 2\)"),
        (dict(maps=torch.zeros(3, 4, 4)), r"`maps` must be a tensor of shape \(4, grid_h, grid_w\)"),
        (dict(maps=torch.full((4, 4, 4), float("nan"))), "`maps` must be finite"),
    ],
)
def test_errors_name_the_argument(kwargs, match):
    images, covering, _, target = _region_batch()
    arguments = {"maps": covering, "target": target, **kwargs}
    with pytest.raises(ValueError, match=match):
        deletion_insertion_auc(RegionReader(), images, arguments.pop("maps"), arguments.pop("target"), **arguments)


def test_rank_correlation_against_hand_computed_values():
    base = torch.arange(9.0).view(1, 3, 3)
    assert torch.allclose(rank_correlation(base, base * 2 + 1), torch.ones(1))
    assert torch.allclose(rank_correlation(base, -base), -torch.ones(1))
    assert torch.equal(rank_correlation(base, torch.zeros(1, 3, 3)), torch.zeros(1))
    # Ties share their mean rank: [0, 0, 1, 2] has ranks [0.5, 0.5, 2, 3]; against [0, 1, 2, 3]:
    tied = torch.tensor([[[0.0, 0.0], [1.0, 2.0]]])
    ranks_a, ranks_b = torch.tensor([0.5, 0.5, 2.0, 3.0]), torch.tensor([0.0, 1.0, 2.0, 3.0])
    a, b = ranks_a - ranks_a.mean(), ranks_b - ranks_b.mean()
    expected = (a * b).sum() / (a.norm() * b.norm())
    assert torch.allclose(rank_correlation(tied, torch.arange(4.0).view(1, 2, 2)), expected.view(1))
    with pytest.raises(ValueError, match="same shape"):
        rank_correlation(base, torch.zeros(1, 9))


def test_randomized_copy_redraws_every_parameter_leaves_the_model_and_rng_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.MultiheadAttention(8, 2))
    model[1].weight.data.fill_(3.0)
    vit = tiny_vit()
    original = {name: p.detach().clone() for name, p in vit.named_parameters()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    copies = [randomized_copy(m, seed=1) for m in (model, vit)]
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(p, original[name]) for name, p in vit.named_parameters())
    for source, clone in zip((model, vit), copies):
        for (name, before), after in zip(source.named_parameters(), clone.parameters()):
            if before.numel() > 1 and before.std() > 0:  # freshly reset LayerNorm weights are all ones
                assert not torch.equal(before, after), name
    # nn.MultiheadAttention is reset through its private _reset_parameters.
    assert not torch.equal(model[2].in_proj_weight, copies[0][2].in_proj_weight)
    assert torch.equal(copies[0][1].weight, torch.ones(8))
    again = randomized_copy(vit, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(again.parameters(), copies[1].parameters()))
    assert not torch.equal(randomized_copy(vit, seed=2).pos_embed, copies[1].pos_embed)
