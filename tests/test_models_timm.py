"""The timm adapters: every family with global token attention, CaiT, and the Grad-CAM-only families."""

import pytest
import timm
import torch
from reference import _discard, _normalised

from lightning_rollout import explain
from lightning_rollout.methods import METHODS
from lightning_rollout.models import ModelAdapter, UnsupportedModelError, find_adapter, register_adapter
from lightning_rollout.models.registry import registered_adapters, unregister_adapter

SMALL = dict(depth=2, num_heads=2, embed_dim=32)

GLOBAL_ATTENTION = {
    # name: (model name, kwargs, input size, num_prefix_tokens, grid)
    "siglip_map_pool": ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8, **SMALL), (32, 32), 0, (4, 4)),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2", dict(img_size=28, **SMALL), (28, 28), 5, (2, 2)),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28, **SMALL), (28, 28), 1, (2, 2)),
    "beitv2_avg_pool": ("beitv2_base_patch16_224", dict(img_size=32, patch_size=8, **SMALL), (32, 32), 1, (4, 4)),
    "relpos": ("vit_relpos_small_patch16_224", dict(img_size=32, patch_size=8, **SMALL), (32, 32), 0, (4, 4)),
    "naflexvit": ("naflexvit_base_patch16_gap", dict(patch_size=8, **SMALL), (32, 40), 4, (4, 5)),
    "cait": (
        "cait_xxs24_224",
        dict(img_size=32, patch_size=8, depth=2, depth_token_only=1, num_heads=2, embed_dim=32),
        (32, 32),
        1,
        (4, 4),
    ),
}


def _build(name, kwargs):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=4, **kwargs).eval()


def _images(size, batch=2):
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("case", list(GLOBAL_ATTENTION))
def test_global_attention_families_serve_every_method(case):
    name, kwargs, size, prefix, grid = GLOBAL_ATTENTION[case]
    model = _build(name, kwargs)
    adapter = find_adapter(model)
    geometry = adapter.geometry(size)
    assert (geometry.num_prefix_tokens, geometry.grid_size) == (prefix, grid)
    images = _images(size)
    for method in METHODS:
        if case == "cait" and method == "legrad":  # refused: test_legrad.py
            continue
        maps = explain(model, images, method, discard_ratio=0.5)
        assert maps.shape == (2, *grid) and bool(torch.isfinite(maps).all()) and bool((maps >= 0).all())
        assert bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).all()), (case, method)


SPATIAL = {
    # name: (model name, kwargs, input size, expected Grad-CAM grid, words of the refusal)
    "swin": (
        "swin_tiny_patch4_window7_224",
        dict(img_size=64, window_size=4, embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)),
        (64, 64),
        (2, 2),
        "shifted local windows",
    ),
    "xcit": ("xcit_nano_12_p16_224", dict(img_size=32, patch_size=8, depth=2), (32, 32), (4, 4), "across channels"),
    "maxvit": ("maxvit_nano_rw_256", dict(img_size=64), (64, 64), (2, 2), "window and dilated-grid"),
}


@pytest.mark.parametrize("case", list(SPATIAL))
def test_families_without_global_attention_give_gradcam_and_say_why_not_the_rest(case):
    name, kwargs, size, grid, why = SPATIAL[case]
    model = _build(name, kwargs)
    images = _images(size)
    maps = explain(model, images, "gradcam")
    assert maps.shape == (2, *grid) and bool(torch.isfinite(maps).all())
    for method in ("rollout", "grad_rollout", "chefer"):
        with pytest.raises(UnsupportedModelError, match=rf"{why}.*Use method 'gradcam'"):
            explain(model, images, method)


def _cait_reference(model, image, method, target):
    """CaiT by hand: patch attentions padded with the class token, class-attention rows over [class, patches]."""
    captured = []
    handles = [
        m.register_forward_hook(lambda mod, i, o: captured.append(o))
        for n, m in model.named_modules()
        if n.endswith("attn.attn_drop")
    ]
    flags = {m: m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    for module in flags:
        module.fused_attn = False
    try:
        logits = model(image[None])
        grads = torch.autograd.grad(logits[0, target], captured) if method != "rollout" else [None] * len(captured)
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags.items():
            module.fused_attn = flag
    n = captured[0].shape[-1] + 1
    relevance = torch.eye(n)
    for attention, grad in zip(captured, grads):
        attention = attention.detach()[0]
        full, full_grad = torch.zeros(attention.shape[0], n, n), torch.zeros(attention.shape[0], n, n)
        if attention.shape[-2] == 1:  # class attention: row 0 is the attention, the patches keep themselves
            full[:] = torch.eye(n)
            full[:, 0] = attention[:, 0]
            if grad is not None:
                full_grad[:, 0] = grad[0][:, 0]
        else:
            full[:, 0, 0] = 1
            full[:, 1:, 1:] = attention
            if grad is not None:
                full_grad[:, 1:, 1:] = grad[0]
        if method == "rollout":
            relevance = _normalised(_discard(full.mean(0), 0.5)) @ relevance
        elif method == "grad_rollout":
            relevance = _normalised(_discard((full * full_grad).mean(0).clamp(min=0), 0.5)) @ relevance
        else:
            relevance = relevance + (full * full_grad).clamp(min=0).mean(0) @ relevance
    return relevance[0, 1:]


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "chefer"])
def test_cait_chains_patch_blocks_and_class_attention(method):
    name, kwargs, size, _, grid = GLOBAL_ATTENTION["cait"]
    model = _build(name, kwargs)
    images = _images(size)
    maps = explain(model, images, method, target=1, discard_ratio=0.5)
    expected = torch.stack([_cait_reference(model, image, method, 1) for image in images]).reshape(2, *grid)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)


