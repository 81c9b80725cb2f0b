"""A standalone 2-process CPU DDP run with the callback (``python tests/ddp_run.py STRATEGY LOG_DIR``).

Run as a script because ``strategy="ddp"`` re-launches the command line of the main process.
"""

import os
import sys

import lightning.pytorch as pl
from lightning.pytorch.loggers import TensorBoardLogger

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [TESTS, os.path.dirname(TESTS)]  # this checkout's lightning_rollout, not an installed one

from lightning_helpers import make_module_class

from lightning_rollout import AttentionRolloutCallback


class TinyViTModule(make_module_class(pl.LightningModule)):
    """Defined at module level so that ``ddp_spawn`` can pickle it."""


if __name__ == "__main__":
    strategy, log_dir = sys.argv[1], sys.argv[2]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=strategy,
        max_epochs=2,
        logger=TensorBoardLogger(log_dir, name="ddp", version=0),
        callbacks=[AttentionRolloutCallback(methods=["rollout", "grad_rollout", "chefer", "gradcam"], num_samples=4)],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(TinyViTModule())
