"""The class count goes from the data module to the model: LightningCLI's link, one place for every entry point."""

from typing import Any

from lightning.pytorch.cli import LightningCLI

__all__ = ["LinkedLightningCLI", "link_class_count"]


def link_class_count(parser: Any) -> None:
    """Links `data.num_classes` (read once the data module is built, e.g. the number of class folders of
    `ImageFolderDataModule`) into `model.init_args.num_classes`, so that a config need not repeat it.

    jsonargparse skips the link where the data module has no `num_classes` or the model class takes no
    `num_classes` argument; there the config's own value stands.
    """
    parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")


class LinkedLightningCLI(LightningCLI):
    """`LightningCLI` whose model takes its class count from the data module (`link_class_count`); used by
    `train_demo.py` and `python -m lightning_rollout.evaluation`, so both build the same model."""

    def add_arguments_to_parser(self, parser: Any) -> None:
        link_class_count(parser)
