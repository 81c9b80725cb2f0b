"""Issue 14 item 4: the fixed batch spreads over classes without an extra pass over the data."""

from functools import partial

import lightning.pytorch as pl
import pytest
import torch
from lightning_helpers import make_module_class, make_trainer, read_events
from torch.utils.data import DataLoader, TensorDataset

from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.monitor.keeper import FixedBatchKeeper

Module = make_module_class(pl.LightningModule)


def _sorted_scenes(per_class=8, num_classes=3):
    """Images and labels sorted by class, as torchvision's ImageFolder lists a folder."""
    generator = torch.Generator().manual_seed(5)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return torch.randn(len(labels), 3, 16, 16, generator=generator), labels


class Sorted(Module):
    def val_dataloader(self):
        return DataLoader(TensorDataset(*_sorted_scenes()), batch_size=4)


_trainer = partial(make_trainer, max_epochs=2)


def test_a_class_sorted_validation_set_gives_a_batch_over_all_classes_and_the_same_run(tmp_path):
    pl.seed_everything(0)
    plain = Sorted()
    _trainer(tmp_path / "plain", [], logger=False).fit(plain)
    pl.seed_everything(0)
    spread, first = (
        AttentionRolloutCallback(num_samples=6),
        AttentionRolloutCallback(num_samples=6, sample_selection="first", tag_prefix="first"),
    )
    module = Sorted()
    trainer = _trainer(tmp_path, [spread, first])
    with pytest.warns(UserWarning) as record:
        trainer.fit(module)
    messages = [str(w.message) for w in record]
    # The sanity check (2 batches of 4) met class 0 only: the first validation epoch chooses.
    assert any("the sanity check met only class 0" in m for m in messages)
    assert any("all 6 kept samples are of class 0" in m for m in messages)
    images, labels = _sorted_scenes()
    assert spread.fixed_batch.labels.tolist() == [0, 1, 2, 0, 1, 2]
    torch.testing.assert_close(spread.fixed_batch.images, images[[0, 8, 16, 1, 9, 17]])
    assert first.fixed_batch.labels.tolist() == [0] * 6
    for name, parameter in plain.named_parameters():
        assert torch.equal(parameter, dict(module.named_parameters())[name]), "the run is unchanged"
    events = read_events(trainer.logger.log_dir)
    assert [e.step for e in events.Images("attention/rollout/samples")] == [4, 8]
    assert [e.step for e in events.Images("first/rollout/samples")] == [0, 4, 8]


def test_a_sanity_check_of_two_classes_decides_and_logs_the_initial_maps(tmp_path):
    callback = AttentionRolloutCallback(num_samples=4)
    trainer = _trainer(tmp_path, [callback], max_epochs=1, num_sanity_val_steps=3)  # 12 samples: classes 0, 1
    trainer.fit(Sorted())
    assert callback.fixed_batch.labels.tolist() == [0, 1, 0, 1]
    assert [e.step for e in read_events(trainer.logger.log_dir).Images("attention/rollout/samples")] == [0, 4]


def test_fixed_batch_is_read_only():
    callback = AttentionRolloutCallback()
    assert callback.fixed_batch is None
    with pytest.raises(AttributeError):
        callback.fixed_batch = None


@pytest.mark.parametrize("num_samples", [1, 4, 8])
def test_the_keeper_holds_fewer_than_twice_num_samples_while_choosing(num_samples):
    keeper = FixedBatchKeeper(num_samples, None, None, None, True, "per_class", lambda key, message: None)
    generator = torch.Generator().manual_seed(0)
    most = 0
    for _ in range(50):
        labels = torch.randint(0, 20, (16,), generator=generator)
        keeper.collect((torch.randn(16, 3, 4, 4, generator=generator), labels), 0, True)
        most = max(most, keeper.num_candidates)
    assert most < 2 * num_samples + 1
    labels = keeper.batch.labels
    assert len(labels) == num_samples and len(set(labels.tolist())) == num_samples, "one sample per class"


def test_multi_hot_labels_fall_back_to_the_first_samples():
    keeper = FixedBatchKeeper(3, None, None, None, False, "per_class", lambda key, message: None)
    images = torch.randn(5, 3, 4, 4)
    keeper.collect((images, torch.eye(5)[:, :3]), 0, True)
    torch.testing.assert_close(keeper.batch.images, images[:3])
