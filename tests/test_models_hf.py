"""The Hugging Face adapter against transformers' own eager ``output_attentions=True`` tensors.

Tiny random-init models (hidden 32, 2 layers, 32 px images, 8 px patches) built from configs; no downloads.
"""

import copy
import sys

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from model_zoo import CLIPClassifier, model_for
from reference import _discard, _normalised

from lightning_rollout import explain
from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models import UnsupportedModelError, find_adapter
from lightning_rollout.models.hf import ATTENTION_IMPLEMENTATION, HFAdapter, attention_forward

GLOBAL = ["vit", "deit", "deit_teacher", "beit", "beit_cls", "dinov2", "dinov2_reg", "clip"]


def _logits(output) -> torch.Tensor:
    return output.logits if hasattr(output, "logits") else output


def _images(batch: int = 2, size=(32, 32)) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(3))


def _reference(model: nn.Module, images: torch.Tensor):
    """Logits and per-layer attentions from transformers itself: an eager copy, ``output_attentions=True``."""
    reference = copy.deepcopy(model)
    if isinstance(reference, CLIPClassifier):
        reference.backbone.set_attn_implementation("eager")
        out = reference.backbone(pixel_values=images, output_attentions=True)
        return reference.head(out.pooler_output), out.attentions
    reference.set_attn_implementation("eager")
    out = reference(images, output_attentions=True)
    return out.logits, out.attentions


def _captured(model: nn.Module, images: torch.Tensor):
    adapter = find_adapter(model)
    captured, names = [], []

    def sink(name, attention, *layout):
        names.append(name)
        captured.append(attention)

    layers = adapter.attention_layers()
    with adapter.attention_settings(), adapter.capture_attention(layers, sink):
        logits = _logits(model(images))
    assert names == [name for name, _ in layers]
    return logits, captured


def _config_state(model: nn.Module):
    return [(c.to_json_string(), c.__dict__.get("_attn_implementation_internal")) for c in _all_configs(model)]


def _all_configs(model: nn.Module):
    return [m.config for m in model.modules() if isinstance(m, transformers.PreTrainedModel)]


# ----------------------------------------------------------------------------------------- finding


def test_find_takes_the_outermost_hf_model_and_a_tower_inside_a_user_module():
    vit = model_for("vit")
    adapter = find_adapter(vit)
    assert isinstance(adapter, HFAdapter) and adapter.root is vit
    clip = model_for("clip")
    adapter = find_adapter(clip)
    assert isinstance(adapter, HFAdapter) and adapter.root is clip.backbone
    assert HFAdapter.find(nn.Sequential(nn.Linear(2, 2))) is None


def test_find_leaves_a_wrapped_timm_model_to_the_timm_adapters():
    config = transformers.TimmWrapperConfig(
        architecture="vit_tiny_patch16_224",
        num_labels=5,
        model_args=dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2),
    )
    wrapper = transformers.TimmWrapperForImageClassification(config)
    assert HFAdapter.find(wrapper) is None
    adapter = find_adapter(wrapper)
    assert adapter.family == "timm-vit" and adapter.root is wrapper.timm_model


def test_find_never_imports_transformers(monkeypatch):
    # Without transformers' modeling module loaded, no Hugging Face model can exist: find looks no further.
    monkeypatch.delitem(sys.modules, "transformers.modeling_utils")
    assert HFAdapter.find(model_for("vit")) is None
    assert "transformers.modeling_utils" not in sys.modules


# ---------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "name, prefix, has_class_token",
    [
        ("vit", 1, True),
        ("deit", 2, True),
        ("deit_teacher", 2, True),
        ("beit", 1, True),
        ("dinov2", 1, True),
        ("dinov2_reg", 5, True),
        ("clip", 1, True),
        ("swin", 0, False),
    ],
)
def test_geometry_from_the_config(name, prefix, has_class_token):
    adapter = find_adapter(model_for(name))
    grid = (4, 4)  # 8 px patches; Swin: 8×8 patches of 4 px, merged once
    assert adapter.geometry((32, 32)) == TokenGeometry(prefix, has_class_token, grid)
    assert adapter.geometry(None) == TokenGeometry(prefix, has_class_token, grid)
    if name != "swin":  # the grid follows the input, not sqrt(N)
        assert adapter.geometry((32, 48)).grid_size == (4, 6)


