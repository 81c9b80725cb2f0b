"""``explain`` keeps nothing alive once it returns: no hooked attention tensor, no autograd graph.

A Python function registered with ``Tensor.register_hook`` is owned by the tensor's autograd node (C++);
if it reaches an object that keeps the tensor, the loop runs through C++ and ``gc`` cannot free it. These
tests look for surviving attention-shaped tensors (``(B, heads, N, N)``) after each call, and for a live
tensor count that grows over repeated calls, on every adapter family.
"""

import gc
import weakref

import pytest
import torch
from model_zoo import tiny_vit
from torch import nn

from lightning_rollout import explain

METHODS = ("rollout", "grad_rollout", "chefer", "gradcam")


def _live_tensors() -> list:
    gc.collect()
    # issubclass on the type: isinstance would touch lazily deprecated module attributes gc also lists
    return [obj for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor)]


def _attention_shaped(batch: int, num_tokens: int) -> set:
    """Ids of the live ``(batch, heads, num_tokens, num_tokens)`` tensors."""
    shape = (num_tokens, num_tokens)
    return {id(t) for t in _live_tensors() if t.dim() == 4 and t.shape[0] == batch and tuple(t.shape[-2:]) == shape}


def _hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


def _torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    return model.eval()


class _MHAClassifier(nn.Module):
    """A plain ``nn.MultiheadAttention`` model (generic adapter): class token + 16 patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 32))
        self.norm = nn.LayerNorm(32)
        self.attn = nn.ModuleList([nn.MultiheadAttention(32, 2, batch_first=True) for _ in range(2)])
        self.head = nn.Linear(32, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for attn in self.attn:
            y = self.norm(x)
            x = x + attn(y, y, y, need_weights=False)[0]
        return self.head(x[:, 0])


def _mha() -> nn.Module:
    torch.manual_seed(0)
    return _MHAClassifier().eval()


FAMILIES = {
    "timm": (tiny_vit, {}),
    "hf": (_hf_vit, {}),
    "torchvision": (_torchvision_vit, {}),
    "mha": (_mha, {"num_prefix_tokens": 1, "grid_size": (4, 4)}),
}


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_no_attention_tensor_survives_explain(family, images):
    build, options = FAMILIES[family]
    model = build()
    before = _attention_shaped(3, 17)
    for method in METHODS:
        maps = explain(model, images, method, **options)
        assert maps.shape == (3, 4, 4)
        del maps
        assert _attention_shaped(3, 17) <= before, method


def _hooked_outputs_dead(model, module, pick, images, method):
    """Whether every output ``pick`` takes from ``module``'s forward is gone once ``explain`` returned."""
    seen = []
    handle = module.register_forward_hook(lambda m, i, out: seen.append(weakref.ref(pick(out))))
    try:
        explain(model, images, method)
    finally:
        handle.remove()
    gc.collect()
    return bool(seen) and all(ref() is None for ref in seen)


def test_weak_reference_to_a_hooked_timm_attention_is_dead(images):
    model = tiny_vit()
    assert _hooked_outputs_dead(model, model.blocks[1].attn.attn_drop, lambda out: out, images, "grad_rollout")


def test_weak_reference_to_a_hooked_hf_attention_is_dead(images):
    model = _hf_vit()
    layer = model.get_submodule("vit.layers.1.attention")
    assert _hooked_outputs_dead(model, layer, lambda out: out[1], images, "chefer")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_live_tensors_do_not_grow_over_repeated_calls(family, images):
    build, options = FAMILIES[family]
    model = build()
    for method in METHODS:  # first calls: lazily built caches settle
        explain(model, images, method, **options)
    before = len(_live_tensors())
    for _ in range(3):
        for method in METHODS:
            explain(model, images, method, **options)
    assert len(_live_tensors()) <= before


class _Boom(RuntimeError):
    pass


def test_nothing_survives_a_forward_that_raises_midway(images):
    model = tiny_vit()
    before = _attention_shaped(3, 17)

    def boom(module, inputs, output):
        raise _Boom("the last block fails")

    for method in METHODS:
        handle = model.blocks[2].register_forward_hook(boom)
        try:
            with pytest.raises(_Boom):
                explain(model, images, method)
        finally:
            handle.remove()
        assert _attention_shaped(3, 17) <= before, method
        explain(model, images, method)  # the model still works, nothing left hooked
        assert _attention_shaped(3, 17) <= before, method
