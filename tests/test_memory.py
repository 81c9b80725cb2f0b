"""Memory stays flat: ``explain_many`` of every method at once on every adapter family, and epochs of the
callback (``explain`` of one method at a time: tests/test_explain_memory.py).

Two signals, both exact and independent of the machine's allocator:

- every tensor a module of the model output during the side pass is dead once the call (or the epoch) is
  over: a leaked autograd graph keeps its activations alive, also when ``gc.collect()`` runs, since a
  Python tensor hook that reaches the hooked tensors forms a cycle through autograd's C++ nodes that the
  collector cannot see;
- the bytes of all live tensors (besides the callback's checkpointed state) do not grow over repeated
  calls or epochs.

The heap is frozen (``gc.freeze``) around each test, so that the collector and the census only walk the
objects the test makes: fast, and blind to the tensors of earlier tests.
"""

import gc
from typing import List, Optional

import lightning.pytorch as pl
import pytest
import torch
from lightning_helpers import make_module_class
from memory_watch import OutputWatch, live_tensor_bytes, tensors_in
from model_zoo import FAMILIES

from lightning_rollout import AttentionRolloutCallback, explain_many
from lightning_rollout.methods import METHODS


@pytest.fixture(autouse=True)
def frozen_heap():
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("family", list(FAMILIES))
def test_explain_many_leaves_nothing_alive(family):
    build, options = FAMILIES[family]
    model = build()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # legrad refuses a plain nn.MultiheadAttention model (its head is inside its forward)
    methods = [m for m in METHODS if not (family == "mha" and m == "legrad")]
    explain_many(model, images, methods, **options)  # first-call caches are not growth
    before = live_tensor_bytes()
    watch = OutputWatch(model)
    try:
        maps = explain_many(model, images, methods, **options)
    finally:
        watch.stop()
    assert sorted(maps) == sorted(methods) and all(m.shape == (2, 4, 4) for m in maps.values())
    del maps
    grown = live_tensor_bytes() - before
    alive = watch.alive()
    assert watch.refs, "the watch saw no module output"
    assert alive == 0, f"{alive} of {len(watch.refs)} module outputs of the side pass outlived `explain_many`"
    assert grown == 0, f"live tensors grew by {grown} bytes over one call"


class _EpochProbe(pl.Callback):
    """Watches the rollout callback's side pass of each epoch; measures what outlives it.

    Placed before the rollout callback, it arms the watch in ``on_validation_epoch_end`` (the rollout
    callback's side pass runs right after) and reads it in ``on_train_epoch_end`` (after validation).
    """

    def __init__(self, rollout: AttentionRolloutCallback) -> None:
        self.rollout = rollout
        self.watch: Optional[OutputWatch] = None
        self.alive: List[int] = []
        self.bytes: List[int] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.watch = OutputWatch(pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.watch.stop()
        self.alive.append(self.watch.alive())
        kept = {tensor.untyped_storage().data_ptr() for tensor in tensors_in(self.rollout.state_dict())}
        self.bytes.append(live_tensor_bytes(exclude=kept))


def test_callback_epochs_leave_memory_flat(tmp_path):
    epochs = 8
    rollout = AttentionRolloutCallback(
        methods=list(METHODS), num_samples=4, filmstrip_columns=3, log_initial_maps=False, faithfulness_steps=2
    )
    probe = _EpochProbe(rollout)
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=1,
        callbacks=[probe, rollout],
        logger=pl.loggers.TensorBoardLogger(tmp_path),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(make_module_class(pl.LightningModule)())
    assert len(probe.alive) == epochs
    assert probe.alive == [0] * epochs, f"module outputs of the side pass alive after each epoch: {probe.alive}"
    grown = probe.bytes[-1] - probe.bytes[2]
    assert grown == 0, (
        f"live tensors besides the callback's state grew by {grown} bytes from epoch 3 to {epochs}: " + str(probe.bytes)
    )