@pytest.mark.parametrize("name", ["vit", "dinov2_reg", "deit_teacher"])
def test_geometry_matches_the_attention_shape(name):
    model = model_for(name)
    _, captured = _captured(model, _images())
    geometry = find_adapter(model).geometry((32, 32))
    assert all(a.shape == (2, 2, geometry.num_tokens, geometry.num_tokens) for a in captured)


def test_swin_geometry_is_the_last_stage_grid_also_for_padded_inputs():
    model = model_for("swin")
    adapter = find_adapter(model)
    # 30×44 px → padded to 8×11 patches of 4 px → one patch merging (rounded up) → 4×6.
    assert adapter.geometry((30, 44)) == TokenGeometry(0, False, (4, 6))
    tokens = []
    with torch.no_grad(), adapter.capture_gradcam(lambda name, x, *layout: tokens.append(x)):
        model(_images(1, (30, 44)))
    assert tokens[0].shape == (1, 24, model.swin.num_features)


def test_unknown_model_type_asks_for_the_geometry_and_still_gives_its_attention():
    adapter = find_adapter(model_for("vit_msn"))
    with pytest.raises(ValueError, match="pass `num_prefix_tokens` and `grid_size`"):
        adapter.geometry((32, 32))
    _, captured = _captured(model_for("vit_msn"), _images())
    assert [a.shape for a in captured] == [(2, 2, 17, 17)] * 2


# -------------------------------------------------------------------------------- attention parity


