"""Where a Hugging Face `Trainer` run's pictures and numbers go, following `args.report_to`.

=================  =====================================================================================
``report_to``      pictures and scalars
=================  =====================================================================================
``tensorboard``    the run's TensorBoard folder, the one `TensorBoardCallback` writes to
                   (``$TENSORBOARD_LOGGING_DIR``, else ``<output_dir>/runs/<date>_<host>``): a second event
                   file there, which TensorBoard reads as part of the same run
``wandb``          the active run (``wandb.run``), at ``train/global_step``, the x-axis `WandbCallback` sets
``mlflow``         the active run (``mlflow.active_run()``), step-indexed
``none``, others   PNG files under ``<output_dir>/<tag_prefix>/`` and the scalars as JSON lines in
                   ``<output_dir>/<tag_prefix>/scalars.jsonl`` (said once, in a warning)
=================  =====================================================================================

Nothing here imports ``transformers``, ``wandb`` or ``mlflow`` before a run reports to it.
"""

import glob
import json
import os
import socket
from typing import Any, Callable, Dict, List, NamedTuple, Optional

from lightning_rollout.monitor.notices import Warn
from lightning_rollout.monitor.step import LogScalars
from lightning_rollout.sinks import ImageSink, MLflowImageSink, PNGImageSink, TensorBoardImageSink, WandbImageSink


class Outlet(NamedTuple):
    """One destination of a logging step: its image sink, its scalar logger and how to close it."""

    name: str
    images: ImageSink
    log_scalars: LogScalars
    close: Callable[[], None]


def report_to(args: Any) -> List[str]:
    """The integrations the run reports to (``args.report_to`` as a list; ``"none"`` → ``[]``)."""
    names = args.report_to or []
    names = [names] if isinstance(names, str) else list(names)
    return [name for name in names if name != "none"]


def tensorboard_dir(args: Any) -> str:
    """The TensorBoard folder of the run, as `TensorBoardCallback` chooses it: ``$TENSORBOARD_LOGGING_DIR``, else
    the newest folder under ``<output_dir>/runs`` holding an event file of this process (the callback makes it
    with its writer, before this callback's first logging step), else a new ``<output_dir>/runs/<date>_<host>``."""
    folder = os.getenv("TENSORBOARD_LOGGING_DIR")
    if folder:
        return os.path.expanduser(folder)
    ours = f"events.out.tfevents.*.{glob.escape(socket.gethostname())}.{os.getpid()}.*"
    files = glob.glob(os.path.join(glob.escape(args.output_dir), "runs", "**", ours), recursive=True)
    if files:
        return os.path.dirname(max(files, key=os.path.getmtime))
    from transformers.integrations.integration_utils import default_logdir

    return os.path.join(args.output_dir, default_logdir())


def _tensorboard(args: Any, image_format: str) -> Outlet:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=tensorboard_dir(args))

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        for tag, value in scalars.items():
            writer.add_scalar(tag, value, step)
        writer.flush()  # after the step's pictures too: they are written before the scalars

    return Outlet("tensorboard", TensorBoardImageSink(writer, image_format), log_scalars, writer.close)


def _wandb(image_format: str) -> Optional[Outlet]:
    import wandb

    run = wandb.run
    if run is None:
        return None
    step_metric = "train/global_step"

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        run.log({**scalars, step_metric: step})

    return Outlet("wandb", WandbImageSink.for_run(run, image_format, step_metric), log_scalars, lambda: None)


def _mlflow(image_format: str) -> Optional[Outlet]:
    import mlflow

    run = mlflow.active_run()
    if run is None:
        return None
    client, run_id = mlflow.MlflowClient(), run.info.run_id

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        mlflow.log_metrics(scalars, step=step, run_id=run_id)

    return Outlet("mlflow", MLflowImageSink.for_run(client, run_id, image_format), log_scalars, lambda: None)


def _files(root: str, tag_prefix: str) -> Outlet:
    scalars_file = os.path.join(root, tag_prefix, "scalars.jsonl")

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        os.makedirs(os.path.dirname(scalars_file), exist_ok=True)
        with open(scalars_file, "a", encoding="utf-8") as file:
            file.write(json.dumps({"step": step, **scalars}) + "\n")

    return Outlet("png", PNGImageSink(root), log_scalars, lambda: None)


def trainer_outlets(args: Any, tag_prefix: str, image_format: str, warn: Warn) -> List[Outlet]:
    """One outlet per integration of ``args.report_to`` that shows images, PNG files for the rest (said once)."""
    outlets, without_images = [], []
    for name in report_to(args):
        if name == "tensorboard":
            outlets.append(_tensorboard(args, image_format))
            continue
        outlet = _wandb(image_format) if name == "wandb" else _mlflow(image_format) if name == "mlflow" else None
        if outlet is None:
            without_images.append(name if name not in ("wandb", "mlflow") else f"{name} (no active run)")
        else:
            outlets.append(outlet)
    if without_images or not outlets:
        where = os.path.join(args.output_dir, tag_prefix)
        said = f"`report_to`={without_images}" if without_images else "`report_to`='none'"
        warn(
            f"png-{where}",
            f"{said} shows no images: the pictures are PNG files under {where}/<method>/ and the scalars lines "
            f"of {os.path.join(where, 'scalars.jsonl')} ('tensorboard', 'wandb' and 'mlflow' show them in their UI)",
        )
        outlets.append(_files(args.output_dir, tag_prefix))
    return outlets


def log_scalars_to(outlets: List[Outlet]) -> LogScalars:
    """Logs a step's scalars to every outlet."""

    def log_scalars(scalars: Dict[str, float], step: int) -> None:
        for outlet in outlets:
            outlet.log_scalars(scalars, step)

    return log_scalars
