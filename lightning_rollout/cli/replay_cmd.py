"""`lightning-rollout replay`: the pictures and scalars the callback would have logged, from checkpoints.

No Trainer runs: the config's AttentionRolloutCallback entry gives the `MonitorSettings`, and the shared
logging step (`MapLogger`) keeps the samples the callback keeps (the sanity check's batches, then the first
validation epoch's when the keeper still waits) and logs each checkpoint's maps to TensorBoard.
"""

import argparse
import importlib
import itertools
import sys
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from lightning_rollout.callbacks import AttentionRolloutCallback
from lightning_rollout.cli.errors import CLIError, one_line
from lightning_rollout.cli.loading import (
    build_section,
    callback_entry,
    datamodule_bases,
    model_from_config,
    read_checkpoint,
    read_config,
    torch_device,
)
from lightning_rollout.monitor.settings import MonitorSettings
from lightning_rollout.monitor.side_pass import Runtime
from lightning_rollout.monitor.step import MapLogger
from lightning_rollout.sinks import TensorBoardImageSink

__all__ = ["keep_samples", "replay_runtime", "run_replay", "validation_batches"]

_LIGHTNING = ("lightning.pytorch", "pytorch_lightning")


def _lightning() -> Any:
    """The first installed Lightning namespace."""
    for namespace in _LIGHTNING:
        try:
            return importlib.import_module(namespace)
        except ImportError:
            continue
    raise CLIError("replay needs `lightning` or `pytorch-lightning` installed")


def _settings(config: Dict[str, Any], args: argparse.Namespace) -> MonitorSettings:
    """The settings of the config's AttentionRolloutCallback entry (built as LightningCLI builds it), else the
    callback's defaults with `--method`."""
    entry = callback_entry(config)
    if not entry:
        return AttentionRolloutCallback(methods=args.method or ["rollout"]).settings
    if args.method:
        print(
            f"lightning-rollout replay: warning: --method is ignored: --config {args.config} has an "
            "AttentionRolloutCallback entry, whose methods are replayed",
            file=sys.stderr,
        )
    return build_section(entry, "AttentionRolloutCallback", AttentionRolloutCallback, args.config).settings


def validation_batches(loader: Any, trainer: Dict[str, Any]) -> Tuple[Optional[int], Optional[int]]:
    """How many batches of `loader` the config's Trainer takes in its sanity check and in a validation epoch
    (`None`: all), as Lightning reads `num_sanity_val_steps` (default 2, -1: all) and `limit_val_batches`."""
    limit = trainer.get("limit_val_batches")
    length = len(loader) if hasattr(loader, "__len__") else None
    epoch: Optional[int] = length
    if isinstance(limit, int) and not isinstance(limit, bool):
        epoch = limit if length is None else min(limit, length)
    elif isinstance(limit, float) and length is not None:
        epoch = int(length * limit)
    sanity = trainer.get("num_sanity_val_steps")
    sanity = 2 if sanity is None else int(sanity)
    if sanity < 0:
        return epoch, epoch
    return (sanity if epoch is None else min(sanity, epoch)), epoch


def keep_samples(maps: MapLogger, loader: Iterable, trainer: Dict[str, Any]) -> None:
    """Hands `loader`'s batches to `maps.keeper` as the callback does in a fit run of the config's Trainer
    (`trainer`: its section): the sanity check's batches, then, when the keeper still waits (too few samples,
    or a sanity check that met one class), one whole validation epoch; then the batch is frozen.

    Raises:
        ValueError: from the keeper (e.g. labels needed but the batches carry none).
    """
    keeper = maps.keeper
    sanity, epoch = validation_batches(loader, trainer)
    if sanity != 0:
        keeper.start_epoch()
        for batch in itertools.islice(loader, sanity):
            keeper.collect(batch, 0, True)
        if keeper.end_sanity_check():
            return
    if epoch != 0:
        keeper.start_epoch()
        for batch in itertools.islice(loader, epoch):
            keeper.collect(batch, 0, True)
    keeper.freeze(True, 1)