@pytest.mark.parametrize("name", GLOBAL)
def test_captured_attention_and_its_gradients_equal_transformers_own(name):
    """The tensors equal ``output_attentions=True`` of an eager copy, and so do autograd's gradients on them."""
    model = model_for(name)
    images = _images()
    target = torch.tensor([1, 3])
    with torch.enable_grad():
        reference_logits, reference = _reference(model, images)
        expected = torch.autograd.grad(reference_logits.gather(1, target[:, None]).sum(), reference)
        logits, captured = _captured(model, images)
        gradients = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), captured)
    assert len(captured) == len(reference) == 2
    for ours, theirs in zip(captured, reference):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    torch.testing.assert_close(logits, reference_logits, rtol=0, atol=0)
    assert any(float(g.abs().max()) > 0 for g in expected)
    for ours, theirs in zip(gradients, expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def _qkv(heads: int, head_dim: int, dtype=torch.float32):
    """Head-split views ``(B, heads, N, d)`` of one projection, as transformers' attention modules pass them."""
    generator = torch.Generator().manual_seed(7)
    packed = torch.randn(2, 9, 3 * heads * head_dim, generator=generator).to(dtype)
    return [x.view(2, 9, heads, head_dim).transpose(1, 2) for x in packed.split(heads * head_dim, dim=-1)]


@pytest.mark.parametrize(
    "head_dim, mask, dtype, exact",
    [
        (16, False, torch.float32, True),  # power-of-two scale: bit-identical
        (64, True, torch.float32, True),
        (24, True, torch.float32, False),  # other scales: float rounding
        (16, True, torch.bfloat16, True),  # the softmax in float32, the result in the queries' dtype
    ],
)
def test_attention_forward_equals_transformers_eager_attention(head_dim, mask, dtype, exact):
    from transformers.models.vit.modeling_vit import eager_attention_forward

    module = nn.Module().eval()
    query, key, value = _qkv(3, head_dim, dtype)
    attention_mask = torch.randn(2, 1, 9, 9, generator=torch.Generator().manual_seed(8)).to(dtype) if mask else None
    expected = eager_attention_forward(module, query, key, value, attention_mask, scaling=head_dim**-0.5)
    ours = attention_forward(module, query, key, value, attention_mask, scaling=head_dim**-0.5)
    tolerance = dict(rtol=0, atol=0) if exact else {}  # assert_close defaults: float32 rounding
    for got, want in zip(ours, expected):
        assert got.shape == want.shape and got.dtype == want.dtype
        torch.testing.assert_close(got, want, **tolerance)
    with pytest.raises(ValueError, match="got dropout=0.1"):
        attention_forward(module, query, key, value, None, dropout=0.1)


@pytest.mark.parametrize("name", ["vit", "beit", "clip"])
def test_maps_equal_those_over_transformers_eager_attention(name, monkeypatch):
    """The side pass's own attention changes no bit of any map (power-of-two scale)."""
    model = model_for(name)
    images = _images()
    ours = {method: explain(model, images, method) for method in ("rollout", "grad_rollout", "chefer")}
    monkeypatch.setattr("lightning_rollout.models.hf.attention.ATTENTION_IMPLEMENTATION", "eager")
    for method, maps in ours.items():
        assert torch.equal(maps, explain(model, images, method)), method


# ------------------------------------------------------------------------------- settings restored


@pytest.mark.parametrize("name", ["vit", "clip"])
def test_eager_switch_restores_config_and_outputs_also_when_the_forward_raises(name):
    model = copy.deepcopy(model_for(name))
    adapter = find_adapter(model)
    images = _images()
    with torch.no_grad():
        before = _logits(model(images))
    state = _config_state(model)
    assert adapter.root.config._attn_implementation == "sdpa"

    with adapter.attention_settings():
        assert all(c._attn_implementation == ATTENTION_IMPLEMENTATION for c in _all_configs(model))
    assert _config_state(model) == state

    hooks = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]

    def failing_sink(name, attention, *layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with adapter.attention_settings(), adapter.capture_attention(adapter.attention_layers(), failing_sink):
            model(images)
    assert _config_state(model) == state
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == hooks
    with torch.no_grad():
        after = _logits(model(images))
    assert torch.equal(before, after)


# ----------------------------------------------------------------------------------------- read-out


@pytest.mark.parametrize(
    "name, rows, pooled",
    [
        ("vit", {0: 1.0}, None),
        ("deit", {0: 1.0}, None),
        ("deit_teacher", {0: 0.5, 1: 0.5}, None),
        ("beit", None, (1, 1.0)),
        ("beit_cls", {0: 1.0}, None),
        ("dinov2", {0: 0.5}, (1, 0.5)),
        ("dinov2_reg", {0: 0.5}, (5, 0.5)),
        ("clip", {0: 1.0}, None),
    ],
)
def test_readout_follows_the_head(name, rows, pooled):
    adapter = find_adapter(model_for(name))
    geometry = adapter.geometry((32, 32))
    readout = adapter.readout(geometry)
    n = geometry.num_tokens
    if rows is None:
        assert readout.rows is None
    else:
        expected = torch.zeros(n)
        expected[list(rows)] = torch.tensor(list(rows.values()))
        torch.testing.assert_close(readout.rows, expected)
    if pooled is None:
        assert readout.pooled is None
    else:
        first, total = pooled
        expected = torch.zeros(n)
        expected[first:] = total / (n - first)
        torch.testing.assert_close(readout.pooled, expected)


# ----------------------------------------------------------------------------------------- Grad-CAM


@pytest.mark.parametrize(
    "name, norm",
    [
        ("vit", "vit.layers.1.layernorm_before"),
        ("dinov2", "dinov2.encoder.layer.1.norm1"),
        ("clip", "backbone.encoder.layers.1.layer_norm1"),
    ],
)
def test_gradcam_reads_the_last_attention_input_norm(name, norm):
    model = model_for(name)
    adapter = find_adapter(model)
    expected, tokens = [], []
    handle = model.get_submodule(norm).register_forward_hook(lambda m, i, o: expected.append(o))
    try:
        with torch.no_grad(), adapter.capture_gradcam(lambda n, x, *layout: tokens.append(x)) as layer_name:
            model(_images())
    finally:
        handle.remove()
    assert layer_name.endswith("(input)")
    assert len(tokens) == 1 and tokens[0] is expected[0]
    assert tokens[0].shape == (2, adapter.geometry((32, 32)).num_tokens, 32)


def test_swin_refuses_the_attention_methods_and_gives_gradcam_on_its_last_stage():
    for name in ("swin", "swinv2"):
        model = model_for(name)
        adapter = find_adapter(model)
        with pytest.raises(UnsupportedModelError, match="local windows"):
            adapter.attention_layers()
        with pytest.raises(UnsupportedModelError, match="local windows.*Use method 'gradcam'"):
            explain(model, _images(), "rollout")  # the engine names the methods that work
        layer_name, layer = adapter.gradcam_layer()
        assert layer_name == f"{name}.layernorm" and layer is model.get_submodule(layer_name)
        tokens = []
        with torch.no_grad(), adapter.capture_gradcam(lambda n, x, *layout: tokens.append(x)):
            model(_images())
        assert tokens[0].shape == (2, adapter.geometry((32, 32)).num_tokens, model.config.embed_dim * 2)


# ------------------------------------------------------------------------------------ end to end

READOUTS = {  # token rows the head reads, and (first pooled token, weight) of a patch-mean head
    "vit": ({0: 1.0}, None),
    "deit_teacher": ({0: 0.5, 1: 0.5}, None),
    "beit": ({}, (1, 1.0)),
    "dinov2_reg": ({0: 0.5}, (5, 0.5)),
    "clip": ({0: 1.0}, None),
}


def _eager_copy(model: nn.Module):
    """A copy on transformers' eager attention, and a function image → (logits, attentions) through it."""
    reference = copy.deepcopy(model)
    if isinstance(reference, CLIPClassifier):
        reference.backbone.set_attn_implementation("eager")

        def run(image):
            out = reference.backbone(pixel_values=image[None], output_attentions=True)
            return reference.head(out.pooler_output), out.attentions

    else:
        reference.set_attn_implementation("eager")

        def run(image):
            out = reference(image[None], output_attentions=True)
            return out.logits, out.attentions

    return reference, run


def reference_maps(run, image, geometry, readout, discard_ratio=0.9):
    """One image, the textbook recipes over transformers' own ``output_attentions`` (autograd on them)."""
    with torch.enable_grad():
        logits, attentions = run(image)
        gradients = torch.autograd.grad(logits[0, int(logits.argmax())], attentions)
    maps = {}
    for method in ("rollout", "grad_rollout", "chefer"):
        relevance = torch.eye(geometry.num_tokens)
        for attention, gradient in zip(attentions, gradients):
            attention, gradient = attention[0].detach(), gradient[0]
            if method == "rollout":
                fused = _discard(attention.mean(0), discard_ratio)
                relevance = _normalised(fused) @ relevance
            elif method == "grad_rollout":
                fused = _discard((attention * gradient).mean(0).clamp(min=0), discard_ratio)
                relevance = _normalised(fused) @ relevance
            else:
                relevance = relevance + (gradient * attention).clamp(min=0).mean(0) @ relevance
        rows, pooled = readout
        row = sum(weight * relevance[token] for token, weight in rows.items()) if rows else 0
        if pooled is not None:
            first, weight = pooled
            off_diagonal = relevance - torch.diag(relevance.diagonal())
            row = row + weight * off_diagonal[first:].mean(0)
        maps[method] = row[geometry.num_prefix_tokens :].reshape(geometry.grid_size)
    return maps


@pytest.mark.parametrize("name", list(READOUTS))
def test_explain_equals_the_recipes_over_transformers_attentions(name):
    model = model_for(name)
    images = _images()
    geometry = find_adapter(model).geometry((32, 32))
    _, run = _eager_copy(model)
    references = [reference_maps(run, image, geometry, READOUTS[name]) for image in images]
    for method in ("rollout", "grad_rollout", "chefer"):
        maps = explain(model, images, method)
        expected = torch.stack([reference[method] for reference in references])
        assert maps.shape == (2, *geometry.grid_size)
        assert float(expected.abs().max()) > 0, method
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6, msg=lambda m: f"{method}: {m}")


