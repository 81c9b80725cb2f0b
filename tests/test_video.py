"""Video transformers (issue #22): VideoMAE and ViViT against a plain per-clip reference over transformers' own
eager attentions, TimeSformer's refusal and Grad-CAM, 3-D grids by hand, chunking, memory and bad inputs.

Tiny random-init models (hidden 32, 2 layers, 2 heads, 4 frames of 32 px, tubelets of 2 frames × 8 px): 2 × 4 × 4
= 32 patch tokens. No downloads.
"""

import copy
import gc

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from model_zoo import tiny_vit
from reference import _discard, _normalised, read_out

from lightning_rollout import explain, explain_many
from lightning_rollout.core.geometry import TokenGeometry, VideoInput
from lightning_rollout.engine import check_model
from lightning_rollout.methods.core import tokens_to_grid, upsample_maps
from lightning_rollout.models import UnsupportedModelError, find_adapter

SIZES = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    image_size=32,
    num_frames=4,
    num_labels=3,
)
METHODS = ["rollout", "grad_rollout", "chefer", "gradcam", "legrad", "attention"]


def build(name: str, **extra) -> nn.Module:
    torch.manual_seed(0)
    t = transformers
    if name == "videomae":
        config = t.VideoMAEConfig(patch_size=8, tubelet_size=2, **{**SIZES, **extra})
        return t.VideoMAEForVideoClassification(config).eval()
    if name == "vivit":
        model = t.VivitForVideoClassification(t.VivitConfig(tubelet_size=[2, 8, 8], **{**SIZES, **extra})).eval()
        with torch.no_grad():  # ViViT zero-initialises its class token and position embeddings
            model.vivit.embeddings.cls_token.normal_()
            model.vivit.embeddings.position_embeddings.normal_(std=0.5)
        return model
    config = t.TimesformerConfig(patch_size=8, **{**SIZES, **extra})
    return t.TimesformerForVideoClassification(config).eval()


_MODELS = {}


def model_for(name: str) -> nn.Module:
    if name not in _MODELS:
        _MODELS[name] = build(name)
    return _MODELS[name]


def clips(batch: int = 2, frames: int = 4) -> torch.Tensor:
    return torch.randn(batch, frames, 3, 32, 32, generator=torch.Generator().manual_seed(5))


# ------------------------------------------------------------------------------- the plain reference


def _eager_pass(model, clip, target):
    """One clip through an eager copy: transformers' own attentions, each block's output tokens, the last
    block's input-norm output (Grad-CAM's activation) and the logits, all on one autograd graph."""
    reference = copy.deepcopy(model)
    reference.set_attn_implementation("eager")
    base = getattr(reference, reference.base_model_prefix)
    layers = base.encoder.layer if hasattr(base, "encoder") else base.layers
    blocks, normed = [], []
    handles = [layer.register_forward_hook(lambda m, i, o: blocks.append(o)) for layer in layers]
    handles.append(layers[-1].layernorm_before.register_forward_hook(lambda m, i, o: normed.append(o)))
    with torch.enable_grad():
        out = reference(clip[None], output_attentions=True)
    for handle in handles:
        handle.remove()
    logits = out.logits[0]
    cls = int(logits.argmax()) if target is None else target
    return reference, list(out.attentions), blocks, normed[0], logits, cls


def _head(model, tokens):
    if isinstance(model, transformers.VideoMAEForVideoClassification):
        return model.classifier(model.fc_norm(tokens.mean(dim=1)))
    return model.classifier(model.vivit.layernorm(tokens)[:, 0])


