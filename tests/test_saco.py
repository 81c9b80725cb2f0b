"""SaCo (Wu et al., CVPR 2024): by hand, against a per-sample loop, on models whose causes are known."""

import math

import pytest
import torch
from torch import nn

from lightning_rollout.metrics import saco


def small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    ).eval()


def pixel_linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Module:
    """Logits ``weight @ flatten(x) + bias``: every pixel's share of every logit is known exactly."""
    linear = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), linear).eval()


def hand_model() -> nn.Module:
    # Pixels p0..p3 of a 1×2×2 image in row-major order. Both logits are 0 on the image [[1, 2], [3, 4]].
    return pixel_linear(torch.tensor([[-2.0, 2.0, 2.0, 1.0], [0.0, 0.0, 5.0, 0.0]]), torch.tensor([-12.0, -15.0]))


HAND_IMAGE = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
HAND_MAP = torch.tensor([[[0.4, 0.1], [0.3, 0.2]]])  # groups of one pixel: G1 = p0, G2 = p2, G3 = p3, G4 = p1


def sigmoid(value: float) -> float:
    return 1.0 / (1.0 + math.exp(-value))


@pytest.mark.parametrize(
    "activation, new_score, expected",
    [
        # Replacing pixel p by the mean 2.5 moves logit 0 by -2*1.5, 2*0.5, 2*-0.5, 1*-1.5 = [3, -1, 1, 1.5]
        # downwards for p0..p3, and logit 1 by 5*-0.5 = 2.5 downwards for p2 only.
        # softmax of class 0 = sigmoid(l0 - l1): groups G1..G4 = p0, p2, p3, p1 leave l0 - l1 = -3, 1.5, -1.5, 1.
        # Δ = 0.5 - p: pairs (w = s_i - s_j, sign of Δ_i >= Δ_j): (1,2) +.1, (1,3) +.2, (1,4) +.3,
        # (2,3) -.1, (2,4) -.2, (3,4) +.1 → F = 0.4 / 1.0.
        ("softmax", [-3.0, 1.5, -1.5, 1.0], 0.4),
        # sigmoid of l0 alone: G1..G4 leave l0 = -3, -1, -1.5, 1: only (2,3) is counted -.1 → F = 0.8.
        ("sigmoid", [-3.0, -1.0, -1.5, 1.0], 0.8),
    ],
)
def test_by_hand_with_one_pixel_per_group(activation, new_score, expected):
    deltas = [0.5 - sigmoid(score) for score in new_score]
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
    salience = [0.4, 0.3, 0.2, 0.1]
    signed = sum((salience[i] - salience[j]) * (1 if deltas[i] >= deltas[j] else -1) for i, j in pairs)
    assert signed / sum(salience[i] - salience[j] for i, j in pairs) == pytest.approx(expected)
    score = saco(hand_model(), HAND_IMAGE, HAND_MAP, 0, groups=4, activation=activation)
    assert score.dtype == torch.float32 and score.shape == (1,)
    assert score.item() == pytest.approx(expected, abs=1e-6)


def test_by_hand_with_two_pixels_per_group():
    # G1 = {p0, p2} (mean salience 0.35) lowers l0 - l1 by 3 - 1.5, G2 = {p3, p1} (0.15) by 1.5 - 1: F = 1.
    assert saco(hand_model(), HAND_IMAGE, HAND_MAP, 0, groups=2).item() == 1.0


def test_the_true_cause_scores_1_and_its_negation_minus_1():
    # Logit 0 is linear in the pixels, logit 1 is 0: replacing a group lowers logit 0 by exactly the sum of
    # weight * (pixel - channel mean) over the group, so that map (summed over channels) is the true cause.
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 8, 8, generator=generator)
    weight = torch.randn(3, 8, 8, generator=generator) / 8
    model = pixel_linear(torch.stack([weight.flatten(), torch.zeros(192)]), torch.zeros(2))
    cause = (weight * (images - images.mean(dim=(2, 3), keepdim=True))).sum(dim=1)
    for groups in (4, 8, 16):
        torch.testing.assert_close(saco(model, images, cause, 0, groups=groups), torch.ones(16))
        torch.testing.assert_close(saco(model, images, -cause, 0, groups=groups), -torch.ones(16))


def test_a_random_map_scores_about_0():
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(128, 3, 8, 8, generator=generator)
    maps = torch.rand(128, 4, 4, generator=generator)
    scores = saco(small_convnet(), images, maps, groups=8)
    assert scores.shape == (128,) and bool(((scores >= -1) & (scores <= 1)).all())
    assert abs(scores.mean().item()) < 0.1
    assert scores.std().item() > 0.1, "single samples do spread: the mean is near 0 by averaging"


