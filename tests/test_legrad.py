"""LeGrad: the per-layer math by hand; the default (the authors' released rule: the mean token through the final
norm and classifier, the last two layers) against an independent reference per family; the model's own read-out
(``legrad_readout="head"``) against a naive one-forward-per-layer reference; and the heads every family applies."""

import copy
import weakref

import pytest
import timm
import torch
from model_zoo import FAMILIES, SIZES, course_vit, model_for, tiny_vit
from torch import nn

from lightning_rollout import explain, explain_many
from lightning_rollout.core.hooks import forward_hooks, fused_attention_disabled
from lightning_rollout.engine import check_model
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.methods import legrad_layer
from lightning_rollout.methods.legrad import LeGrad
from lightning_rollout.models import UnsupportedModelError, find_adapter
from lightning_rollout.models.base import ModelAdapter
from lightning_rollout.models.timm_vit import TimmViTAdapter

HEAD_EVERY_LAYER = dict(legrad_readout="head", legrad_first_layer=0)
"""The model's own read-out summed over every layer (the default before the released rule)."""


def test_legrad_layer_by_hand():
    # batch 1, 2 heads, 2 queries, 3 keys
    gradient = torch.tensor([[[[1.0, -2.0, 3.0], [-1.0, 4.0, 0.0]], [[2.0, 2.0, -5.0], [0.0, -1.0, 1.0]]]])
    # ReLU first: head 0 → [[1, 0, 3], [0, 4, 0]], head 1 → [[2, 2, 0], [0, 0, 1]]; mean over the 4 rows
    expected = torch.tensor([[(1 + 0 + 2 + 0) / 4, (0 + 4 + 2 + 0) / 4, (3 + 0 + 0 + 1) / 4]])
    torch.testing.assert_close(legrad_layer(gradient), expected)
    assert legrad_layer(gradient.double()).dtype == torch.float32


# ------------------------------------------------- the released rule (the default) against a reference


def _min_max(maps: torch.Tensor) -> torch.Tensor:
    """Per-sample min-max, as the released code shows its maps."""
    flat = maps.flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low)).view_as(maps)


def _released_rule(attentions, tokens, pooled_head, score, prefix: int, grid, first_layer: int = -2) -> torch.Tensor:
    """The released code's rule, written out: for each explained block ``l``, ``s_l`` = the score of
    ``pooled_head(mean over all of block l's tokens)``; ``E_l`` = ReLU(∂s_l/∂A_l) averaged over heads, then over
    every query row; the patch columns of ``Σ_l E_l``."""
    depth = len(attentions)
    total = 0
    for layer in range(first_layer % depth, depth):
        s_l = score(pooled_head(tokens[layer].mean(dim=1))).sum()
        (gradient,) = torch.autograd.grad(s_l, attentions[layer], retain_graph=True)
        total = total + gradient.clamp(min=0).mean(dim=1).mean(dim=1)
    return total[:, prefix:].reshape(total.shape[0], *grid)


def _class_score(target: torch.Tensor):
    return lambda logits: logits[torch.arange(len(target)), target]