def reference_map(model, clip, method, target=None, discard_ratio=0.9):
    """The map of one clip, ``(T', h, w)``, step by step as for a ViT on T'·h·w tokens (tests/reference.py)."""
    prefix, readout = (0, "pool") if isinstance(model, transformers.VideoMAEForVideoClassification) else (1, "cls")
    reference, attentions, blocks, normed, logits, cls = _eager_pass(model, clip, target)
    score = logits[cls]
    grid = (clip.shape[0] // 2, 4, 4)
    if method == "gradcam":
        (gradient,) = torch.autograd.grad(score, normed)
        weights = gradient[0, prefix:].mean(dim=0)
        return (normed[0, prefix:] * weights).sum(-1).clamp(min=0).detach().reshape(grid)
    if method == "legrad":
        total = 0
        for layer, attention in enumerate(attentions):
            layer_score = _head(reference, blocks[layer])[0, cls]
            (gradient,) = torch.autograd.grad(layer_score, attention, retain_graph=True)
            total = total + gradient[0].clamp(min=0).mean(dim=(0, 1))
        return total[prefix:].reshape(grid)
    grads = torch.autograd.grad(score, attentions) if method in ("grad_rollout", "chefer") else None
    attentions = [a.detach()[0] for a in attentions]
    n = attentions[0].shape[-1]
    if method == "attention":
        return read_out(attentions[-1].mean(0), prefix, readout)[prefix:].reshape(grid)
    relevance = torch.eye(n)
    for layer, attention in enumerate(attentions):
        if method == "rollout":
            relevance = _normalised(_discard(attention.mean(0), discard_ratio)) @ relevance
        elif method == "grad_rollout":
            fused = (attention * grads[layer][0]).mean(0).clamp(min=0)
            relevance = _normalised(_discard(fused, discard_ratio)) @ relevance
        else:
            relevance = relevance + (grads[layer][0] * attention).clamp(min=0).mean(0) @ relevance
    return read_out(relevance, prefix, readout)[prefix:].reshape(grid)


# ------------------------------------------------------------------------------------------- maps


@pytest.mark.parametrize("name", ["videomae", "vivit"])
@pytest.mark.parametrize("method", METHODS)
def test_joint_attention_maps_equal_a_vit_reference_on_the_t_h_w_tokens(name, method):
    model = model_for(name)
    batch = clips()
    target = torch.tensor([2, 0])
    # The reference's LeGrad reads the model's own head at every block: the option that keeps that rule.
    options = dict(legrad_readout="head", legrad_first_layer=0) if method == "legrad" else {}
    maps = explain(model, batch, method, target=target, **options)
    assert maps.shape == (2, 2, 4, 4)
    for index in range(2):
        expected = reference_map(model, batch[index], method, target=int(target[index]))
        torch.testing.assert_close(maps[index], expected, rtol=1e-4, atol=1e-6)
    assert float(maps.abs().sum()) > 0


def test_explain_many_equals_explain_and_chunks_change_nothing():
    model = model_for("videomae")
    batch = clips(3)
    together = explain_many(model, batch, METHODS, chunk_size=3)
    for method in METHODS:
        torch.testing.assert_close(together[method], explain(model, batch, method), rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(together[method], explain(model, batch, method, chunk_size=2), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "name, geometry, video",
    [
        ("videomae", TokenGeometry(0, False, (4, 4), 2, 2), VideoInput(2, 4)),
        ("vivit", TokenGeometry(1, True, (4, 4), 2, 2), VideoInput(2, 4)),
        ("timesformer", TokenGeometry(1, True, (4, 4), 4, 1), VideoInput(1, 4)),
    ],
)
def test_geometry_and_clips_from_the_config(name, geometry, video):
    adapter = find_adapter(model_for(name))
    assert adapter.geometry(None) == geometry == adapter.geometry((4, 32, 32))
    assert adapter.video_input() == video
    assert geometry.num_tokens == geometry.num_prefix_tokens + geometry.temporal_size * 16
    assert adapter.num_classes() == 3


def test_videomae_readout_is_the_token_mean_and_its_head_gives_the_logits():
    model = model_for("videomae")
    adapter = find_adapter(model)
    readout = adapter.readout(adapter.geometry(None))
    assert readout.rows is None
    torch.testing.assert_close(readout.pooled, torch.full((32,), 1 / 32))
    no_pooling = build("videomae", use_mean_pooling=False)
    assert find_adapter(no_pooling).readout(adapter.geometry(None)).rows[0] == 1  # the normed token 0


def test_maps_at_input_resolution():
    model = model_for("vivit")
    batch = clips()
    tokens = explain(model, batch, "rollout")
    full = explain(model, batch, "rollout", output_size="input")
    assert full.shape == (2, 4, 32, 32)
    torch.testing.assert_close(full, upsample_maps(tokens, (4, 32, 32), tubelet=2))
    with pytest.raises(ValueError, match="`output_size` must be None or 'tokens'"):
        explain(model, batch, "rollout", output_size="pixels")


# ------------------------------------------------------------------------------------ 3-D by hand


def test_tokens_to_grid_lays_video_tokens_out_time_first():
    scores = torch.arange(1 + 2 * 2 * 3, dtype=torch.float32)[None]  # 1 prefix token, then T'=2, h=2, w=3
    grid = tokens_to_grid(scores, 1, (2, 2, 3))
    assert grid.tolist() == [[[[1, 2, 3], [4, 5, 6]], [[7, 8, 9], [10, 11, 12]]]]


def test_upsample_maps_nearest_in_time_bilinear_in_space_by_hand():
    maps = torch.tensor([[[[0.0, 4.0]], [[8.0, 8.0]]]])  # (1, T'=2, h=1, w=2)
    # 5 frames, tubelets of 2: frames 0-1 take slice 0, 2-3 slice 1, frame 4 (no whole tubelet) the last.
    full = upsample_maps(maps, (5, 1, 4), tubelet=2)
    # Bilinear 2 → 4 cells (align_corners=False): centres at 0.25, 0.75 → 0, 1, 3, 4 of the way 0 → 4.
    assert full[0, 0, 0].tolist() == [0.0, 1.0, 3.0, 4.0]
    assert [full[0, t, 0].tolist() for t in range(5)] == [[0, 1, 3, 4]] * 2 + [[8.0] * 4] * 3
    images = upsample_maps(torch.ones(2, 3, 3), (12, 12))
    assert images.shape == (2, 12, 12) and bool((images == 1).all())
    with pytest.raises(ValueError, match="`size` must be"):
        upsample_maps(maps, (4, 4))


# ------------------------------------------------------------------------------------- TimeSformer


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "chefer", "legrad", "attention"])
def test_timesformer_refuses_the_attention_methods_with_the_reason(method):
    model = model_for("timesformer")
    with pytest.raises(UnsupportedModelError, match=r"divided space-time attention.*Use method 'gradcam'"):
        explain(model, clips(), method)
    with pytest.raises(UnsupportedModelError, match="divided space-time"):
        check_model(model, [method])


