"""The nn.MultiheadAttention replay and the torchvision ViT / generic MHA adapters.

Parity: the replayed attention equals ``nn.MultiheadAttention(need_weights=True, average_attn_weights=False)``,
the replayed output equals the module's own, and gradients reach the handed-out attention.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from model_zoo import course_vit, torchvision_vit
from reference import _discard, _normalised
from torch import nn

from lightning_rollout import explain
from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models import UnsupportedModelError, find_adapter
from lightning_rollout.models.mha import (
    MultiheadAttentionAdapter,
    TorchvisionViTAdapter,
    fast_path_disabled,
    replayed_attention,
)


def _images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3))


def _reference_attention(model: nn.Module, images: torch.Tensor):
    """Per-layer weights from the modules themselves, forced to ``need_weights=True, average_attn_weights=False``."""
    weights, handles = [], []

    def force(module, args, kwargs):
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_pre_hook(force, with_kwargs=True))
            handles.append(module.register_forward_hook(lambda m, i, o: weights.append(o[1])))
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    return logits, weights


def _captured(model: nn.Module, images: torch.Tensor, grad: bool = False):
    adapter = find_adapter(model)
    captured = []
    layers = adapter.attention_layers()
    with torch.set_grad_enabled(grad), adapter.attention_settings():
        with adapter.capture_attention(layers, lambda name, attention, *layout: captured.append((name, attention))):
            logits = model(images)
    assert [name for name, _ in captured] == [name for name, _ in layers]
    return logits, [attention for _, attention in captured]


# ---------------------------------------------------------------------------------- the replay itself


def _masks(case: str, batch: int, heads: int, queries: int, keys: int):
    generator = torch.Generator().manual_seed(5)
    attn_mask = key_padding_mask = None
    if case in ("bool_2d", "padding_and_bool"):
        attn_mask = torch.rand(queries, keys, generator=generator) > 0.7
        attn_mask[:, 0] = False  # every query keeps one key
    if case == "float_3d":
        attn_mask = torch.randn(batch * heads, queries, keys, generator=generator)
    if case in ("padding", "padding_and_bool"):
        key_padding_mask = torch.zeros(batch, keys, dtype=torch.bool)
        key_padding_mask[0, -2:] = True
    return attn_mask, key_padding_mask


REPLAY_CASES = [  # module options × masks, each case on sequence-first and batch-first inputs
    ({}, "none"),
    ({}, "bool_2d"),
    ({}, "float_3d"),
    ({}, "padding_and_bool"),
    ({"bias": False}, "padding"),
    ({"add_bias_kv": True}, "padding_and_bool"),
    ({"add_zero_attn": True}, "float_3d"),
    ({"add_bias_kv": True, "add_zero_attn": True}, "bool_2d"),
    ({"kdim": 12, "vdim": 20}, "padding_and_bool"),
    ({"kdim": 12, "vdim": 20, "add_bias_kv": True}, "float_3d"),
]


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("options, case", REPLAY_CASES, ids=[f"{sorted(o)}-{c}" for o, c in REPLAY_CASES])
def test_replay_equals_the_module_weights_and_output(batch_first, options, case):
    torch.manual_seed(0)
    heads, dim, batch, queries = 2, 16, 3, 5
    module = nn.MultiheadAttention(dim, heads, batch_first=batch_first, **options).eval()
    cross = "kdim" in options
    keys = 7 if cross else queries
    query = torch.randn(batch, queries, dim)
    key = torch.randn(batch, keys, options.get("kdim", dim)) if cross else query
    value = torch.randn(batch, keys, options.get("vdim", dim)) if cross else query
    if not batch_first:
        query, key, value = (x.transpose(0, 1) for x in (query, key, value))
    attn_mask, key_padding_mask = _masks(case, batch, heads, queries, keys)
    kwargs = dict(attn_mask=attn_mask, key_padding_mask=key_padding_mask, average_attn_weights=False)

    expected, expected_weights = module(query, key, value, **kwargs)
    handed = []
    with replayed_attention([("attn", module)], lambda name, attention, *layout: handed.append(attention)):
        output, weights = module(query, key, value, **kwargs)
        averaged = module(query, key, value, attn_mask=attn_mask, key_padding_mask=key_padding_mask)[1]
        no_weights = module(
            query, key, value, need_weights=False, attn_mask=attn_mask, key_padding_mask=key_padding_mask
        )[1]
    assert "forward" not in module.__dict__
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(averaged, expected_weights.mean(dim=1), rtol=1e-5, atol=1e-6)
    assert no_weights is None
    # `on_capture` gets the attention over the given keys, (B, heads, L, S), also when extra key slots exist.
    assert handed[0].shape == (batch, heads, queries, keys)
    torch.testing.assert_close(handed[0], expected_weights[..., :keys], rtol=1e-5, atol=1e-6)


def test_replay_refuses_a_module_with_only_one_key_value_bias():
    module = nn.MultiheadAttention(16, 2, add_bias_kv=True).eval()
    module.bias_v = None
    x = torch.randn(5, 1, 16)
    with replayed_attention([("attn", module)], lambda name, attention, *layout: None):
        with pytest.raises(ValueError, match=r"module 'attn' has one of `bias_k`, `bias_v`"):
            module(x, x, x)


def test_replay_of_unbatched_input():
    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 2).eval()
    x = torch.randn(5, 16)
    expected, expected_weights = module(x, x, x, average_attn_weights=False)
    handed = []
    with replayed_attention([("attn", module)], lambda name, attention, *layout: handed.append(attention)):
        output, weights = module(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights, expected_weights, rtol=1e-5, atol=1e-6)
    assert handed[0].shape == (1, 2, 5, 5)


@pytest.mark.parametrize("batch_first", [False, True])
def test_the_output_is_computed_from_the_handed_out_attention(batch_first):
    """d(score)/d(attention) through the replay equals the gradient of ``out_proj(attention @ V)``."""
    torch.manual_seed(0)
    module = nn.MultiheadAttention(16, 2, batch_first=batch_first).eval()
    x = torch.randn(3, 5, 16) if batch_first else torch.randn(5, 3, 16)
    direction = torch.randn_like(x)
    handed = []
    with torch.enable_grad(), replayed_attention([("attn", module)], lambda n, a, *layout: handed.append(a)):
        output, _ = module(x, x, x, need_weights=False)
        (gradient,) = torch.autograd.grad((output * direction).sum(), handed[0])

    # Independent: the value path and output projection from the module's weights, the attention a leaf.
    attention = handed[0].detach().requires_grad_(True)
    tokens = x if batch_first else x.transpose(0, 1)
    values = F.linear(tokens, module.in_proj_weight[32:], module.in_proj_bias[32:])
    values = values.reshape(3, 5, 2, 8).transpose(1, 2)
    mixed = (attention @ values).transpose(1, 2).reshape(3, 5, 16)
    reference = module.out_proj(mixed)
    reference = reference if batch_first else reference.transpose(0, 1)
    (expected,) = torch.autograd.grad((reference * direction).sum(), attention)
    torch.testing.assert_close(gradient, expected, rtol=1e-5, atol=1e-6)
    assert float(gradient.abs().max()) > 0


def test_replay_restores_forward_when_the_forward_raises():
    module = nn.MultiheadAttention(16, 2).eval()
    own = module.forward

    def failing_sink(name, attention, *layout):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        with replayed_attention([("attn", module)], failing_sink):
            module(torch.randn(4, 1, 16), torch.randn(4, 1, 16), torch.randn(4, 1, 16))
    assert "forward" not in module.__dict__ and module.forward == own


def test_replay_refuses_other_modules():
    with pytest.raises(UnsupportedModelError, match="'blocks.0' is a Linear, not an nn.MultiheadAttention"):
        with replayed_attention([("blocks.0", nn.Linear(2, 2))], lambda n, a, *layout: None):
            pass


# ------------------------------------------------------------------------------------- whole models

MODELS = {
    "course_seq_first": lambda: course_vit(batch_first=False),
    "course_batch_first": lambda: course_vit(batch_first=True),
    "torchvision": torchvision_vit,
}


@pytest.mark.parametrize("name", list(MODELS))
def test_captured_attention_equals_the_module_weights_in_a_model(name):
    model = MODELS[name]()
    images = _images()
    expected_logits, expected = _reference_attention(model, images)
    logits, captured = _captured(model, images)
    assert len(captured) == len(expected) == 2
    for ours, theirs in zip(captured, expected):
        assert ours.shape == (2, 2, 17, 17)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, expected_logits, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(MODELS))
def test_gradients_reach_every_captured_layer(name):
    model = MODELS[name]()
    logits, captured = _captured(model, _images(), grad=True)
    gradients = torch.autograd.grad(logits[:, 1].sum(), captured)
    assert all(float(g.abs().max()) > 0 for g in gradients)


def test_find_and_geometry():
    vit = torchvision_vit()
    wrapped = nn.ModuleDict({"backbone": vit})
    adapter = find_adapter(wrapped)
    assert isinstance(adapter, TorchvisionViTAdapter) and adapter.root is vit
    assert adapter.geometry((32, 32)) == TokenGeometry(1, True, (4, 4))
    assert adapter.geometry(None) == TokenGeometry(1, True, (4, 4))
    assert adapter.geometry((32, 48)).grid_size == (4, 6)
    assert [name for name, _ in adapter.attention_layers()] == [
        f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)
    ]

    course = course_vit(batch_first=False)
    adapter = find_adapter(course)
    assert type(adapter) is MultiheadAttentionAdapter and adapter.root is course
    with pytest.raises(ValueError, match="pass `num_prefix_tokens`.*and `grid_size`"):
        adapter.geometry((32, 32))
    assert MultiheadAttentionAdapter.find(nn.Sequential(nn.Linear(2, 2))) is None


def test_input_channels_of_patch_projection_and_of_a_convolutional_stem():
    from torchvision.models.vision_transformer import ConvStemConfig, VisionTransformer

    assert find_adapter(torchvision_vit()).input_channels() == 3
    stem = VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        conv_stem_configs=[ConvStemConfig(out_channels=16, kernel_size=3, stride=2)],
    )
    assert find_adapter(stem).input_channels() is None, "a stem's first convolution is not the patch projection"


def test_readout():
    geometry = TokenGeometry(1, True, (4, 4))
    rows = find_adapter(torchvision_vit()).readout(geometry).rows
    assert rows[0] == 1 and float(rows[1:].abs().sum()) == 0
    adapter = find_adapter(course_vit(batch_first=True))
    assert adapter.readout(geometry).rows[0] == 1
    pooled = adapter.readout(TokenGeometry(0, False, (4, 4))).pooled
    torch.testing.assert_close(pooled, torch.full((16,), 1 / 16))


@pytest.mark.parametrize(
    "name, norm",
    [
        ("course_seq_first", "blocks.1.norm_attn"),
        ("course_batch_first", "blocks.1.norm_attn"),
        ("torchvision", "encoder.layers.encoder_layer_1.ln_1"),
    ],
)
def test_gradcam_reads_the_tokens_of_the_last_attention_batch_first(name, norm):
    model = MODELS[name]()
    images = _images()
    with torch.no_grad():
        logits = model(images)
    expected, tokens = [], []
    handle = model.get_submodule(norm).register_forward_hook(lambda m, i, o: expected.append(o))
    try:
        sink = lambda n, x, *layout: tokens.append(x)  # noqa: E731  (a one-line function passed as an argument)
        with torch.enable_grad(), find_adapter(model).capture_gradcam(sink) as layer_name:
            score = model(images)[:, 1].sum()
            (gradient,) = torch.autograd.grad(score, tokens[0], retain_graph=True)
            (expected_gradient,) = torch.autograd.grad(score, expected[0])
    finally:
        handle.remove()
    assert layer_name.endswith("(input)")
    reference, expected_gradient = expected[0], expected_gradient
    if name == "course_seq_first":
        reference, expected_gradient = reference.transpose(0, 1), expected_gradient.transpose(0, 1)
    assert tokens[0].shape == (2, 17, 32)
    assert torch.equal(tokens[0], reference)
    torch.testing.assert_close(gradient, expected_gradient)  # the tokens handed over are on the gradient path
    assert float(gradient.abs().max()) > 0
    with torch.no_grad():
        assert torch.equal(model(images), logits)


def test_fast_path_is_off_for_the_side_pass_and_restored():
    """``TransformerEncoderLayer``'s fused eval kernel never calls its attention module."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 2, 64, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    adapter = find_adapter(encoder)
    x = torch.randn(2, 17, 32)
    captured = []
    with torch.no_grad():
        expected = encoder(x)
        with adapter.capture_attention(adapter.attention_layers(), lambda n, a, *layout: captured.append(a)):
            encoder(x)
        assert captured == []  # the fast path skipped the attention modules
        with (
            adapter.attention_settings(),
            adapter.capture_attention(adapter.attention_layers(), lambda n, a, *layout: captured.append(a)),
        ):
            assert not torch.backends.mha.get_fastpath_enabled()
            output = encoder(x)
    assert torch.backends.mha.get_fastpath_enabled()
    assert len(captured) == 2
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)

    with pytest.raises(RuntimeError, match="boom"):
        with fast_path_disabled():
            raise RuntimeError("boom")
    assert torch.backends.mha.get_fastpath_enabled()


