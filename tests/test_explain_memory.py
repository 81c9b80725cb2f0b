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
from model_zoo import FAMILIES, hf_vit, tiny_vit

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
    model = hf_vit()
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
