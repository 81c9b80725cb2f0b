"""``explain`` against the plain per-image reference, on every timm ViT shape."""

import pytest
import torch
from model_zoo import tiny_vit
from reference import reference_map

from lightning_rollout import explain

ATTENTION_METHODS = ["rollout", "grad_rollout", "chefer"]

SHAPES = {
    # name: (timm kwargs, input size, (num_prefix_tokens, what the head reads, grid))
    "class_token": ({}, (32, 32), (1, "cls", (4, 4))),
    "no_class_token": (dict(class_token=False, global_pool="avg"), (32, 32), (0, "pool", (4, 4))),
    "class_token_avg_pool": (dict(global_pool="avg"), (32, 32), (1, "pool", (4, 4))),
    "distilled": (dict(model_name="deit_tiny_distilled_patch16_224"), (32, 32), (2, "cls_dist", (4, 4))),
    "registers": (dict(reg_tokens=4), (32, 32), (5, "cls", (4, 4))),
    "registers_no_class": (dict(reg_tokens=2, class_token=False, global_pool="avg"), (32, 32), (2, "pool", (4, 4))),
    "non_square": (dict(img_size=(32, 48)), (32, 48), (1, "cls", (4, 6))),
    "dynamic": (dict(dynamic_img_size=True), (24, 40), (1, "cls", (3, 5))),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("method", ATTENTION_METHODS)
def test_batched_equals_per_image_reference(shape, method):
    kwargs, (h, w), geometry = SHAPES[shape]
    model = tiny_vit(**kwargs)
    images = torch.randn(3, 3, h, w, generator=torch.Generator().manual_seed(2))
    maps = explain(model, images, method)
    assert maps.shape == (3, *geometry[2]) and maps.dtype == torch.float32
    expected = torch.stack([reference_map(model, image, method, geometry) for image in images])
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.9])
def test_rollout_options_match_reference(vit, images, fusion, ratio):
    maps = explain(vit, images, "rollout", head_fusion=fusion, discard_ratio=ratio)
    expected = torch.stack([reference_map(vit, i, "rollout", (1, "cls", (4, 4)), fusion, ratio) for i in images])
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_rollout_without_discard_sums_to_one_over_all_tokens(vit, images):
    # Row-stochastic factors: the class row of R sums to 1 over all tokens, prefix included.
    maps = explain(vit, images, "rollout", discard_ratio=0.0)
    assert bool((maps.sum(dim=(1, 2)) < 1).all()) and bool((maps > 0).all())


def test_targets_change_gradient_maps_and_match_reference(vit, images):
    by_class = [explain(vit, images, "grad_rollout", target=c) for c in range(2)]
    assert not torch.allclose(by_class[0], by_class[1])
    labels = torch.tensor([4, 0, 2])
    maps = explain(vit, images, "chefer", target=labels)
    expected = torch.stack(
        [reference_map(vit, i, "chefer", (1, "cls", (4, 4)), target=t) for i, t in zip(images, labels)]
    )
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_predicted_class_is_the_default_target(vit, images):
    predicted = vit(images).argmax(-1)
    torch.testing.assert_close(explain(vit, images, "gradcam"), explain(vit, images, "gradcam", target=predicted))


def _gradcam_by_hand(model, images, target):
    activations = []
    handle = model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: activations.append(o))
    try:
        logits = model(images)
    finally:
        handle.remove()
    (grads,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), activations)
    a, g = activations[0][:, 1:], grads[:, 1:]
    cam = torch.relu(torch.einsum("bpc,bc->bp", a, g.mean(1)))
    return cam.reshape(len(images), 4, 4)


def test_gradcam_matches_hand_computation(vit, images):
    target = torch.tensor([1, 2, 3])
    torch.testing.assert_close(explain(vit, images, "gradcam", target=target), _gradcam_by_hand(vit, images, target))


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "chefer", "gradcam"])
def test_maps_are_non_negative_and_stay_on_device(vit, images, method):
    maps = explain(vit, images, method)
    assert maps.device == images.device and bool((maps >= 0).all()) and maps.sum() > 0


class _Wrapper(torch.nn.Module):
    """Stands for a LightningModule: the ViT is a child and forward returns its logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


def test_model_wrapping_a_vit(vit, images):
    torch.testing.assert_close(explain(_Wrapper(vit), images, "chefer"), explain(vit, images, "chefer"))


def test_lightning_module_wrapping_a_vit(vit, images):
    from lightning.pytorch import LightningModule

    class Module(LightningModule):
        def __init__(self):
            super().__init__()
            self.model = vit

        def forward(self, x):
            return self.model(x)

    torch.testing.assert_close(explain(Module(), images, "grad_rollout"), explain(vit, images, "grad_rollout"))


class _SoftmaxAttention(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qk = torch.nn.Linear(dim, 2 * dim)
        self.probs = torch.nn.Identity()  # hook point: post-softmax attention

    def forward(self, x):
        q, k = self.qk(x).chunk(2, dim=-1)
        attention = self.probs((q @ k.transpose(1, 2)).softmax(-1)[:, None])
        return x + (attention[:, 0] @ x)


class _CustomViT(torch.nn.Module):
    """Not timm: 2×3 patches of 4×4 pixels plus one leading token, two attention layers."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Conv2d(3, 8, 4, 4)
        self.token = torch.nn.Parameter(torch.randn(1, 1, 8))
        self.layers = torch.nn.ModuleList([_SoftmaxAttention(8), _SoftmaxAttention(8)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.token.expand(len(x), -1, -1), x], 1)
        for layer in self.layers:
            x = layer(x)
        return self.head(x[:, 0])


def test_custom_model_through_pattern_and_overrides():
    model = _CustomViT()
    images = torch.randn(2, 3, 8, 12)
    options = dict(attention_pattern="layers.*.probs", num_prefix_tokens=1, grid_size=(2, 3))
    maps = explain(model, images, "grad_rollout", **options)
    assert maps.shape == (2, 2, 3) and maps.sum() > 0
    assert explain(model, images, "rollout", **options).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="no model adapter knows it"):
        explain(model, images, attention_pattern="layers.*.probs")


def test_fused_attention_cannot_silence_capture(vit, images):
    # timm's default: fused (SDPA) attention, which never calls attn_drop, so naive hooks capture nothing.
    for block in vit.blocks:
        block.attn.fused_attn = True
    fused_logits = vit(images)
    maps = explain(vit, images, "rollout")
    assert maps.sum() > 0
    assert all(block.attn.fused_attn is True for block in vit.blocks)
    torch.testing.assert_close(vit(images), fused_logits)
    for block in vit.blocks:
        block.attn.fused_attn = False
    torch.testing.assert_close(explain(vit, images, "rollout"), maps)
