"""The two-object demo scenes: two classes per scene, a mask per class, deterministic; the multi-label module."""

import numpy as np
import torch

from lightning_rollout.demo import TimmClassifier, TwoObjectScenes, TwoObjectScenesDataModule
from lightning_rollout.demo import COLOURS


def _scenes(**kwargs):
    options = dict(size=32, image_size=48, num_classes=4, seed=1, split="val", target_area=(0.08, 0.12))
    options.update(kwargs)
    return TwoObjectScenes(**options)


def test_two_classes_each_with_its_own_object_in_its_colour():
    scenes = _scenes(noise=0.0)
    palette = np.array(list(COLOURS.values()))[:4]
    for index in range(32):
        pixels, labels, masks = scenes.render(index)
        present = np.flatnonzero(labels)
        assert labels.dtype == np.float32 and len(present) == 2 and set(np.unique(labels)) == {0.0, 1.0}
        assert not masks[labels == 0].any(), "absent classes have empty masks"
        assert not (masks[present[0]] & masks[present[1]]).any(), "the objects do not overlap"
        for label in present:
            area = masks[label].mean()
            assert 0.01 < area < 0.15
            rgb = pixels[masks[label]].astype(float).mean(axis=0) / 255.0
            assert any(np.abs(rgb - shade * palette[label]).max() <= 0.06 for shade in (1.0, 0.5)), (index, label)


def test_deterministic_and_tensors():
    first, again = _scenes(), _scenes(cache=False)
    for index in range(3):
        for a, b in zip(first[index], again[index]):
            assert torch.equal(a, b)
    image, labels, masks = first[0]
    assert image.shape == (3, 48, 48) and labels.shape == (4,) and labels.dtype == torch.float32
    assert masks.shape == (4, 48, 48) and masks.dtype == torch.bool
    assert not torch.equal(first[0][0], _scenes(split="train")[0][0])


def test_data_module_batches():
    data = TwoObjectScenesDataModule(image_size=48, num_train=8, num_val=8, batch_size=4)
    images, labels, masks = next(iter(data.val_dataloader()))
    assert images.shape == (4, 3, 48, 48) and labels.shape == (4, 4) and masks.shape == (4, 4, 48, 48)
    assert labels.sum(dim=1).tolist() == [2.0] * 4
    assert data.class_names == ["red", "green", "blue", "yellow"]


def test_multilabel_module_loss_and_accuracy():
    module = TimmClassifier(
        "vit_tiny_patch16_224",
        model_kwargs=dict(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2),
        num_classes=3,
        task="multilabel",
    )
    logged = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, float(value))
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    module.model.forward = lambda images: torch.tensor([[2.0, -1.0, -3.0], [0.0, 1.0, -1.0]])
    loss = module.validation_step((torch.zeros(2, 3, 32, 32), labels), 0)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([[2.0, -1.0, -3.0], [0.0, 1.0, -1.0]]), labels
    )
    assert torch.isclose(loss, expected)
    # At the 0.5 threshold (logit > 0): the first row gets classes 0 and 1 right, misses 2; the second row's
    # logit 0 is no positive, so all three are right.
    assert abs(logged["val/acc"] - 5 / 6) < 1e-6


def test_a_target_area_leaving_no_room_for_the_second_object_is_named_instead_of_hanging():
    """Sample 38 of these scenes draws a first target so large that no second one fits at any scale: the old
    shrink-until-it-fits loop never ended."""
    import pytest

    scenes = _scenes(size=40, image_size=64, target_area=(0.3, 0.5), split="train", seed=0, num_distractors=8)
    with pytest.raises(ValueError, match=r"`target_area`=\(0.3, 0.5\) is too large for two objects in a 64x64 image: "
                                         r"sample 38's first target leaves no room"):
        scenes.render(38)
    scenes.render(37)  # others still fit
