"""A standalone 2-process CPU run of a sharded (FSDP2 ``fully_shard``, gloo) model with the callback.

``python tests/sharded_run.py OUT_DIR`` runs each sharding in turn: ``fully_shard`` (FSDP2, per block and
the root) and ``fsdp1`` (``FullyShardedDataParallel`` around the LightningModule with one unit per block, as
Lightning's ``FSDPStrategy`` wraps it). Lightning refuses ``strategy="fsdp"`` without a GPU, so
:class:`ShardedCPUStrategy` keeps DDP's processes and gloo group but shards the module instead of
wrapping it in DDP. Run as a script because the launcher re-runs the command line for rank 1. Each
sharding trains twice (without and with the callback); rank 0 writes ``{sharding}.pt``: both runs' full
final weights, the callback's fixed batch and its maps.
"""

import os
import sys

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy
from timm.models.vision_transformer import Block
from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard
from torch.distributed.fsdp.wrap import ModuleWrapPolicy
from torch.distributed.tensor import DTensor

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # this checkout's lightning_rollout, not an installed one

from lightning_helpers import make_module_class

from lightning_rollout import AttentionRolloutCallback

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
SHARDINGS = ["fully_shard", "fsdp1"]
VIT_OPTIONS = dict(drop_rate=0.3, attn_drop_rate=0.3)


class TinyViTModule(make_module_class(pl.LightningModule)):
    """Module level, as the launcher needs."""


class ShardedCPUStrategy(DDPStrategy):
    """DDP's launcher and process group; the module is sharded block by block instead of wrapped in DDP."""

    def __init__(self, sharding: str, **kwargs):
        super().__init__(**kwargs)
        self.sharding = sharding

    def _setup_model(self, model):
        if self.sharding == "fsdp1":
            policy = ModuleWrapPolicy({Block})
            return FullyShardedDataParallel(model, auto_wrap_policy=policy, device_id=torch.device("cpu"))
        for block in model.model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model


def full_weights(module):
    """The unsharded state dict of the strategy's model (a collective: every rank calls it)."""
    state = module.state_dict()
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in state.items()}


def fit(out_dir, sharding, callbacks):
    """Trains a fresh module (seed 7) for 2 epochs; returns the strategy's (sharded) model."""
    pl.seed_everything(7)
    module = TinyViTModule(**VIT_OPTIONS)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ShardedCPUStrategy(sharding, process_group_backend="gloo"),
        max_epochs=2,
        logger=TensorBoardLogger(out_dir, name=sharding, version=len(callbacks)),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(module)
    return trainer.strategy.model


if __name__ == "__main__":
    out_dir = sys.argv[1]
    for sharding in SHARDINGS:
        without = full_weights(fit(out_dir, sharding, []))
        callback = AttentionRolloutCallback(methods=METHODS, num_samples=4)
        observed = full_weights(fit(out_dir, sharding, [callback]))
        # every rank explained rank 0's batch: rank 1 holds the same one
        images = callback.fixed_batch.images
        gathered = [torch.empty_like(images) for _ in range(2)]
        torch.distributed.all_gather(gathered, images)
        assert torch.equal(gathered[0], gathered[1]), "the ranks explained different batches"
        if torch.distributed.get_rank() == 0:
            batch = callback.maps.keeper.state_dict()["batch"]
            result = dict(
                without=without, observed=observed, batch=batch, history=callback.history.state_dict()["history"]
            )
            torch.save(result, os.path.join(out_dir, f"{sharding}.pt"))