def test_timesformer_gradcam_equals_a_per_frame_reference():
    """Grad-CAM on the tokens the last block's spatial attention reads, ``(B·T, 1 + h·w, C)``: frame t's patch
    (i, j) is row ``b·T + t``, token ``1 + i·w + j``; the map puts it at ``[b, t, i, j]``."""
    model = model_for("timesformer")
    batch = clips()
    target = torch.tensor([1, 2])
    maps = explain(model, batch, "gradcam", target=target)
    assert maps.shape == (2, 4, 4, 4)
    reference = copy.deepcopy(model)
    seen = []
    layer = reference.timesformer.encoder.layer[-1]
    handle = layer.layernorm_before.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.enable_grad():
        logits = reference(batch).logits
        seen = [seen[-1]]  # the spatial call (the block calls layernorm_before once, on (B·T, 1 + h·w, C))
        (gradient,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), seen[0])
    handle.remove()
    tokens = seen[0].detach()
    expected = torch.zeros(2, 4, 4, 4)
    for b in range(2):
        rows = slice(b * 4, b * 4 + 4)
        weights = gradient[rows, 1:].reshape(-1, 32).mean(0)  # every patch token of the clip
        for t in range(4):
            for i in range(4):
                for j in range(4):
                    expected[b, t, i, j] = (tokens[b * 4 + t, 1 + i * 4 + j] * weights).sum().clamp(min=0)
    torch.testing.assert_close(maps, expected, rtol=1e-4, atol=1e-6)
    assert float(maps.sum()) > 0


# ------------------------------------------------------------------------------------------ inputs


