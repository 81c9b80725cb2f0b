"""Issue 14 item 6: ImageFolderDataModule takes classes, names and train augmentation from the folders and
the config, and stops a mismatched config before training. Issue 19 defect 6: the classes are known right after
construction (a LightningCLI config links them into the model), and a missing folder is named."""

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from PIL import Image

from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.data import ImageFolderDataModule
from lightning_rollout.demo import TimmClassifier

TINY_VIT = dict(img_size=16, patch_size=4, depth=1, embed_dim=16, num_heads=2)


def _folder(root, classes=("three", "one", "seven"), per_class=4, val_classes=None):
    for split, names in (("train", classes), ("val", val_classes or classes)):
        for number, name in enumerate(names):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.random.default_rng((number, i)).integers(0, 256, (20, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


def _fit(root, num_classes, callbacks=(), **data):
    model = TimmClassifier(model_kwargs=TINY_VIT, num_classes=num_classes)
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, callbacks=list(callbacks), enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=False, limit_train_batches=1,
    )
    trainer.fit(model, datamodule=ImageFolderDataModule(root, image_size=16, batch_size=4, **data))
    return trainer


def test_classes_and_names_come_from_the_folders_and_reach_the_captions(tmp_path):
    root = _folder(tmp_path)
    data = ImageFolderDataModule(root, image_size=16)
    assert data.num_classes == 3 and data.class_names == ["one", "seven", "three"]
    callback = AttentionRolloutCallback(num_samples=3, faithfulness_steps=0)
    _fit(root, 3, [callback])
    assert callback.maps.class_names == ["one", "seven", "three"]
    assert callback.fixed_batch.labels.tolist() == [0, 1, 2], "spread over the sorted folders"
    labels = [label for _, labels in data.val_dataloader() for label in labels.tolist()]
    assert labels == [0, 1, 2] * 4, "validation batches interleave the classes"


def test_classes_are_read_from_the_folders_when_first_asked_before_setup(tmp_path):
    root = _folder(tmp_path)
    data = ImageFolderDataModule(root, image_size=16)
    assert data.num_classes == 3 and data.class_names == ["one", "seven", "three"]
    assert data.train_set is None and data.val_set is None, "only the folder names were read, no data set built"
    (tmp_path / "train" / "eight").mkdir()
    assert data.num_classes == 3, "read once"


def test_a_missing_or_empty_train_folder_is_named_when_the_classes_are_asked(tmp_path):
    missing = ImageFolderDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"`root`='.*nowhere' must hold a `train/` folder of class folders; "
                                                r".*nowhere/train is missing"):
        missing.num_classes
    with pytest.raises(FileNotFoundError, match=r"`root`='.*nowhere' must hold a `train/` folder"):
        missing.class_names
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match=r"`root`='.*': .*train holds no class folder \(one per class\)"):
        ImageFolderDataModule(str(tmp_path)).num_classes


def test_a_num_classes_that_does_not_match_the_folders_stops_before_training(tmp_path):
    root = _folder(tmp_path)
    with pytest.raises(ValueError, match=r"the model has `num_classes`=10 but .* holds 3 class folders \(one, seven, "
                                         r"three\); set the model's `num_classes` to 3"):
        _fit(root, 10)


def test_train_and_val_must_hold_the_same_class_folders(tmp_path):
    root = _folder(tmp_path, val_classes=("one", "three"))
    with pytest.raises(ValueError, match=r"train/ holds the class folders \['one', 'seven', 'three'\] but val/"):
        ImageFolderDataModule(root).setup("fit")


def test_a_single_class_folder_warns(tmp_path):
    root = _folder(tmp_path, classes=("only",))
    with pytest.warns(UserWarning, match=r"holds a single class folder \('only'\)"):
        ImageFolderDataModule(root).setup("fit")


@pytest.mark.parametrize("augmentation", ["none", "flip", "crop_flip"])
def test_train_augmentation_from_the_config(tmp_path, augmentation):
    root = _folder(tmp_path)
    data = ImageFolderDataModule(root, image_size=16, train_augmentation=augmentation)
    data.setup("fit")
    torch.manual_seed(0)
    train = torch.stack([data.train_set[i][0] for i in range(len(data.train_set))])
    val = torch.stack([data.val_set[i][0] for i in range(len(data.val_set))])
    val = val[torch.argsort(torch.tensor([data.val_set[i][1] for i in range(len(data.val_set))]), stable=True)]
    # train/ and val/ hold the same pictures: "none" shows them as validation does, "flip" mirrors some
    same = [torch.equal(a, b) or torch.equal(a, b.flip(-1)) for a, b in zip(train, val)]
    assert all(same) == (augmentation != "crop_flip")
    if augmentation == "none":
        torch.testing.assert_close(train, val)


def test_bad_train_augmentation():
    with pytest.raises(ValueError, match=r"`train_augmentation` must be one of \['crop_flip', 'flip', 'none'\], got "
                                         r"'rotate'"):
        ImageFolderDataModule("x", train_augmentation="rotate")
