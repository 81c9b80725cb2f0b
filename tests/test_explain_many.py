"""``explain_many``: every method from one forward and one backward, equal to ``explain`` alone; targets as
callables and ``output_key``."""

import pytest
import torch
from call_counts import Counts
from model_zoo import FAMILIES, tiny_vit
from torch import nn

from lightning_rollout import explain, explain_many

ALL = ["rollout", "grad_rollout", "chefer", "gradcam"]


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_method_equals_explain_alone_from_one_forward_and_one_backward(family, images, monkeypatch):
    build, options = FAMILIES[family]
    model = build()
    alone = {method: explain(model, images, method, target=torch.tensor([0, 3, 1]), **options) for method in ALL}
    counts = Counts(model, monkeypatch)
    together = explain_many(model, images, ALL, target=torch.tensor([0, 3, 1]), **options)
    assert (counts.forwards, counts.backwards) == (1, 1)
    assert list(together) == ALL
    for method in ALL:
        torch.testing.assert_close(together[method], alone[method], rtol=1e-4, atol=1e-6, msg=method)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(global_pool="avg"),
        dict(model_name="deit_tiny_distilled_patch16_224"),
        dict(model_name="vit_base_patch16_siglip_224"),  # attention-pooling head
        dict(model_name="cait_xxs24_224", depth=2, depth_token_only=1),  # laid-out class-attention blocks
    ],
)
def test_pooling_distilled_and_class_attention_heads(kwargs, images):
    model = tiny_vit(**kwargs)
    together = explain_many(model, images, ALL, discard_ratio=0.5)
    for method in ALL:
        torch.testing.assert_close(
            together[method], explain(model, images, method, discard_ratio=0.5), rtol=1e-4, atol=1e-6, msg=method
        )


def test_forward_only_methods_run_one_forward_without_backward(vit, images, monkeypatch):
    counts = Counts(vit, monkeypatch)
    maps = explain_many(vit, images, ["rollout"])
    assert (counts.forwards, counts.backwards) == (1, 0)
    assert maps["rollout"].shape == (3, 4, 4)


def test_return_output_is_the_forward_s_logits_detached(vit, images):
    maps, logits = explain_many(vit, images, ["rollout", "chefer"], return_output=True)
    with torch.no_grad():
        expected = vit(images)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)
    assert not logits.requires_grad and set(maps) == {"rollout", "chefer"}


@pytest.mark.parametrize(
    "methods, match",
    [
        ("rollout", r"`methods` must be a non-empty list or tuple of method names"),
        ([], r"`methods` must be a non-empty list or tuple"),
        (["rollout", "rollout"], r"`methods` must name each method once"),
        (["rollout", "lrp"], r"`method` must be one of \[.*\], got 'lrp'"),
    ],
)
def test_bad_methods(vit, images, methods, match):
    with pytest.raises(ValueError, match=match):
        explain_many(vit, images, methods)


# ------------------------------------------------------------------------------------ callable targets


@pytest.mark.parametrize("method", ["grad_rollout", "chefer", "gradcam"])
def test_callable_target_of_one_logit_equals_the_class_target(vit, images, method):
    torch.testing.assert_close(
        explain(vit, images, method, target=lambda logits: logits[:, 2]), explain(vit, images, method, target=2)
    )


def test_callable_target_is_per_sample(vit, images):
    # Summing two classes' logits per sample: the maps are those of the (linear) sum, sample by sample.
    weights = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0], [0, 1.0, 0, 1.0, 0]])
    maps = explain(vit, images, "gradcam", target=lambda logits: (logits * weights).sum(dim=-1))
    for i in range(3):
        expected = explain(vit, images[i : i + 1], "gradcam", target=lambda logits: (logits * weights[i]).sum(-1))
        torch.testing.assert_close(maps[i : i + 1], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "target, match",
    [
        (
            lambda logits: logits,
            r"callable `target` must return float scores of shape \(3,\), one per sample, got "
            r"a torch.float32 tensor of shape \(3, 5\)",
        ),
        (lambda logits: logits.argmax(-1), r"callable `target` must return float scores .* torch.int64"),
        (lambda logits: 1.0, r"callable `target` must return float scores .* got float"),
        (lambda logits: logits[:, 0].detach(), r"callable `target` must return scores computed from the output"),
    ],
)
def test_callable_target_errors(vit, images, target, match):
    with pytest.raises(ValueError, match=match):
        explain(vit, images, "chefer", target=target)


