"""Where a Lightning run's pictures and numbers go: one image sink per logger, and the loggers' metrics."""

import os
from typing import Any, Dict, List

import torch
from torch import nn

from lightning_rollout.monitor.notices import Warn
from lightning_rollout.monitor.side_pass import Runtime
from lightning_rollout.monitor.step import LogScalars
from lightning_rollout.sinks import ImageSink, PNGImageSink, sink_for_logger


def image_sinks(trainer: Any, tag_prefix: str, image_format: str, warn: Warn) -> List[ImageSink]:
    """One sink per logger of `trainer`: its native one (TensorBoard, W&B, MLflow; pictures as `image_format`)
    or PNG files under its log dir (warned once)."""
    if not trainer.loggers:
        warn("no-logger", "the Trainer has no logger; nothing is logged")
        return []
    sinks, png_roots = [], set()
    for logger in trainer.loggers:
        sink = sink_for_logger(logger, image_format)
        if sink is None:
            # The tags start with ``tag_prefix``: files land in <log_dir>/<tag_prefix>/<method>/...
            root = getattr(logger, "log_dir", None) or logger.save_dir or trainer.default_root_dir
            if root in png_roots:
                continue
            png_roots.add(root)
            sink = PNGImageSink(root)
            warn(
                f"png-{root}",
                f"{type(logger).__name__} cannot show images; PNGs are written under "
                f"{os.path.join(root, tag_prefix)} (TensorBoardLogger, WandbLogger and MLFlowLogger show "
                "them in their UI)",
            )
        sinks.append(sink)
    return sinks


def metrics_logger(trainer: Any) -> LogScalars:
    """Logs a step's scalars to every logger of `trainer`."""

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    return log_scalars


def runtime_of(trainer: Any, pl_module: nn.Module) -> Runtime:
    """What `trainer` lends the logging step: the module's device, the precision plugin, the rank."""
    device = getattr(pl_module, "device", None)  # a LightningModule's; any other module: its parameters'
    if not isinstance(device, torch.device):
        device = next(pl_module.parameters()).device
    precision = trainer.precision_plugin
    return Runtime(
        device, precision.convert_input, precision.forward_context, trainer.is_global_zero, trainer.world_size
    )