def test_bad_inputs_raise_clear_errors_naming_the_argument():
    model = model_for("videomae")
    batch = clips()
    with pytest.raises(ValueError, match=r"`images` must be a batch of clips \(B, T, C, H, W\) for the video model"):
        explain(model, batch[:, 0])
    with pytest.raises(ValueError, match=r"clips of 1 frame\(s\), fewer than one tubelet .* \(2 frames"):
        explain(model, batch[:, :1])
    with pytest.raises(ValueError, match="clips of 2 frames, but .* num_frames=4"):
        explain(model, batch[:, :2])
    with pytest.raises(ValueError, match=r"must be a float tensor of shape \(B, C, H, W\), got a 6-D"):
        explain(model, batch[None])
    with pytest.raises(ValueError, match="`chunk_size` must be an int >= 1"):
        explain(model, batch, chunk_size=0)
    with pytest.raises(ValueError, match="`images` is a 5-D batch of clips .* takes images"):
        explain(tiny_vit(), torch.randn(2, 4, 3, 32, 32))


# ------------------------------------------------------------------------- state and memory promises


def _state(model):
    return (
        [(c.__dict__.get("_attn_implementation_internal")) for c in [model.config]],
        {name: m.training for name, m in model.named_modules()},
        [p.grad for p in model.parameters()],
    )


@pytest.mark.parametrize("name", ["videomae", "vivit"])
def test_no_observer_effect(name):
    model = copy.deepcopy(model_for(name)).train()
    batch = clips()
    before_state = _state(model)
    rng = torch.get_rng_state()
    with torch.no_grad():
        model.eval()
        before = model(batch).logits
        model.train()
    explain_many(model, batch, METHODS)
    assert _state(model) == before_state
    assert torch.equal(torch.get_rng_state(), rng)
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(batch).logits, before)


def _attention_storages(batch: int, heads: int, num_tokens: int) -> set:
    gc.collect()
    found = set()
    for obj in gc.get_objects():
        if (
            issubclass(type(obj), torch.Tensor)
            and obj.dim() == 4
            and tuple(obj.shape) == (batch, heads, num_tokens, num_tokens)
        ):
            found.add(obj.untyped_storage().data_ptr())
    return found


def test_forward_only_methods_never_keep_every_layers_attention(monkeypatch):
    """Rollout folds each layer as it runs: when the last layer's attention arrives, the earlier layers' are gone."""
    from lightning_rollout.methods.rollout import Rollout

    model = build("videomae", num_hidden_layers=4)
    live = []
    original = Rollout.forward_attention

    def watching(self, layer, attention):
        live.append(len(_attention_storages(1, 2, 32)))
        original(self, layer, attention)

    monkeypatch.setattr(Rollout, "forward_attention", watching)
    explain(model, clips(1), "rollout")
    assert len(live) == 4 and max(live) == 1
    assert not _attention_storages(1, 2, 32)  # and nothing outlives the pass


def test_timesformer_joint_attention_gradcam_reorders_space_first_tokens_and_space_only_refuses():
    joint = build("timesformer", attention_type="joint_space_time")
    batch = clips()
    maps = explain(joint, batch, "gradcam")
    assert maps.shape == (2, 4, 4, 4)
    # Token 1 + (i·w + j)·T + t of the (h, w, T) order is cell [t, i, j]: check by the activation itself.
    seen = []
    handle = joint.timesformer.encoder.layer[-1].layernorm_before.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.enable_grad():
        logits = joint(batch).logits
        (gradient,) = torch.autograd.grad(logits.max(dim=1).values.sum(), seen[0])
    handle.remove()
    weights = gradient[:, 1:].mean(dim=1)
    scores = (seen[0][:, 1:].detach() * weights[:, None]).sum(-1).clamp(min=0)  # (B, h·w·T), (h, w, T) order
    torch.testing.assert_close(maps, scores.reshape(2, 4, 4, 4).permute(0, 3, 1, 2), rtol=1e-4, atol=1e-6)
    with pytest.raises(UnsupportedModelError, match="pass `gradcam_layer`"):
        check_model(build("timesformer", attention_type="space_only"), ["gradcam"])


def test_nothing_outlives_a_pass_of_every_method():
    model = model_for("vivit")
    explain_many(model, clips(), METHODS, target=torch.tensor([0, 1]))
    assert not _attention_storages(1, 2, 33) and not _attention_storages(2, 2, 33)
