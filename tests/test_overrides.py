"""The user's overrides (`grid_size`, `gradcam_layer`, ...) replace one answer of a model's adapter and keep
every other one: the checks that read the input channels and the classes still run."""

import inspect

import pytest
import torch
from model_zoo import hf_vit, tiny_vit

from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.models.base import ModelAdapter
from lightning_rollout.models.overrides import OverriddenAdapter, resolve_adapter
from lightning_rollout.monitor.settings import MonitorSettings
from lightning_rollout.monitor.side_pass import Runtime
from lightning_rollout.monitor.step import MapLogger

OVERRIDES = [
    dict(grid_size=(4, 4)),
    dict(num_prefix_tokens=1),
    dict(gradcam_layer="blocks.2.norm1"),
    dict(attention_pattern="blocks.*.attn.attn_drop"),
]


def test_the_overridden_adapter_answers_the_whole_protocol():
    asked = {
        name
        for name, member in inspect.getmembers(ModelAdapter)
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, (classmethod, property)))
    }
    answered = set(vars(OverriddenAdapter))
    assert asked - answered == set(), "each question needs an explicit answer: the override's or the found adapter's"


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: next(iter(o)))
def test_an_override_keeps_the_models_channels_classes_and_data_config(overrides):
    model = tiny_vit(in_chans=1, num_classes=3)
    found = resolve_adapter(model)
    adapter = resolve_adapter(model, **overrides)
    assert isinstance(adapter, OverriddenAdapter)
    assert (adapter.input_channels(), adapter.num_classes()) == (found.input_channels(), found.num_classes()) == (1, 3)
    assert adapter.data_config() == found.data_config()


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: next(iter(o)))
def test_with_an_override_the_display_statistics_are_still_checked_against_the_channels(overrides):
    settings = MonitorSettings(
        methods=("gradcam",), explain=ExplainOptions(**overrides), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)
    )
    with pytest.raises(ValueError, match=r"`mean` holds 3 values but the model takes 1-channel input"):
        MapLogger(settings).setup(tiny_vit(in_chans=1, num_classes=3))


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: next(iter(o)))
def test_with_an_override_the_labels_are_still_checked_against_the_classes(overrides):
    maps = MapLogger(MonitorSettings(methods=("rollout",), explain=ExplainOptions(**overrides), num_samples=2))
    model = tiny_vit(num_classes=3)
    maps.setup(model)
    maps.keeper.collect((torch.randn(2, 3, 32, 32), torch.tensor([0, 5])), 0, True)
    with pytest.raises(ValueError, match=r"hold 0\.\.5 but the model has 3 classes"):
        maps.check_first_batch(Runtime(torch.device("cpu")), model)


def test_with_an_override_class_names_are_still_checked_against_the_classes():
    settings = MonitorSettings(explain=ExplainOptions(grid_size=(4, 4)), class_names=("a", "b"))
    with pytest.raises(ValueError, match=r"`class_names` holds 2 names but the model has 3 classes"):
        MapLogger(settings).setup(tiny_vit(num_classes=3))


def test_hugging_face_models_give_their_class_count_from_the_config():
    transformers = pytest.importorskip("transformers")
    classifier = hf_vit()  # num_labels=5
    assert resolve_adapter(classifier).num_classes() == 5
    assert resolve_adapter(classifier, grid_size=(4, 4)).num_classes() == 5
    encoder = transformers.ViTModel(classifier.config)
    assert resolve_adapter(encoder).num_classes() is None, "a bare encoder has no classes"