def replay_runtime(precision: Any, device: torch.device, model: nn.Module) -> Runtime:
    """The `Runtime` of the config's Trainer `precision` on `device`, through Lightning's precision plugins
    (a `*-true` precision converts `model`, as the Trainer does).

    Raises:
        ValueError: for a precision replay does not know, or one the device cannot run.
    """
    legacy = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
    name = legacy.get(str(precision), str(precision))
    if precision is None or name == "32-true":
        return Runtime(device)
    plugins = _lightning().plugins.precision
    if name in ("16-mixed", "bf16-mixed"):
        plugin = plugins.MixedPrecision(name, device.type)
    elif name in ("16-true", "bf16-true"):
        plugin = plugins.HalfPrecision(name)
    elif name == "64-true":
        plugin = plugins.DoublePrecision()
    else:
        raise ValueError(
            f"precision {precision!r} is not one replay knows: 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true or "
            "64-true"
        )
    plugin.convert_module(model)
    return Runtime(device, plugin.convert_input, plugin.forward_context)


def _validation_loader(model: nn.Module, datamodule: Any) -> Any:
    """Dataloader 0 of the validation loaders (the only one the callback keeps samples from)."""
    source: Any = datamodule if datamodule is not None else model  # a LightningDataModule or LightningModule
    loaders = source.val_dataloader()
    if isinstance(loaders, dict):
        loaders = next(iter(loaders.values()))
    elif isinstance(loaders, (list, tuple)):
        loaders = loaders[0]
    return loaders


def run_replay(args: argparse.Namespace) -> None:
    """`lightning-rollout replay`: the callback's pictures and scalars for each checkpoint, in step order."""
    config = read_config(args.config)
    trainer = config.get("trainer") or {}
    device = torch_device(args.device)
    checkpoints = sorted(((read_checkpoint(p), p) for p in args.checkpoints), key=lambda c: c[0]["global_step"])
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):
        _lightning().seed_everything(seed, verbose=False)  # as LightningCLI does before it builds model and data
    # The data module first: its class count goes into the model, as the training entry points link it.
    datamodule = build_section(config["data"], "data", datamodule_bases(), args.config) if config.get("data") else None
    model = model_from_config(config, args.config, datamodule)
    maps = MapLogger(_settings(config, args), "lightning-rollout replay")
    if datamodule is not None:  # a fit run sets the data up before the callback's setup reads its class names
        datamodule.prepare_data()
        datamodule.setup("fit")
    try:
        maps.setup(model, getattr(datamodule, "class_names", None))
    except ValueError as error:  # the settings' checks against the model
        raise CLIError(
            f"--config {args.config!r}: the AttentionRolloutCallback does not fit the model: {error}"
        ) from None
    try:
        runtime = replay_runtime(trainer.get("precision"), device, model.to(device))
    except (ValueError, RuntimeError) as error:  # Lightning's plugins refuse a precision the device lacks
        raise CLIError(f"--config {args.config!r}: the trainer's precision: {one_line(error)}") from None
    try:
        keep_samples(maps, _validation_loader(model, datamodule), trainer)
        if maps.keeper.batch is None:
            raise ValueError("the validation loader gave no samples (see `limit_val_batches`)")
        maps.check_first_batch(runtime, model)
    except (ValueError, RuntimeError) as error:  # the batches against the callback's keys, target, transform
        raise CLIError(f"--config {args.config!r}: the validation batches do not fit the callback: {error}") from None

    writer = SummaryWriter(args.log_dir)
    sinks = [TensorBoardImageSink(writer, maps.settings.image_format)]

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)

    try:
        for checkpoint, path in checkpoints:
            step, epoch = int(checkpoint["global_step"]), int(checkpoint.get("epoch", 0))
            if maps.history.last_logged == (maps.settings.tag_prefix, step):
                print(f"{path}: step {step} is logged already; skipped", file=sys.stderr)
                continue
            try:
                model.load_state_dict(checkpoint["state_dict"])
            except RuntimeError as error:
                first_line = str(error).splitlines()[0]
                raise CLIError(f"CHECKPOINT {path!r} does not fit the config's model: {first_line}") from None
            label = "init" if step == 0 else f"e{epoch} s{step}"
            logged = maps.log(runtime, model, sinks, log_scalars, step, label)
            print(f"{path}: step {step} {'logged' if logged else 'not logged (see the warning)'}", file=sys.stderr)
    finally:
        writer.close()
    print(
        f"wrote {len(checkpoints)} checkpoints' maps to {args.log_dir}; to see them:\n"
        f"    tensorboard --logdir {args.log_dir} --samples_per_plugin images=100",
        file=sys.stderr,
    )
