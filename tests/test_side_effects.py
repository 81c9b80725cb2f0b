"""``explain`` leaves no trace: flags, modes, hooks, gradients, RNG — also when the forward raises."""

import pytest
import torch
from model_zoo import tiny_vit

from lightning_rollout import explain

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _snapshot(model):
    return {
        "fused": [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")],
        "training": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "params": [p.detach().clone() for p in model.parameters()],
        "hooks": _hook_count(model),
        "rng": torch.get_rng_state(),
    }


def _prepare(model):
    """Mixed state: some blocks fused, some training, some parameters with a .grad."""
    model.train()
    model.blocks[1].eval()
    model.blocks[0].attn.fused_attn = True
    model.blocks[2].attn.fused_attn = False
    next(model.parameters()).grad = torch.full_like(next(model.parameters()), 7.0)


def _assert_same(before, after):
    assert before["fused"] == after["fused"]
    assert before["training"] == after["training"]
    assert before["hooks"] == after["hooks"] == 0
    assert torch.equal(before["rng"], after["rng"])
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    for a, b in zip(before["params"], after["params"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", METHODS)
def test_state_restored(vit, images, method):
    _prepare(vit)
    before = _snapshot(vit)
    explain(vit, images, method)
    _assert_same(before, _snapshot(vit))


@pytest.mark.parametrize("method", METHODS)
def test_state_restored_when_forward_raises(vit, images, method):
    _prepare(vit)
    before = _snapshot(vit)
    original = vit.head.forward

    def boom(x):
        raise RuntimeError("diverged")

    vit.head.forward = boom
    with pytest.raises(RuntimeError, match="diverged"):
        explain(vit, images, method)
    vit.head.forward = original
    _assert_same(before, _snapshot(vit))


def test_dropout_model_is_deterministic_and_rng_untouched(images):
    model = tiny_vit(drop_rate=0.5, attn_drop_rate=0.5, proj_drop_rate=0.5).train()
    torch.manual_seed(3)
    first = explain(model, images, "grad_rollout")
    expected_draw = torch.rand(1)
    torch.manual_seed(3)
    second = explain(model, images, "grad_rollout")
    assert torch.equal(first, second), "eval mode: no dropout in the side pass"
    assert torch.equal(torch.rand(1), expected_draw), "the global RNG stream is where it was"
    assert model.training


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_gradient_methods_inside_no_grad_and_inference_mode(vit, images, method, context):
    expected = explain(vit, images, method)
    with context():
        inner_images = images.clone()  # an inference tensor under inference_mode
        maps = explain(vit, inner_images, method)
        labels = torch.tensor([0, 1, 2])  # likewise
        labelled = explain(vit, inner_images, method, target=labels)
        assert torch.is_grad_enabled() is False
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(labelled, explain(vit, images, method, target=torch.tensor([0, 1, 2])))


@pytest.mark.parametrize("method", METHODS)
def test_cpu_bf16_autocast_chains_in_float32(vit, images, method):
    # No discard here: bf16 rounding reorders near-equal entries, which moves a 90 % discard threshold.
    expected = explain(vit, images, method, discard_ratio=0.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = explain(vit, images, method, discard_ratio=0.0)
    assert maps.dtype == torch.float32 and bool(torch.isfinite(maps).all())
    # bf16 has ~3 significant digits; the maps must still agree in where the mass is.
    cosine = torch.nn.functional.cosine_similarity(maps.flatten(1), expected.flatten(1))
    assert bool((cosine > 0.9).all()), cosine


def test_python_and_numpy_random_streams_are_where_they_were(vit, images):
    import random

    import numpy as np

    def drawing_target(logits):  # a user's target (or input_transform) may draw from any global stream
        random.random()
        np.random.rand()
        return logits[:, 0]

    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), float(np.random.rand()))
    random.seed(5)
    np.random.seed(5)
    explain(vit, images, "grad_rollout", target=drawing_target)
    assert (random.random(), float(np.random.rand())) == expected
