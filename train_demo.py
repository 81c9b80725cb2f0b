"""Train a timm ViT with LightningCLI and watch its explanation maps in TensorBoard.

    python train_demo.py                                   # the default demo: configs/demo.yaml
    python train_demo.py fit --config configs/<x>.yaml [--trainer.max_epochs=...]
    python train_demo.py fit --config configs/<x>.yaml --print_config
    python train_demo.py fit --config configs/image_folder.yaml --data.root /path/to/images
                                                           # your own images: classes from the folders
    python train_demo.py evaluate --config configs/demo.yaml --ckpt_path <run>/checkpoints/last.ckpt
                                                           # the evaluation table (lightning_rollout.evaluation.table)
"""

import os
import sys
from typing import Any, Dict, List, Optional, Union

from lightning.pytorch.cli import LightningCLI

import lightning_rollout.demo  # noqa: F401  (makes the demo's class paths importable by name)
from lightning_rollout.data.linking import LinkedLightningCLI

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.yaml")


def main(args: Optional[List[str]] = None) -> Union[LightningCLI, List[Dict[str, Any]]]:
    """Runs LightningCLI on ``args`` (default: the command line; none at all: the default demo).

    ``evaluate ...`` runs :func:`lightning_rollout.evaluation.main` instead and returns its table's rows.
    """
    if args is None and len(sys.argv) <= 1:
        args = ["fit", "--config", DEFAULT_CONFIG]
    command = sys.argv[1:] if args is None else args
    if command and command[0] == "evaluate":
        from lightning_rollout.evaluation.table import main as evaluate

        return evaluate(command[1:])
    cli = LinkedLightningCLI(
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