def _assert_same_maps(maps: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(_min_max(maps), _min_max(expected), rtol=0, atol=1e-5)


TIMM_RELEASED = {
    # name: kwargs of tiny_vit (3 blocks, 32 px, 8 px patches)
    "plain": {},
    "registers": dict(reg_tokens=4),
    "distilled": dict(model_name="deit_tiny_distilled_patch16_224"),
    "avg_pool_fc_norm": dict(global_pool="avg", fc_norm=True),
}


def _timm_released(model: nn.Module, images: torch.Tensor, target: torch.Tensor, first_layer: int = -2):
    """One forward of the timm model with hooks keeping each block's attention (``attn_drop``'s input, the
    post-softmax attention in eval mode) and output, then the released rule with timm's final norm and
    classifier: ``norm`` → ``fc_norm`` → ``head_drop`` → ``head``; a distilled DeiT averages ``head`` and
    ``head_dist`` (its ``forward_head`` in eval mode)."""

    def pooled_head(pooled):
        x = model.norm(pooled)
        if getattr(model, "head_dist", None) is not None:
            return (model.head(model.head_drop(x)) + model.head_dist(model.head_drop(x))) / 2
        return model.head(model.head_drop(model.fc_norm(x)))

    attentions, tokens = [], []
    with (
        fused_attention_disabled(model),
        forward_hooks([block.attn.attn_drop for block in model.blocks], lambda m, i, o: attentions.append(o)),
        forward_hooks(list(model.blocks), lambda m, i, o: tokens.append(o)),
    ):
        model(images.clone().requires_grad_(True))
    return _released_rule(
        attentions,
        tokens,
        pooled_head,
        _class_score(target),
        model.num_prefix_tokens,
        model.patch_embed.grid_size,
        first_layer,
    )


@pytest.mark.parametrize("case", list(TIMM_RELEASED))
def test_default_is_the_released_rule_on_timm(case, images):
    model = tiny_vit(**TIMM_RELEASED[case])
    target = torch.tensor([0, 3, 1])
    maps = explain(model, images, "legrad", target=target)
    _assert_same_maps(maps, _timm_released(model, images, target))
    every_layer = explain(model, images, "legrad", target=target, legrad_first_layer=0)
    _assert_same_maps(every_layer, _timm_released(model, images, target, first_layer=0))
    assert not torch.allclose(maps, every_layer)
    # the model's own (class-token) read-out gives other maps
    assert not torch.allclose(maps, explain(model, images, "legrad", target=target, legrad_readout="head"))


def _hf_outputs(model: nn.Module, images: torch.Tensor):
    """transformers' own eager attentions and hidden states (each block's output) of a copy of ``model``."""
    eager = copy.deepcopy(model)  # its own config: the eager switch must not reach the shared model's
    eager.set_attn_implementation("eager")
    output = eager(images, output_attentions=True, output_hidden_states=True)
    return eager, output.attentions, output.hidden_states[1:]


def _hf_three_layers(name: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    classes = {
        "vit": (transformers.ViTForImageClassification, transformers.ViTConfig),
        "deit_teacher": (transformers.DeiTForImageClassificationWithTeacher, transformers.DeiTConfig),
        "dinov2": (transformers.Dinov2ForImageClassification, transformers.Dinov2Config),
    }
    model_class, config_class = classes[name]
    return model_class(config_class(num_labels=5, **{**SIZES, "num_hidden_layers": 3})).eval()


HF_RELEASED = {
    # name: (prefix tokens, the final norm and classifier on one pooled token, written out)
    "vit": (1, lambda m: lambda p: m.classifier(m.vit.layernorm(p))),
    "deit_teacher": (
        2,
        lambda m: (
            lambda p: (m.cls_classifier(m.deit.layernorm(p)) + m.distillation_classifier(m.deit.layernorm(p))) / 2
        ),
    ),
    "dinov2": (1, lambda m: lambda p: m.classifier(torch.cat([m.dinov2.layernorm(p)] * 2, dim=1))),
}


@pytest.mark.parametrize("name", list(HF_RELEASED))
def test_default_is_the_released_rule_on_hugging_face(name):
    model = _hf_three_layers(name)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 4])
    prefix, pooled_head = HF_RELEASED[name]
    eager, attentions, tokens = _hf_outputs(model, images)
    expected = _released_rule(attentions, tokens, pooled_head(eager), _class_score(target), prefix, (4, 4))
    _assert_same_maps(explain(model, images, "legrad", target=target), expected)