def test_side_pass_leaves_outputs_bit_identical():
    model = torchvision_vit()
    images = _images()
    with torch.no_grad():
        before = model(images)
    _captured(model, images, grad=True)
    with torch.no_grad():
        after = model(images)
    assert torch.equal(before, after)
    assert all("forward" not in m.__dict__ for m in model.modules())


# ------------------------------------------------------------------------------------ end to end


class EagerSelfAttention(nn.Module):
    """Test-only twin of a (mask-free, self-) ``nn.MultiheadAttention`` written the textbook way, keeping
    its attention on the graph in ``store``."""

    def __init__(self, attention: nn.MultiheadAttention, store: list) -> None:
        super().__init__()
        self.attention = attention
        self.store = store

    def forward(self, query, key, value, need_weights=True, **ignored):
        mha = self.attention
        x = query if mha.batch_first else query.transpose(0, 1)
        batch, tokens, dim = x.shape
        heads = mha.num_heads
        qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).reshape(batch, tokens, 3, heads, dim // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        weights = (q @ k.transpose(-2, -1) / math.sqrt(dim // heads)).softmax(dim=-1)
        self.store.append(weights)
        out = mha.out_proj((weights @ v).transpose(1, 2).reshape(batch, tokens, dim))
        return (out if mha.batch_first else out.transpose(0, 1)), None


def _eager_twin(model: nn.Module):
    twin, store = copy.deepcopy(model), []
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, EagerSelfAttention(child, store))
    return twin, store