@pytest.mark.parametrize(
    "name, norm",
    [
        ("vit", "vit.layers.1.layernorm_before"),
        ("dinov2_reg", "dinov2_with_registers.encoder.layer.1.norm1"),
        ("swin", "swin.layernorm"),
    ],
)
def test_explain_gradcam_equals_the_recipe(name, norm):
    model = model_for(name)
    images = _images()
    geometry = find_adapter(model).geometry((32, 32))
    maps = explain(model, images, "gradcam")
    reference, run = _eager_copy(model)
    expected = []
    for image in images:
        kept = []
        handle = reference.get_submodule(norm).register_forward_hook(lambda m, i, o: kept.append(o))
        with torch.enable_grad():
            logits, _ = run(image)
            (gradient,) = torch.autograd.grad(logits[0, int(logits.argmax())], kept[0])
        handle.remove()
        tokens, gradient = kept[0][0, geometry.num_prefix_tokens :].detach(), gradient[0, geometry.num_prefix_tokens :]
        expected.append((tokens * gradient.mean(0)).sum(-1).clamp(min=0).reshape(geometry.grid_size))
    torch.testing.assert_close(maps, torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_explain_leaves_the_model_bit_identical_and_swin_refuses_attention_methods():
    model = copy.deepcopy(model_for("vit"))
    images = _images()
    state = _config_state(model)
    with torch.no_grad():
        before = model(images).logits
    for method in ("rollout", "grad_rollout", "chefer", "gradcam"):
        explain(model, images, method)
    assert _config_state(model) == state
    with torch.no_grad():
        assert torch.equal(model(images).logits, before)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(UnsupportedModelError, match="Use method 'gradcam'"):
        explain(model_for("swin"), images, "rollout")