def test_clip_default_is_the_released_clip_rule():
    """LeGrad's compute_legrad_clip: each explained block's mean token through post_layernorm and the projection,
    scored by the cosine similarity to a (text) embedding; the last two blocks."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.CLIPVisionConfig(projection_dim=16, **{**SIZES, "num_hidden_layers": 3})
    model = transformers.CLIPVisionModelWithProjection(config).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    concept = torch.nn.functional.normalize(torch.randn(16, generator=torch.Generator().manual_seed(4)), dim=0)

    def similarity(embeds):
        return torch.nn.functional.normalize(embeds, dim=-1) @ concept

    maps = explain(model, images, "legrad", output_key="image_embeds", target=similarity)
    eager, attentions, tokens = _hf_outputs(model, images)
    tower = eager.vision_model
    expected = _released_rule(
        attentions, tokens, lambda p: eager.visual_projection(tower.post_layernorm(p)), similarity, 1, (4, 4)
    )
    _assert_same_maps(maps, expected)


def _torchvision_three_layers() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # zero at init: every gradient would be zero
    return model


def _torchvision_by_hand(model: nn.Module, images: torch.Tensor):
    """torchvision's ViT forward written out (eval mode), keeping each block's post-softmax attention and output."""
    x = model._process_input(images)
    x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1) + model.encoder.pos_embedding
    attentions, tokens = [], []
    for block in model.encoder.layers:
        mha = block.self_attention
        heads, width = mha.num_heads, x.shape[-1]
        q, k, v = torch.nn.functional.linear(block.ln_1(x), mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(x.shape[0], -1, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        attention = (q @ k.transpose(-2, -1) / (width // heads) ** 0.5).softmax(dim=-1)
        attentions.append(attention)
        mixed = (attention @ v).transpose(1, 2).reshape(x.shape)
        x = x + mha.out_proj(mixed)
        x = x + block.mlp(block.ln_2(x))
        tokens.append(x)
    return attentions, tokens


def test_default_is_the_released_rule_on_torchvision():
    model = _torchvision_three_layers()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 4])
    attentions, tokens = _torchvision_by_hand(model, images)
    logits = model.heads(model.encoder.ln(tokens[-1])[:, 0])
    torch.testing.assert_close(logits, model(images), rtol=1e-5, atol=1e-6)  # the forward by hand is the model's
    pooled_head = lambda p: model.heads(model.encoder.ln(p))  # noqa: E731  (a one-line function passed as an argument)
    expected = _released_rule(attentions, tokens, pooled_head, _class_score(target), 1, (4, 4))
    _assert_same_maps(explain(model, images, "legrad", target=target), expected)


def test_the_options_are_declared_with_the_released_defaults():
    assert LeGrad.options == {"legrad_first_layer": -2, "legrad_readout": "mean"}


# ----------------------------------------- the model's own read-out (legrad_readout="head") against a reference

TIMM_CASES = {
    # name: kwargs of tiny_vit (3 blocks, 32 px, 8 px patches)
    "class_token": {},
    "avg_pool_no_class_token": dict(class_token=False, global_pool="avg"),
    "avg_pool_with_class_token": dict(global_pool="avg", fc_norm=True),
    "distilled": dict(model_name="deit_tiny_distilled_patch16_224"),
    "registers": dict(reg_tokens=2),
    "map_pool": dict(class_token=False, global_pool="map"),
}


def _truncated_logits(model: nn.Module, images: torch.Tensor, last_block: int) -> torch.Tensor:
    """The timm ViT run by hand up to block ``last_block``, then its final norm and head."""
    x = model.norm_pre(model._pos_embed(model.patch_embed(images)))
    for block in model.blocks[: last_block + 1]:
        x = block(x)
    return model.forward_head(model.norm(x))


def naive_legrad(model: nn.Module, images: torch.Tensor, target, first_layer: int = 0) -> torch.Tensor:
    """LeGrad the slow, obvious way: for each layer its own forward, cut after that block, and its own backward.

    ``target``: a LongTensor of classes, or a function of the logits giving the ``(B,)`` scores.
    """
    score = target if callable(target) else (lambda logits: logits[torch.arange(len(target)), target])
    depth = len(model.blocks)
    total = 0
    with fused_attention_disabled(model):
        for layer in range(first_layer % depth, depth):
            captured = []
            handle = model.blocks[layer].attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
            try:
                logits = _truncated_logits(model, images, layer)
            finally:
                handle.remove()
            (gradient,) = torch.autograd.grad(score(logits).sum(), captured[0])
            total = total + gradient.clamp(min=0).mean(dim=(1, 2))
    prefix = model.num_prefix_tokens
    grid = model.patch_embed.grid_size
    return total[:, prefix:].reshape(images.shape[0], *grid)


@pytest.mark.parametrize("case", list(TIMM_CASES))
def test_head_readout_equals_one_forward_per_layer(case, images):
    model = tiny_vit(**TIMM_CASES[case])
    target = torch.tensor([0, 3, 1])  # per sample
    expected = naive_legrad(model, images, target)
    maps = explain(model, images, "legrad", target=target, **HEAD_EVERY_LAYER)
    assert maps.shape == (3, 4, 4)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)
    assert bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).all())
    last_two = explain(model, images, "legrad", target=target, legrad_readout="head")
    torch.testing.assert_close(last_two, naive_legrad(model, images, target, first_layer=-2), rtol=1e-5, atol=1e-7)
    assert not torch.allclose(last_two, maps)


def test_one_backward_of_the_summed_scores_would_be_wrong(images):
    """The reference can tell: ∂(Σ_m s_m)/∂A_l also holds the later layers' scores, through later blocks."""
    model = tiny_vit()
    target = torch.tensor([0, 3, 1])
    captured, tokens = [], []
    with (
        fused_attention_disabled(model),
        forward_hooks([block.attn.attn_drop for block in model.blocks], lambda m, i, o: captured.append(o)),
        forward_hooks(list(model.blocks), lambda m, i, o: tokens.append(o)),
    ):
        model(images.clone().requires_grad_(True))
    summed = sum(model.forward_head(model.norm(x))[torch.arange(3), target].sum() for x in tokens)
    gradients = torch.autograd.grad(summed, captured)
    wrong = sum(g.clamp(min=0).mean(dim=(1, 2)) for g in gradients)[:, 1:].reshape(3, 4, 4)
    maps = explain(model, images, "legrad", target=target, **HEAD_EVERY_LAYER)
    assert (maps - wrong).abs().max() > 1e-3 * maps.abs().max()


