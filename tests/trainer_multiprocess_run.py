"""Two CPU processes (gloo) under ``torchrun``: the Trainer callback under data parallel and sharded models.

``torchrun --nproc_per_node 2 tests/trainer_multiprocess_run.py OUT_DIR`` runs, in turn:

1. ``ddp``: the Trainer's data-parallel training (4 steps, an evaluation every 2) without and with the
   callback, reporting to TensorBoard; rank 0 saves both runs' final weights and its history;
2. ``sharded``: ``trainer.evaluate()`` of a model sharded with FSDP2's ``fully_shard`` (per layer and the
   root; accelerate shards nothing on CPU, so the model comes sharded), where every rank must join the pass.

Each rank writes ``rank{r}.pt``: what it kept and logged.
"""

import os
import sys

import torch
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # this checkout's lightning_rollout, not an installed one

from trainer_helpers import make_trainer, tiny_hf_vit

from lightning_rollout import AttentionRolloutTrainerCallback
from lightning_rollout.core.distributed import is_sharded

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]


def full_weights(model):
    """The unsharded state dict (a collective on a sharded model: every rank calls it)."""
    state = model.state_dict()
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in state.items()}


def ddp(out_dir):
    without = make_trainer(os.path.join(out_dir, "without"), [], per_device_train_batch_size=4)
    without.train()
    callback = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=4)
    trainer = make_trainer(
        os.path.join(out_dir, "with"),
        [callback],
        per_device_train_batch_size=4,
        report_to="tensorboard",
        eval_on_start=True,
    )
    trainer.train()
    return dict(
        world_size=trainer.args.world_size,
        without=full_weights(without.model),
        observed=full_weights(trainer.model),
        batch=None if callback.fixed_batch is None else callback.maps.keeper.state_dict()["batch"],
        history=callback.history.state_dict()["history"],
    )


def sharded(out_dir):
    model = tiny_hf_vit()
    for layer in [m for m in model.modules() if type(m).__name__ == "ViTLayer"]:
        fully_shard(layer)
    fully_shard(model)
    callback = AttentionRolloutTrainerCallback(methods=METHODS, num_samples=4)
    trainer = make_trainer(os.path.join(out_dir, "sharded"), [callback], model=model)
    trainer.evaluate()
    images = callback.fixed_batch.images
    gathered = [torch.empty_like(images) for _ in range(2)]
    torch.distributed.all_gather(gathered, images)
    return dict(
        is_sharded=is_sharded(model),
        same_batch=torch.equal(gathered[0], gathered[1]),
        weights=full_weights(model),
        batch=callback.maps.keeper.state_dict()["batch"],
        history=callback.history.state_dict()["history"],
    )


if __name__ == "__main__":
    out_dir = sys.argv[1]
    result = {"ddp": ddp(out_dir), "sharded": sharded(out_dir)}
    torch.save(result, os.path.join(out_dir, f"rank{torch.distributed.get_rank()}.pt"))
