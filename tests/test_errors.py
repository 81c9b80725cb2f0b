"""Every bad input gets an error naming the argument, the value received and what is allowed."""

import pytest
import torch

from lightning_rollout import explain, resolve_geometry


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            dict(method="lrp"),
            r"`method` must be one of \['rollout', 'grad_rollout', 'chefer', 'gradcam', 'legrad', 'attention'\], got 'lrp'",
        ),
        (dict(head_fusion="median"), r"`head_fusion` must be one of \['mean', 'max', 'min'\], got 'median'"),
        (dict(discard_ratio=1.0), r"`discard_ratio` must be a number in \[0, 1\), got 1.0"),
        (dict(discard_ratio=-0.1), r"`discard_ratio` must be a number in \[0, 1\), got -0.1"),
        (dict(discard_ratio="0.5"), r"`discard_ratio` must be a number in \[0, 1\), got '0.5'"),
        (dict(attention_pattern="*nothing*"), r"`attention_pattern`='\*nothing\*' matches no module"),
        (dict(method="gradcam", gradcam_layer="*nothing*"), r"`gradcam_layer`='\*nothing\*' matches no module"),
        (
            dict(method="chefer", target=torch.tensor([1, 2])),
            r"`target` must have shape \(3,\) for this batch, got \(2,\)",
        ),
        (dict(method="chefer", target=torch.tensor([0.0, 1.0, 2.0])), r"`target` must hold integer class indices"),
        (dict(method="chefer", target=5), r"`target` values must be in \[0, 5\), got \[5, 5, 5\]"),
        (dict(method="chefer", target=torch.tensor([0, -1, 2])), r"`target` values must be in \[0, 5\)"),
        (
            dict(method="chefer", target="cat"),
            r"`target` must be None, an int, a LongTensor of shape \(B,\) or a callable",
        ),
        (
            dict(grid_size=(3, 3)),
            r"attends over N=17 tokens, but the geometry gives num_prefix_tokens=1 \+ grid_size=\(3, 3\) = 10",
        ),
        (dict(num_prefix_tokens=-1), r"`num_prefix_tokens` must be an int >= 0, got -1"),
        (dict(grid_size=(4,)), r"`grid_size` must be two positive ints"),
        (dict(attention_pattern="blocks.*.norm1"), r"returned shape \(3, 17, 32\), not an attention tensor"),
    ],
)
def test_bad_arguments(vit, images, kwargs, match):
    with pytest.raises(ValueError, match=match):
        explain(vit, images, **kwargs)


@pytest.mark.parametrize("bad", [torch.randn(3, 32, 32), torch.zeros(1, 3, 32, 32, dtype=torch.long), "x"])
def test_images_must_be_bchw_float(vit, bad):
    with pytest.raises(ValueError, match=r"`images` must be a float tensor of shape \(B, C, H, W\), got"):
        explain(vit, bad)


def test_forward_that_never_reaches_the_hooks(vit, images):
    class SkipsAttention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit.head(self.vit.patch_embed(x).mean(1))

    with pytest.raises(ValueError, match=r"captured no attention in the forward"):
        explain(SkipsAttention(), images)


def test_gradient_method_needs_logits(vit, images):
    class ReturnsTuple(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = vit

        def forward(self, x):
            return self.vit(x), None

    with pytest.raises(ValueError, match=r"must return logits \(B, num_classes\).*got tuple"):
        explain(ReturnsTuple(), images, "grad_rollout")


def test_geometry_of_a_model_without_vit():
    with pytest.raises(ValueError, match=r"no model adapter knows it.*pass both `num_prefix_tokens` and `grid_size`"):
        resolve_geometry(torch.nn.Linear(2, 2), num_prefix_tokens=1)