def test_target_defaults_to_the_prediction_and_an_int_is_every_sample(images):
    model = tiny_vit()
    predicted = model(images).argmax(dim=-1)
    torch.testing.assert_close(explain(model, images, "legrad"), explain(model, images, "legrad", target=predicted))
    torch.testing.assert_close(
        explain(model, images, "legrad", target=2), explain(model, images, "legrad", target=torch.tensor([2, 2, 2]))
    )


def test_legrad_options_are_checked(vit, images):
    with pytest.raises(ValueError, match=r"`legrad_first_layer` must be in \[-3, 3\).*got 3"):
        explain(vit, images, "legrad", legrad_first_layer=3)
    with pytest.raises(ValueError, match=r"`legrad_first_layer` must be an int.*got 0.5"):
        explain(vit, images, "legrad", legrad_first_layer=0.5)
    with pytest.raises(ValueError, match=r"`legrad_readout` must be one of \['mean', 'head'\].*got 'cls'"):
        explain(vit, images, "legrad", legrad_readout="cls")
    with pytest.raises(ValueError, match=r"`legrad_readout` must be one of"):
        ExplainOptions(method_options={"legrad_readout": None})


def test_nothing_of_the_pass_outlives_it(vit, images):
    kept = []
    with forward_hooks([block.attn.attn_drop for block in vit.blocks], lambda m, i, o: kept.append(weakref.ref(o))):
        explain_many(vit, images, ["grad_rollout", "legrad"])
    assert len(kept) == 3 and all(ref() is None for ref in kept)


