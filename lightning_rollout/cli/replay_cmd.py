"""`lightning-rollout replay`: the pictures and scalars the callback would have logged, from checkpoints."""

import argparse
import logging
import sys

from lightning_rollout.cli.errors import CLIError
from lightning_rollout.cli.parser import check_methods
from lightning_rollout.cli.loading import (
    build_section,
    callback_entry,
    datamodule_bases,
    model_from_config,
    read_checkpoint,
    read_config,
    torch_device,
)

__all__ = ["run_replay"]


def run_replay(args: argparse.Namespace) -> None:
    """`lightning-rollout replay`: the callback's pictures and scalars for each checkpoint, in step order."""
    check_methods(args.method)
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback
    from lightning_rollout.monitor.step import log_maps

    config = read_config(args.config)
    device = torch_device(args.device)
    checkpoints = sorted(((read_checkpoint(p), p) for p in args.checkpoints), key=lambda c: c[0]["global_step"])
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):
        pl.seed_everything(seed, verbose=False)  # as LightningCLI does before it builds model and data
    model = model_from_config(config, args.config)
    datamodule = build_section(config["data"], "data", datamodule_bases(), args.config) if config.get("data") else None
    entry = callback_entry(config).get("init_args") or {}
    try:
        callback = AttentionRolloutCallback(**(entry or {"methods": args.method or ["rollout"]}))
    except (TypeError, ValueError) as error:
        raise CLIError(f"--config {args.config!r}: the AttentionRolloutCallback entry is invalid: {error}") from None
    # A bare Trainer only lends the callback its logger, precision plugin and rank; it never runs a loop.
    # Its start-up notes ("GPU available: ...") would only be noise here.
    notes = logging.getLogger(f"{pl.__name__}.utilities.rank_zero")
    level = notes.level
    notes.setLevel(logging.WARNING)
    try:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, logger=pl.loggers.TensorBoardLogger(args.log_dir, name="", version=""),
            precision=(config.get("trainer") or {}).get("precision") or "32-true", enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False,
        )
    finally:
        notes.setLevel(level)
    try:
        callback.setup(trainer, model, "validate")
    except ValueError as error:  # the callback's checks of the model against its arguments
        raise CLIError(f"--config {args.config!r}: the AttentionRolloutCallback does not fit the model: {error}") \
            from None

    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("validate")
        loader = datamodule.val_dataloader()
    else:
        loader = model.val_dataloader()
    for index, batch in enumerate(loader):
        try:
            callback.on_validation_batch_end(trainer, model, None, batch, index, 0)
        except ValueError as error:  # the batch's form against the callback's keys, target and transform
            raise CLIError(f"--config {args.config!r}: the validation batch does not fit the callback: {error}") \
                from None
        if callback.fixed_batch is not None and len(callback.fixed_batch) >= callback.num_samples:
            break

    model.to(device)
    for checkpoint, path in checkpoints:
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            first_line = str(error).splitlines()[0]
            raise CLIError(f"CHECKPOINT {path!r} does not fit the config's model: {first_line}") from None
        step, epoch = int(checkpoint["global_step"]), int(checkpoint.get("epoch", 0))
        label = "init" if step == 0 else f"e{epoch} s{step}"
        log_maps(callback, trainer, model, label=label, step=step)
        print(f"{path}: step {step} logged", file=sys.stderr)
    trainer.logger.finalize("success")
    print(f"wrote {len(checkpoints)} checkpoints' maps to {args.log_dir}; to see them:\n"
          f"    tensorboard --logdir {args.log_dir} --samples_per_plugin images=100", file=sys.stderr)