def test_map_pool_readout_weights_are_the_pooling_attention():
    # With one head the pooled value is sum_i w_i v_i: the captured weights must reproduce it.
    model = _build("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8, depth=2, num_heads=1, embed_dim=16))
    adapter = find_adapter(model)
    images = _images((32, 32))
    pool = model.attn_pool
    seen = {}
    handles = [
        pool.register_forward_pre_hook(lambda m, i: seen.setdefault("tokens", i[0])),
        pool.proj.register_forward_pre_hook(lambda m, i: seen.setdefault("pooled", i[0])),
    ]
    try:
        with torch.no_grad(), adapter.capture_readout() as readout_of:
            model(images)
    finally:
        for h in handles:
            h.remove()
    weights = readout_of(adapter.geometry((32, 32))).pooled
    assert weights.shape == (2, 16) and torch.allclose(weights.sum(1), torch.ones(2))
    values = pool.kv(seen["tokens"]).reshape(2, 16, 2, 16)[:, :, 1]
    torch.testing.assert_close(torch.einsum("bn,bnc->bc", weights, values), seen["pooled"][:, 0], rtol=1e-4, atol=1e-5)


class _TwoLayerModel(torch.nn.Module):
    """A model no built-in adapter knows: its attention is the output of `probs` modules."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Conv2d(3, 8, 4, 4)
        self.probs = torch.nn.ModuleList([torch.nn.Softmax(-1), torch.nn.Softmax(-1)])
        self.head = torch.nn.Linear(8, 3)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2)
        for probs in self.probs:
            attention = probs((x @ x.transpose(1, 2))[:, None] / 8)
            x = x + (attention @ x[:, None])[:, 0]
        return self.head(x.mean(1))


def test_registered_adapter_serves_a_custom_model():
    from lightning_rollout.core.geometry import TokenGeometry

    class TwoLayerAdapter(ModelAdapter):
        family = "two-layer"

        @classmethod
        def find(cls, model):
            return model if isinstance(model, _TwoLayerModel) else None

        def geometry(self, image_size):
            return TokenGeometry(0, False, (image_size[0] // 4, image_size[1] // 4))

        def attention_layers(self):
            return [(f"probs.{i}", m) for i, m in enumerate(self.root.probs)]

        def gradcam_layer(self):
            return "embed", self.root.embed

    register_adapter(TwoLayerAdapter)
    try:
        model = _TwoLayerModel()
        images = _images((8, 12))
        assert find_adapter(model).family == "two-layer"
        for method in METHODS:
            if method == "legrad":  # needs blocks and a head the adapter does not give
                with pytest.raises(UnsupportedModelError, match="method 'legrad'"):
                    explain(model, images, method)
                continue
            assert explain(model, images, method).shape == (2, 2, 3)
    finally:
        unregister_adapter(TwoLayerAdapter)
    assert TwoLayerAdapter not in registered_adapters()
    with pytest.raises(ValueError, match="no model adapter knows"):
        explain(_TwoLayerModel(), images)


def test_register_adapter_refuses_other_types():
    with pytest.raises(TypeError, match="ModelAdapter subclass"):
        register_adapter(object)


def test_coverage_script_rows():
    # The README's coverage table comes from docs/coverage.py; two of its rows run here.
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "coverage.py")
    spec = importlib.util.spec_from_file_location("coverage_table", path)
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    rows = {case[0]: case for case in coverage.all_cases()}
    assert coverage.run_case(rows["timm deit (distilled)"]) == {
        "rollout": "ok",
        "grad_rollout": "ok",
        "chefer": "ok",
        "gradcam": "ok",
        "legrad": "ok",
        "attention": "ok",
        "adapter": "timm-vit",
    }
    xcit = coverage.run_case(rows["timm xcit"])
    assert xcit["gradcam"] == "ok" and xcit["rollout"].startswith("refused: Xcit has no global token attention")