def naive_saco(model, images, maps, target, groups, activation):
    """One sample, one group, one pair at a time; integer enlargement by repetition."""
    scores = []
    height, width = images.shape[-2:]
    for image, token_map, label in zip(images, maps, target.tolist()):
        factor_h, factor_w = height // token_map.shape[0], width // token_map.shape[1]
        salience = token_map.repeat_interleave(factor_h, 0).repeat_interleave(factor_w, 1).flatten().tolist()
        order = sorted(range(height * width), key=lambda pixel: -salience[pixel])  # stable: ties by position
        members = [[p for rank, p in enumerate(order) if rank * groups // len(order) == g] for g in range(groups)]
        mean = [sum(salience[p] for p in group) / len(group) for group in members]
        probabilities = []
        for group in members:
            perturbed = image.clone().flatten(1)
            perturbed[:, group] = image.mean(dim=(1, 2))[:, None]
            logits = model(perturbed.view(1, *image.shape))[0]
            probabilities.append((logits.softmax(0) if activation == "softmax" else logits.sigmoid())[label].item())
        signed = total = 0.0
        for i in range(groups):
            for j in range(i + 1, groups):
                weight = mean[i] - mean[j]
                signed += weight if probabilities[i] <= probabilities[j] else -weight  # Δ_i >= Δ_j
                total += abs(weight)
        scores.append(signed / total if total > 0 else 0.0)
    return torch.tensor(scores)


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
@pytest.mark.parametrize("groups", [3, 7, 10])
def test_matches_a_per_sample_loop_with_unequal_groups(activation, groups):
    generator = torch.Generator().manual_seed(groups)
    images = torch.rand(6, 3, 6, 10, generator=generator)  # 60 pixels: 7 groups of 8 or 9
    maps = torch.rand(6, 3, 5, generator=generator)  # tokens of 2×2 pixels
    target = torch.randint(0, 5, (6,), generator=generator)
    model = small_convnet()
    with torch.no_grad():
        expected = naive_saco(model, images, maps, target, groups, activation)
    torch.testing.assert_close(saco(model, images, maps, target, groups=groups, activation=activation), expected)


def test_chunks_and_batch_neighbours_change_nothing():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(5, 3, 8, 8, generator=generator)
    maps = torch.rand(5, 4, 4, generator=generator)
    model = small_convnet()
    together = saco(model, images, maps, groups=6)
    for batch_size in (1, 4, 7, 30, 100):
        torch.testing.assert_close(saco(model, images, maps, groups=6, batch_size=batch_size), together)
    for sample in range(5):
        one = saco(model, images[sample : sample + 1], maps[sample : sample + 1], groups=6)
        torch.testing.assert_close(one, together[sample : sample + 1])
    predicted = model(images).argmax(dim=1)
    torch.testing.assert_close(saco(model, images, maps, predicted, groups=6), together)


def test_a_constant_map_scores_0_also_with_unequal_groups():
    # 64 pixels in 7 groups of 9 or 10: the groups' means of 2.2 differ by rounding, the pairs still weigh 0.
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    scores = saco(small_convnet(), images, torch.full((3, 4, 4), 2.2), groups=7)
    assert scores.tolist() == [0.0, 0.0, 0.0]


def test_output_key_picks_the_logits():
    class DictOutput(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = small_convnet()

        def forward(self, x: torch.Tensor) -> dict:
            return {"features": x.mean(), "scores": self.net(x)}

    model = DictOutput().eval()
    images = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(
        saco(model, images, maps, 1, groups=4, output_key="scores"), saco(model.net, images, maps, 1, groups=4)
    )


def test_leaves_modes_rng_and_gradients_as_found():
    model = small_convnet().train()
    model[0].eval()  # a mix of modes, restored per submodule
    modes = [module.training for module in model.modules()]
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(5)).requires_grad_()
    maps = torch.rand(4, 4, 4, generator=torch.Generator().manual_seed(6))
    state = torch.get_rng_state()
    first = saco(model, images, maps, groups=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert [module.training for module in model.modules()] == modes
    assert all(parameter.grad is None for parameter in model.parameters()) and images.grad is None
    assert not first.requires_grad
    with torch.inference_mode():
        torch.testing.assert_close(saco(model, images.detach(), maps, groups=4), first)  # eval mode: no dropout


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=torch.rand(3, 8, 8)), r"`images` must be a float tensor of shape \(B, C, H, W\)"),
        (dict(maps=torch.rand(2, 16)), r"`maps` must be a tensor of shape \(2, grid_h, grid_w\), got \(2, 16\)"),
        (dict(maps=torch.rand(3, 4, 4)), r"`maps` must be a tensor of shape \(2, grid_h, grid_w\), got \(3, 4, 4\)"),
        (dict(maps=torch.rand(2, 16, 4)), r"`maps` must not be larger than the images \(8, 8\), got \(16, 4\)"),
        (dict(maps=torch.full((2, 4, 4), float("nan"))), r"`maps` must be finite"),
        (dict(groups=1), r"`groups` must be an int >= 2, got 1"),
        (dict(groups=2.5), r"`groups` must be an int >= 2, got 2.5"),
        (dict(groups=True), r"`groups` must be an int >= 2, got True"),
        (dict(groups=65), r"`groups` must be at most the number of pixels H \* W = 64, got 65"),
        (dict(activation="relu"), r"`activation` must be one of \['softmax', 'sigmoid'\], got 'relu'"),
        (dict(batch_size=0), r"`batch_size` must be an int >= 1, got 0"),
        (dict(target=5), r"`target` values must be in \[0, 5\), got \[5, 5\]"),
        (dict(target=torch.tensor([0.0, 1.0])), r"`target` must hold integer class indices, got dtype torch.float32"),
        (dict(target=torch.tensor([0, 1, 2])), r"`target` must have shape \(2,\) for this batch, got \(3,\)"),
        (dict(output_key="probs"), r"`output_key`='probs' selects no tensor"),
    ],
)
def test_argument_errors_name_the_argument_value_and_what_is_allowed(change, message):
    arguments = dict(
        images=torch.rand(2, 3, 8, 8),
        maps=torch.rand(2, 4, 4),
        target=None,
        groups=4,
        activation="softmax",
        batch_size=None,
        output_key=None,
    )
    arguments.update(change)
    model, images, maps = small_convnet(), arguments.pop("images"), arguments.pop("maps")
    with pytest.raises(ValueError, match=message):
        saco(model, images, maps, **arguments)