def test_a_model_that_changes_its_heads_logits_is_refused(images):
    class Tempered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.vit = tiny_vit()

        def forward(self, x):
            return self.vit(x) / 2.0

    with pytest.raises(ValueError, match=r"'legrad'.*head of VisionTransformer.*logits unchanged"):
        explain(Tempered(), images, "legrad")


# ---------------------------------------------------------------- the model's own head, every family


def _last_block_head(model: nn.Module, images: torch.Tensor):
    """(the model's logits, the adapter's head on the last block's tokens), from one forward; and checks that
    the pooled head on the mean token is the head on a sequence whose every token is the mean token (the
    pooled token stands in every place the head reads)."""
    adapter = find_adapter(model)
    blocks = adapter.blocks()
    assert len(blocks) == len(adapter.attention_layers())
    tokens = []
    with torch.no_grad(), forward_hooks([m for _, m in blocks], lambda m, i, o: tokens.append(adapter.block_tokens(o))):
        output = model(images)
        head = adapter.head()(tokens[-1])
        mean = tokens[-1].mean(dim=1)
        pooled = adapter.pooled_head()(mean)
        spread = adapter.head()(mean[:, None].expand_as(tokens[-1]))
    torch.testing.assert_close(pooled, spread, rtol=1e-5, atol=1e-6)
    logits = output if isinstance(output, torch.Tensor) else output.logits
    return logits, head


TIMM_FAMILIES = {
    # name: (model name, kwargs, input size)
    "vit": ("vit_tiny_patch16_224", dict(img_size=32, patch_size=8), (32, 32)),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", dict(img_size=32, patch_size=8), (32, 32)),
    "siglip_map_pool": ("vit_base_patch16_siglip_224", dict(img_size=32, patch_size=8), (32, 32)),
    "dinov2_registers": ("vit_small_patch14_reg4_dinov2", dict(img_size=28), (28, 28)),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=28), (28, 28)),
    "beitv2_avg_pool": ("beitv2_base_patch16_224", dict(img_size=32, patch_size=8), (32, 32)),
    "relpos": ("vit_relpos_small_patch16_224", dict(img_size=32, patch_size=8), (32, 32)),
    "naflexvit": ("naflexvit_base_patch16_gap", dict(patch_size=8), (32, 40)),
}


@pytest.mark.parametrize("case", list(TIMM_FAMILIES))
def test_timm_head_on_the_last_block_gives_the_logits(case):
    name, kwargs, size = TIMM_FAMILIES[case]
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=4, depth=2, num_heads=2, embed_dim=32, **kwargs).eval()
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(3))
    logits, head = _last_block_head(model, images)
    assert torch.equal(head, logits)
    maps = explain(model, images, "legrad")
    assert bool(torch.isfinite(maps).all()) and bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).all())


def test_torchvision_head_on_the_last_block_gives_the_logits():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    ).eval()
    nn.init.normal_(model.heads.head.weight)  # zero at init: every gradient would be zero
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits, head = _last_block_head(model, images)
    assert torch.equal(head, logits)
    maps = explain(model, images, "legrad")
    assert maps.shape == (2, 4, 4) and bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).all())


HF = ["vit", "deit", "deit_teacher", "beit", "beit_cls", "dinov2", "dinov2_reg", "clip_classifier"]


def _hf_model(name: str) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    if name != "clip_classifier":
        return model_for(name)
    torch.manual_seed(0)
    config = transformers.CLIPConfig(
        vision_config=dict(SIZES),
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        num_labels=5,
    )
    return transformers.CLIPForImageClassification(config).eval()


@pytest.mark.parametrize("name", HF)
def test_hugging_face_head_on_the_last_block_gives_the_logits(name):
    model = _hf_model(name)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    logits, head = _last_block_head(model, images)
    assert torch.equal(head, logits)
    maps = explain(model, images, "legrad")
    assert maps.shape == (2, 4, 4) and bool((maps.flatten(1).amax(1) > maps.flatten(1).amin(1)).all())


