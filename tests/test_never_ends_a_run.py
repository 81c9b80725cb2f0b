"""Issue 14 item 5: every checkable problem fails before the first training step; later failures of a logging
step warn, skip that step and let training go on; an out-of-memory error retries in smaller chunks."""

from functools import partial

import lightning.pytorch as pl
import pytest
import timm
import torch
from lightning_helpers import RandomScenes, make_module_class, make_trainer, read_events
from torch.utils.data import DataLoader, TensorDataset

import lightning_rollout.monitor.side_pass as side_pass
from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.metrics import saco
from lightning_rollout.monitor.scalars import faithfulness_scalars

Module = make_module_class(pl.LightningModule)


_trainer = partial(make_trainer, max_epochs=2)


def _steps(trainer, tag="attention/rollout/samples"):
    return [event.step for event in read_events(trainer.logger.log_dir).Images(tag)]


class Recorder(Module):
    """Remembers whether a training step ran."""

    trained = False

    def training_step(self, batch, batch_idx):
        type(self).trained = True
        return super().training_step(batch, batch_idx)


class ResNet(Recorder):
    """timm's resnet18 on 32-px inputs: its last stage is a 1x1 feature map."""

    def __init__(self):
        super().__init__()
        self.model = timm.create_model("resnet18", num_classes=3)


class MultiHot(Recorder):
    """Labels as multi-hot vectors (B, 3)."""

    def _loss(self, batch):
        images, labels = batch[:2]
        return torch.nn.functional.binary_cross_entropy_with_logits(self(images), labels)

    def _loader(self, size, seed, shuffle=False):
        scenes = RandomScenes(size, seed=seed)
        labels = torch.nn.functional.one_hot(scenes.labels, 3).float()
        labels[:, 0] = 1.0
        return DataLoader(TensorDataset(scenes.images, labels), batch_size=4, shuffle=shuffle)

    def train_dataloader(self):
        return self._loader(32, 1, shuffle=True)

    def val_dataloader(self):
        return self._loader(16, 2)


@pytest.mark.parametrize(
    "module, callback, match",
    [
        (lambda: Recorder(img_size=16, patch_size=16), dict(), r"rollout maps of this model's 16x16 input are a 1x1"),
        (ResNet, dict(methods=["gradcam"]), r"gradcam maps .* 1x1 grid \(`gradcam_layer`'s feature map\)"),
        (MultiHot, dict(), r"`task`='multiclass' needs class indices .* \(4, 3\) \(multi-hot labels: pass"),
    ],
    ids=["vit-1x1", "resnet18-gradcam-32px", "multi-hot-labels"],
)
def test_problems_fail_before_the_first_training_step(tmp_path, module, callback, match):
    Recorder.trained = False
    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [AttentionRolloutCallback(**callback)]).fit(module())
    assert not Recorder.trained


def test_multi_hot_labels_with_target_prediction_are_logged(tmp_path):
    trainer = _trainer(tmp_path, [AttentionRolloutCallback(target="prediction")], max_epochs=1)
    trainer.fit(MultiHot())
    assert _steps(trainer) == [0, 8]


def _raise(error):
    raise error


def _transform_fails(images):
    raise RuntimeError("input_transform broke")


def _target_fails(output):
    raise RuntimeError("target broke")


@pytest.mark.parametrize(
    "callback, patched, match",
    [
        (dict(input_transform=_transform_fails), None, "RuntimeError: input_transform broke"),
        (dict(methods=["grad_rollout"], target=_target_fails), None, "RuntimeError: target broke"),
        (dict(), RuntimeError("the engine broke"), "RuntimeError: the engine broke"),
        (dict(), torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)"), "OutOfMemoryError: CUDA out of memory"),
    ],
    ids=["input_transform", "target", "engine", "out-of-memory"],
)
def test_without_sanity_check_any_failure_of_the_first_trial_warns_and_training_goes_on(
    tmp_path, monkeypatch, callback, patched, match
):
    if patched is not None:
        monkeypatch.setattr(side_pass, "explain_with", lambda *args, **kwargs: _raise(patched))
    trainer = _trainer(tmp_path, [AttentionRolloutCallback(**callback)], num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=r"logs nothing in this run: Traceback[\s\S]*" + match):
        trainer.fit(Module())
    assert trainer.current_epoch == 2, "training went on"


def test_without_sanity_check_an_unusable_batch_warns_and_training_goes_on(tmp_path):
    trainer = _trainer(tmp_path, [AttentionRolloutCallback()], num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match=r"logs nothing in this run: `task`='multiclass' needs class indices"):
        trainer.fit(MultiHot())
    assert trainer.current_epoch == 2


def test_a_failing_logging_step_warns_and_training_goes_on(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_explain_with = side_pass.explain_with

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # 1: the trial when the batch is kept, 2: the initial maps, 3: epoch 0
            raise RuntimeError("the model changed")
        return real_explain_with(*args, **kwargs)

    monkeypatch.setattr(side_pass, "explain_with", fails_once)
    trainer = _trainer(tmp_path, [AttentionRolloutCallback()])
    with pytest.warns(UserWarning, match=r"at step 4 failed \(RuntimeError: the model changed\); this time's pictures"):
        trainer.fit(Module())
    assert trainer.current_epoch == 2
    assert _steps(trainer) == [0, 8]


def test_out_of_memory_retries_in_smaller_chunks(tmp_path, monkeypatch):
    sizes = []
    real_explain_with = side_pass.explain_with

    def small_memory(model, images, *args, **kwargs):
        sizes.append(images.shape[0])
        if images.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_explain_with(model, images, *args, **kwargs)

    monkeypatch.setattr(side_pass, "explain_with", small_memory)
    callback = AttentionRolloutCallback(methods=["grad_rollout"], num_samples=6, faithfulness_steps=4)
    module = Module()
    trainer = _trainer(tmp_path, [callback], max_epochs=1)
    trainer.fit(module)
    assert sizes[:4] == [1, 6, 3, 2], "the trial, then the batch of 6, halved to 3, then 2"
    _, maps, _ = callback.history.columns("grad_rollout")[-1]
    batch = callback.fixed_batch
    torch.testing.assert_close(maps, explain(module, batch.images, "grad_rollout", target=batch.labels))
    # The chunks' AUCs, weighted by chunk size, are the whole batch's.
    with torch.no_grad():
        whole = faithfulness_scalars(
            module.eval(), batch.images, maps, batch.labels, 4, callback.settings.faithfulness_baseline
        )
    events = read_events(trainer.logger.log_dir)
    chunked = events.Scalars("attention/grad_rollout/deletion_auc")[-1].value
    assert chunked == pytest.approx(whole["deletion_auc"], abs=1e-5)
    # SaCo likewise: the chunks of 2, 2 and 2 panels joined weighted by their panel counts
    whole_saco = saco(module.eval(), batch.images, maps, batch.labels, groups=callback.settings.saco_groups).mean()
    assert events.Scalars("attention/grad_rollout/saco")[-1].value == pytest.approx(float(whole_saco), abs=1e-5)
