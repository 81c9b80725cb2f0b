"""Every check reads the method registry when it runs: a method registered after import is known everywhere."""

import pytest
import timm
import torch
from torch import Tensor

from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.methods import Method, method_names, register_method, unregister_method
from lightning_rollout.models import UnsupportedModelError


class GradientNorm(Method):
    """A gradient method registered by a user: the norm of Grad-CAM's activation gradient per token."""

    name = "gradient_norm"
    summary = "the gradient's norm per token"
    uses_attention = False
    uses_gradcam = True
    needs_grad = True
    shared_backward = True

    def gradcam(self, layer_name: str, activation: Tensor, gradient: Tensor) -> None:
        self.scores = gradient.norm(dim=1 if gradient.dim() == 4 else -1)

    def maps(self) -> Tensor:
        return self.scores


@pytest.fixture
def registered():
    register_method(GradientNorm)
    yield GradientNorm
    unregister_method(GradientNorm.name)
    assert GradientNorm.name not in method_names()


def test_a_method_registered_after_import_is_refused_with_task_none(registered):
    with pytest.raises(ValueError, match=r"`task`='none' has no classes, so the gradient methods \['gradient_norm'\]"):
        AttentionRolloutCallback(methods=["rollout", "gradient_norm"], task="none")
    AttentionRolloutCallback(methods=["gradient_norm"])


def test_a_refusal_names_the_registered_methods_that_work(registered):
    model = timm.create_model("resnet18", num_classes=3).eval()
    with pytest.raises(
        UnsupportedModelError, match=r"Use method 'gradcam' or 'gradient_norm': the methods \['rollout'\]"
    ):
        explain(model, torch.randn(1, 3, 64, 64), "rollout")
    assert explain(model, torch.randn(1, 3, 64, 64), "gradient_norm").shape == (1, 2, 2)


def test_unregistering_an_unknown_method_names_the_registered_ones():
    with pytest.raises(ValueError, match=r"`method` must be one of \['rollout'"):
        unregister_method("nope")


class LastAttentionAfterTheForward(Method):
    """A user's method that keeps the live forward and reads it only when its maps are asked for."""

    name = "last_attention_later"
    summary = "the last layer's live attention, read after the pass"
    needs_grad = True

    def after_forward(self, live) -> None:
        self.live = live

    def maps(self) -> Tensor:
        attention = self.live.attentions[-1].detach()  # (B, heads, N, N)
        return attention.mean(dim=1)[:, 0, 1:].reshape(-1, 4, 4)


def test_a_method_may_keep_the_live_forward_past_the_pass(vit, images):
    register_method(LastAttentionAfterTheForward)
    try:
        maps = explain(vit, images, LastAttentionAfterTheForward.name)
    finally:
        unregister_method(LastAttentionAfterTheForward.name)
    torch.testing.assert_close(maps, explain(vit, images, "attention"))


def test_check_model_checks_the_methods_as_explain_many_does(vit):
    from lightning_rollout.engine import check_model

    with pytest.raises(ValueError, match=r"`methods` must name each method once"):
        check_model(vit, ["rollout", "rollout"])
    with pytest.raises(ValueError, match=r"`methods` must be a non-empty list or tuple"):
        check_model(vit, "rollout")