class _TwoHeads(nn.Module):
    """Returns a dict (or a tuple) of logits and an embedding, as a multi-output model would."""

    def __init__(self, as_tuple: bool = False) -> None:
        super().__init__()
        self.vit = tiny_vit(num_classes=0)
        self.classifier = nn.Linear(32, 5)
        self.as_tuple = as_tuple

    def forward(self, images: torch.Tensor):
        tokens = self.vit.forward_features(images)
        features = self.vit.forward_head(tokens)
        if self.as_tuple:
            return features, self.classifier(features)
        return {"embedding": features, "logits": self.classifier(features), "tokens": tokens}


def test_output_key_and_a_similarity_target(images):
    model = _TwoHeads().eval()
    concept = torch.randn(32, generator=torch.Generator().manual_seed(0))

    def similarity(embedding):
        return torch.nn.functional.cosine_similarity(embedding, concept[None], dim=-1)

    maps, embedding = explain_many(
        model, images, ["chefer"], output_key="embedding", target=similarity, return_output=True
    )
    assert embedding.shape == (3, 32) and maps["chefer"].shape == (3, 4, 4)
    # The default output_key finds the dict's logits; the tuple output needs an index.
    by_dict = explain(model, images, "grad_rollout", target=1)
    by_index = explain(_TwoHeads(as_tuple=True).eval(), images, "grad_rollout", target=1, output_key=1)
    torch.testing.assert_close(by_dict, by_index)


@pytest.mark.parametrize(
    "output_key, match",
    [
        (
            "embeds",
            r"`output_key`='embeds' selects no tensor of the model's dict output; its keys are "
            r"\['embedding', 'logits', 'tokens'\]",
        ),
        (2.0, r"`output_key` must be None \(the logits\), a str key or an int index, got 2.0"),
    ],
)
def test_output_key_errors(images, output_key, match):
    with pytest.raises(ValueError, match=match):
        explain(_TwoHeads().eval(), images, "chefer", output_key=output_key)


def test_forward_only_methods_accept_any_output_unless_it_is_returned(images):
    model = _TwoHeads(as_tuple=True).eval()
    assert explain(model, images, "rollout").shape == (3, 4, 4)
    with pytest.raises(ValueError, match=r"pass `output_key` to pick one of \[0, 1\]"):
        explain_many(model, images, ["rollout"], return_output=True)
    _, logits = explain_many(model, images, ["rollout"], output_key=1, return_output=True)
    assert logits.shape == (3, 5)


def test_class_target_on_tokens_says_what_to_do(images):
    with pytest.raises(
        ValueError,
        match=r"need a model returning logits of shape \(B, num_classes\), got "
        r"\(3, 17, 32\); pass `output_key`.* or a callable `target`",
    ):
        explain(_TwoHeads().eval(), images, "chefer", output_key="tokens")


def test_tuple_output_without_output_key_lists_the_indices(images):
    with pytest.raises(ValueError, match=r"must return logits .*got tuple; pass `output_key` to pick one of \[0, 1\]"):
        explain(_TwoHeads(as_tuple=True).eval(), images, "chefer")


# ------------------------------------------------------------------------------ a method of one's own


def test_a_registered_method_with_an_option_joins_the_shared_pass(vit, images, monkeypatch):
    from lightning_rollout.methods import base
    from lightning_rollout.methods.core import tokens_to_grid

    class LastClassRow(base.Method):
        """The last layer's class-token row, mean over heads, times ``last_row_scale``."""

        name = "last_row"
        options = {"last_row_scale": 1.0}

        @classmethod
        def check_options(cls, options):
            if options["last_row_scale"] <= 0:
                raise ValueError(f"`last_row_scale` must be > 0, got {options['last_row_scale']}")

        def forward_attention(self, layer, attention):
            self.row = attention.mean(dim=1)[:, 0] * self.context.options["last_row_scale"]

        def maps(self):
            return tokens_to_grid(self.row, 1, (4, 4))

    base.register_method(LastClassRow)
    try:
        counts = Counts(vit, monkeypatch)
        maps = explain_many(vit, images, ["last_row", "chefer"], last_row_scale=2.0)
        assert (counts.forwards, counts.backwards) == (1, 1)
        torch.testing.assert_close(maps["last_row"], 2 * explain(vit, images, "attention"))
        with pytest.raises(ValueError, match=r"`last_row_scale` must be > 0, got -1"):
            explain(vit, images, "last_row", last_row_scale=-1)
        with pytest.raises(
            TypeError,
            match=r"unexpected keyword argument\(s\) \['bogus'\]; the methods' own options "
            r"are \['last_row_scale', 'legrad_first_layer', 'legrad_readout'\]",
        ):
            explain(vit, images, "rollout", bogus=1)
    finally:
        base.unregister_method("last_row")
