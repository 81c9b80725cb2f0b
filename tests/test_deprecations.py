"""Old import paths and names keep working for one release: each warns with the new path and gives the same
object."""

import importlib

import pytest

OLD = [
    (
        "lightning_rollout.callback",
        "AttentionRolloutCallback",
        "lightning_rollout.callbacks",
        "AttentionRolloutCallback",
    ),
    ("lightning_rollout.demo", "ImageFolderDataModule", "lightning_rollout.data", "ImageFolderDataModule"),
    ("lightning_rollout.demo.data", "SyntheticScenes", "lightning_rollout.demo.scenes", "SyntheticScenes"),
    ("lightning_rollout.demo.data", "TwoObjectScenesDataModule", "lightning_rollout.demo.datamodules", None),
    ("lightning_rollout.demo.data", "COLOURS", "lightning_rollout.demo.canvas", None),
    ("lightning_rollout.demo.data", "TARGET_SHAPES", "lightning_rollout.demo.shapes", None),
    ("lightning_rollout.demo.data", "IMAGENET_MEAN", "lightning_rollout.data.image_folder", None),
    ("lightning_rollout.models", "AttentionSink", "lightning_rollout.models", "CaptureCallback"),
]


@pytest.mark.parametrize("old_module, name, new_module, new_name", OLD)
def test_old_path_warns_with_the_new_one_and_gives_the_same_object(old_module, name, new_module, new_name):
    new_name = new_name or name
    with pytest.warns(FutureWarning, match=rf"`{old_module}\.{name}` moved to `{new_module}\.{new_name}`"):
        value = getattr(importlib.import_module(old_module), name)
    assert value is getattr(importlib.import_module(new_module), new_name)


@pytest.mark.parametrize("old_module", sorted({old for old, *_ in OLD}))
def test_other_names_are_still_missing(old_module):
    with pytest.raises(AttributeError, match=rf"module '{old_module}' has no attribute 'nothing_here'"):
        importlib.import_module(old_module).nothing_here  # noqa: B018  (the attribute access is the test)