def reference_maps(twin, store, image, discard_ratio=0.9):
    """One image, the textbook recipes over the twin's attentions (autograd on them); class-token read-out."""
    store.clear()
    with torch.enable_grad():
        logits = twin(image[None])
        gradients = torch.autograd.grad(logits[0, int(logits.argmax())], store)
    maps = {}
    for method in ("rollout", "grad_rollout", "chefer"):
        relevance = torch.eye(17)
        for attention, gradient in zip(store, gradients):
            attention, gradient = attention[0].detach(), gradient[0]
            if method == "rollout":
                relevance = _normalised(_discard(attention.mean(0), discard_ratio)) @ relevance
            elif method == "grad_rollout":
                fused = _discard((attention * gradient).mean(0).clamp(min=0), discard_ratio)
                relevance = _normalised(fused) @ relevance
            else:
                relevance = relevance + (gradient * attention).clamp(min=0).mean(0) @ relevance
        maps[method] = relevance[0, 1:].reshape(4, 4)
    return maps


@pytest.mark.parametrize("name", list(MODELS))
def test_explain_equals_the_recipes_over_an_eager_twin(name):
    model = MODELS[name]()
    images = _images()
    overrides = {} if name == "torchvision" else {"num_prefix_tokens": 1, "grid_size": (4, 4)}
    twin, store = _eager_twin(model)
    references = [reference_maps(twin, store, image) for image in images]
    for method in ("rollout", "grad_rollout", "chefer"):
        maps = explain(model, images, method, **overrides)
        expected = torch.stack([reference[method] for reference in references])
        assert float(expected.abs().max()) > 0, method
        torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6, msg=lambda m: f"{method}: {m}")


