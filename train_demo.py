"""Train a timm ViT with LightningCLI and watch its explanation maps in TensorBoard.

    python train_demo.py                                   # the default demo: configs/demo.yaml
    python train_demo.py fit --config configs/<x>.yaml [--trainer.max_epochs=...]
    python train_demo.py fit --config configs/<x>.yaml --print_config
"""

import os
import sys
from typing import List, Optional

from lightning.pytorch.cli import LightningCLI

import lightning_rollout.demo  # noqa: F401  (makes the demo's class paths importable by name)

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.yaml")


def main(args: Optional[List[str]] = None) -> LightningCLI:
    """Runs LightningCLI on ``args`` (default: the command line; none at all: the default demo)."""
    if args is None and len(sys.argv) <= 1:
        args = ["fit", "--config", DEFAULT_CONFIG]
    cli = LightningCLI(
        args=args,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
    logger = cli.trainer.logger
    if cli.subcommand is not None and logger is not None and cli.trainer.is_global_zero:
        log_dir = getattr(logger, "save_dir", None) or cli.trainer.default_root_dir
        print(f"\nLogs are in {log_dir}. To see them:\n    tensorboard --logdir {log_dir} --samples_per_plugin images=100\n")
    return cli


if __name__ == "__main__":
    main()