def test_hugging_face_vit_head_readout_equals_the_recipe_over_transformers_own_outputs():
    """Attentions and hidden states as transformers returns them (eager), the class-token head written out."""
    model = _hf_model("vit")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    target = torch.tensor([1, 4])
    eager = copy.deepcopy(model)  # its own config: the eager switch must not reach the shared model's
    eager.set_attn_implementation("eager")
    output = eager(images, output_attentions=True, output_hidden_states=True)
    total = 0
    for layer, attention in enumerate(output.attentions):
        tokens = eager.vit.layernorm(output.hidden_states[layer + 1])
        score = eager.classifier(tokens[:, 0])[torch.arange(2), target].sum()
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=True)
        total = total + gradient.clamp(min=0).mean(dim=(1, 2))
    expected = total[:, 1:].reshape(2, 4, 4)
    maps = explain(model, images, "legrad", target=target, **HEAD_EVERY_LAYER)
    torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-7)


def test_clip_head_readout_with_a_similarity_target_equals_the_recipe():
    """The class-token read-out of CLIP's image embeddings: each layer's class token through post_layernorm and
    the projection, scored by the cosine similarity to a (text) embedding; attentions and hidden states as
    transformers returns them."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.CLIPVisionModelWithProjection(transformers.CLIPVisionConfig(projection_dim=16, **SIZES)).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    concept = torch.randn(16, generator=torch.Generator().manual_seed(4))

    def similarity(embeds):
        return torch.nn.functional.cosine_similarity(embeds, concept[None], dim=-1)

    maps = explain(model, images, "legrad", output_key="image_embeds", target=similarity, **HEAD_EVERY_LAYER)
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    output = eager(images, output_attentions=True, output_hidden_states=True)
    tower = eager.vision_model
    assert torch.equal(
        eager.visual_projection(tower.post_layernorm(output.hidden_states[-1][:, 0])), output.image_embeds
    )
    total = 0
    for layer, attention in enumerate(output.attentions):
        embeds = eager.visual_projection(tower.post_layernorm(output.hidden_states[layer + 1][:, 0]))
        (gradient,) = torch.autograd.grad(similarity(embeds).sum(), attention, retain_graph=True)
        total = total + gradient.clamp(min=0).mean(dim=(1, 2))
    torch.testing.assert_close(maps, total[:, 1:].reshape(2, 4, 4), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"'legrad'.*does not give the model's \(selected\) output"):
        explain(model, images, "legrad", output_key="last_hidden_state", target=lambda t: t[:, 0, 0])


# --------------------------------------------------------------------------------------- refusals


def _course_vit():
    return course_vit(batch_first=True)


REFUSED = {
    # name: (build, words of the reason)
    "cait": (
        lambda: timm.create_model(
            "cait_xxs24_224",
            img_size=32,
            patch_size=8,
            depth=2,
            depth_token_only=1,
            num_heads=2,
            embed_dim=32,
            num_classes=4,
        ),
        "patch blocks do not carry",
    ),
    "nn.MultiheadAttention": (_course_vit, "part of its forward"),
    "hf_base_model_in_a_user_module": (lambda: _hf_model("clip"), "does not know the head of CLIPVisionModel"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_models_without_a_known_head_are_refused_at_setup_with_the_reason(name):
    build, why = REFUSED[name]
    model = build()
    with pytest.raises(UnsupportedModelError, match=rf"method 'legrad'.*{why}"):
        check_model(model, ["legrad"], ExplainOptions(num_prefix_tokens=1, grid_size=(4, 4)))
    check_model(model, ["grad_rollout"], ExplainOptions(num_prefix_tokens=1, grid_size=(4, 4)))


def test_an_adapter_without_a_pooled_head_serves_only_the_head_readout(vit):
    class HeadOnly(TimmViTAdapter):
        pooled_head = ModelAdapter.pooled_head

    adapter = HeadOnly(vit)
    with pytest.raises(
        UnsupportedModelError, match=r"legrad_readout='mean' needs the final norm.*legrad_readout='head'"
    ):
        LeGrad.check_adapter(adapter, {"legrad_readout": "mean", "legrad_first_layer": -2})
    with pytest.raises(UnsupportedModelError, match="legrad_readout='mean'"):
        LeGrad.check_adapter(adapter)  # the defaults
    LeGrad.check_adapter(adapter, {"legrad_readout": "head", "legrad_first_layer": -2})


# ---------------------------------------------------------------------------------------- callback


def test_callback_logs_legrad_and_refuses_it_at_setup_for_a_model_without_a_known_head(tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning_helpers import make_module_class, read_events

    from lightning_rollout import AttentionRolloutCallback

    def trainer(callback, name):
        return pl.Trainer(
            callbacks=[callback],
            max_epochs=1,
            accelerator="cpu",
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=1,
            logger=TensorBoardLogger(str(tmp_path), name=name),
        )

    pl.seed_everything(0)
    run = trainer(AttentionRolloutCallback(methods=["legrad"], num_samples=4, mean=[0.5] * 3, std=[0.5] * 3), "vit")
    run.fit(make_module_class(pl.LightningModule)())
    events = read_events(run.logger.log_dir)
    assert [e.step for e in events.Images("attention/legrad/samples")] == [0, 4]
    assert all(0 <= s.value <= 1 for s in events.Scalars("attention/legrad/energy"))

    class CaiTModule(make_module_class(pl.LightningModule)):
        def __init__(self):
            super().__init__()
            self.model = timm.create_model(
                "cait_xxs24_224",
                img_size=16,
                patch_size=4,
                depth=1,
                depth_token_only=1,
                num_heads=2,
                embed_dim=16,
                num_classes=3,
            )

    with pytest.raises(UnsupportedModelError, match="method 'legrad'.*patch blocks do not carry"):
        trainer(AttentionRolloutCallback(methods=["grad_rollout", "legrad"]), "cait").fit(CaiTModule())


# ------------------------------------------------------------------------------- with the other methods


@pytest.mark.parametrize("family", ["timm", "hf", "torchvision"])
def test_explain_many_with_every_method_equals_each_alone(family, images, monkeypatch):
    model = FAMILIES[family][0]()
    methods = ["rollout", "grad_rollout", "chefer", "gradcam", "legrad"]
    target = torch.tensor([0, 3, 1])
    alone = {method: explain(model, images, method, target=target) for method in methods}
    forwards = []
    model.register_forward_hook(lambda *args: forwards.append(1))
    together = explain_many(model, images, methods, target=target)
    assert len(forwards) == 1
    for method in methods:
        # LeGrad's own per-layer gradient calls reach no other method's fold, and the shared backward no LeGrad
        torch.testing.assert_close(together[method], alone[method], rtol=1e-4, atol=1e-6, msg=method)
    assert not torch.allclose(together["legrad"], together["chefer"])


def test_callable_target_is_each_layers_score(images):
    model = tiny_vit()
    torch.testing.assert_close(
        explain(model, images, "legrad", target=lambda logits: logits[:, 2]), explain(model, images, "legrad", target=2)
    )
    # a score mixing classes, per layer as the naive references take it
    mixed = lambda logits: logits[:, 1] - logits[:, 3]  # noqa: E731  (a one-line function passed as an argument)
    difference = explain(model, images, "legrad", target=mixed, **HEAD_EVERY_LAYER)
    torch.testing.assert_close(difference, naive_legrad(model, images, mixed), rtol=1e-5, atol=1e-7)
    attentions, tokens = [], []
    with (
        fused_attention_disabled(model),
        forward_hooks([block.attn.attn_drop for block in model.blocks], lambda m, i, o: attentions.append(o)),
        forward_hooks(list(model.blocks), lambda m, i, o: tokens.append(o)),
    ):
        model(images.clone().requires_grad_(True))
    expected = _released_rule(attentions, tokens, lambda p: model.head(model.norm(p)), mixed, 1, (4, 4))
    _assert_same_maps(explain(model, images, "legrad", target=mixed), expected)