@pytest.mark.parametrize(
    "name, norm", [("course_seq_first", "blocks.1.norm_attn"), ("torchvision", "encoder.layers.encoder_layer_1.ln_1")]
)
def test_explain_gradcam_equals_the_recipe(name, norm):
    model = MODELS[name]()
    images = _images()
    overrides = {} if name == "torchvision" else {"num_prefix_tokens": 1, "grid_size": (4, 4)}
    maps = explain(model, images, "gradcam", **overrides)
    expected = []
    for image in images:
        kept = []
        handle = model.get_submodule(norm).register_forward_hook(lambda m, i, o: kept.append(o))
        with torch.enable_grad():
            logits = model(image[None])
            (gradient,) = torch.autograd.grad(logits[0, int(logits.argmax())], kept[0])
        handle.remove()
        tokens, gradient = kept[0].detach(), gradient
        if name == "course_seq_first":
            tokens, gradient = tokens.transpose(0, 1), gradient.transpose(0, 1)
        tokens, gradient = tokens[0, 1:], gradient[0, 1:]
        expected.append((tokens * gradient.mean(0)).sum(-1).clamp(min=0).reshape(4, 4))
    torch.testing.assert_close(maps, torch.stack(expected), rtol=1e-4, atol=1e-6)


def test_explain_needs_the_geometry_of_a_generic_mha_model():
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        explain(course_vit(batch_first=True), _images(), "rollout")


def test_explain_leaves_an_mha_model_bit_identical():
    model = torchvision_vit()
    images = _images()
    with torch.no_grad():
        before = model(images)
    for method in ("rollout", "grad_rollout", "chefer", "gradcam"):
        explain(model, images, method)
    with torch.no_grad():
        assert torch.equal(model(images), before)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert torch.backends.mha.get_fastpath_enabled()
