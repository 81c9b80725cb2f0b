"""Soak: does a long run with ``AttentionRolloutCallback`` stay bounded? First epochs against last.

One Lightning run of many epochs with the callback logging every method at every epoch into a
TensorBoard logger; after each epoch (``on_train_epoch_end``, which follows the epoch's validation and so
the callback's hook) it records:

- the process's resident memory (RSS, from ``/proc/self/statm``, after ``gc.collect()``);
- the bytes of the TensorBoard event file (flushed first): the growth per epoch is what one epoch logs;
- the bytes of the checkpoint Lightning writes (``trainer.save_checkpoint`` each epoch) and of the
  callback's share of it (``torch.save`` of its ``state_dict()``);
- the wall time of the callback's own hook, bracketed by two marks placed right before and after it.

Scenarios (``--scenario``):

- ``demo`` (default): ``configs/demo.yaml``'s model, data and callback entry (all four methods, 8
  samples, deletion/insertion AUCs on), with a training set of ``--num-train`` scenes (default 256, four
  steps per epoch) so that 200 epochs fit in minutes; the callback's cost does not depend on it.
- ``vit_s224``: timm ``vit_small_patch16_224`` (random init, 4 classes) on 224-px demo scenes, the
  callback with every method, 8 samples, the AUCs off (576 more ViT-S forwards per epoch would only slow
  the soak) and its defaults otherwise, one training batch of 8 per epoch: real-size pictures and side
  passes.

``--control`` runs the same scenario again without the callback (RSS and epoch time only), so that the
trainer's own growth can be told apart. See ``benchmarks/README.md``.
"""

import argparse
import gc
import io
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any, Dict, List, Optional

# See bench_engine.py: spinning OpenMP waits make a shared 2-core machine unusable for timing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import yaml
from _report import emit
from bench_callback import Mark, instantiate
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.methods import METHODS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
SCENARIOS = ("demo", "vit_s224")
QUICK_NOTE = "**`--quick`: a smoke run of the code path, 4 short epochs; its numbers mean nothing.**"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=SCENARIOS, default="demo", help="what to train (default: demo)")
    parser.add_argument("--epochs", type=int, default=None, help="default: 200 (demo), 20 (vit_s224)")
    parser.add_argument("--num-train", type=int, default=256, help="demo: training scenes per epoch")
    parser.add_argument("--control", action="store_true", help="also run without the callback")
    parser.add_argument("--csv", default=None, help="write the per-epoch numbers to this CSV file")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): 4 epochs of 16 training "
        "and 16 validation scenes (demo), the callback's AUCs with 2 steps",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.num_train = 4, 16
    if args.epochs is None:
        args.epochs = 200 if args.scenario == "demo" else 20
    if args.epochs < 4:
        parser.error("--epochs must be >= 4")
    return args


# ------------------------------------------------------------------------------------------ setup


def scenario(args: argparse.Namespace) -> Dict[str, Any]:
    """Model, data module, the callback's arguments and trainer overrides of the chosen scenario."""
    if args.scenario == "demo":
        with open(DEMO_CONFIG) as handle:
            config = yaml.safe_load(handle)
        data_spec = config["data"]
        data_spec["init_args"] = dict(data_spec["init_args"], num_train=args.num_train)
        entry = next(
            spec for spec in config["trainer"]["callbacks"] if spec["class_path"].endswith("AttentionRolloutCallback")
        )
        callback = dict(entry["init_args"], methods=list(METHODS), every_n_epochs=1)
        if args.quick:
            data_spec["init_args"].update(num_val=16, batch_size=16)
            callback["faithfulness_steps"] = 2
        return {
            "model": config["model"],
            "data": data_spec,
            "seed": config.get("seed_everything", 0),
            "callback": callback,
            "trainer": {"log_every_n_steps": config["trainer"].get("log_every_n_steps", 50)},
        }
    return {
        "model": {
            "class_path": "lightning_rollout.demo.TimmClassifier",
            "init_args": {"model_name": "vit_small_patch16_224", "num_classes": 4, "warmup_epochs": 0.0},
        },
        "data": {
            "class_path": "lightning_rollout.demo.SyntheticScenesDataModule",
            "init_args": {"image_size": 224, "num_classes": 4, "num_train": 8, "num_val": 8, "batch_size": 8},
        },
        "seed": 0,
        "callback": {
            "methods": list(METHODS),
            "num_samples": 8,
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
            "faithfulness_steps": 0,
        },
        "trainer": {"limit_train_batches": 1, "log_every_n_steps": 1},
    }


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def tree_bytes(folder: str, prefix: str) -> int:
    total = 0
    for base, _, names in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(base, name)) for name in names if name.startswith(prefix))
    return total


class Soak(Callback):
    """Per epoch, after validation: RSS, event-file bytes, checkpoint bytes, the callback's state bytes."""

    def __init__(self, rollout: Optional[AttentionRolloutCallback], folder: str) -> None:
        self.rollout = rollout
        self.folder = folder
        self.rows: List[Dict[str, float]] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        seconds = time.perf_counter() - self._start
        row = {"epoch": trainer.current_epoch + 1, "epoch_s": seconds}
        if self.rollout is not None:
            trainer.logger.experiment.flush()
            row["events_bytes"] = tree_bytes(trainer.logger.log_dir, "events.out.tfevents")
            path = os.path.join(self.folder, "soak.ckpt")
            trainer.save_checkpoint(path)
            row["checkpoint_bytes"] = os.path.getsize(path)
            buffer = io.BytesIO()
            torch.save(self.rollout.state_dict(), buffer)
            row["state_bytes"] = buffer.tell()
        gc.collect()
        row["rss_mib"] = rss_mib()
        self.rows.append(row)
        if row["epoch"] % 10 == 0 or row["epoch"] == 1:
            print(f"epoch {row['epoch']}: {row['rss_mib']:.0f} MiB, {seconds:.2f} s", file=sys.stderr, flush=True)


def run(args: argparse.Namespace, with_callback: bool, folder: str) -> Dict[str, Any]:
    setup = scenario(args)
    seed_everything(setup["seed"], workers=True, verbose=False)
    model, data = instantiate(setup["model"]), instantiate(setup["data"])
    rollout = AttentionRolloutCallback(**setup["callback"]) if with_callback else None
    before, after = Mark(), Mark()
    soak = Soak(rollout, folder)
    callbacks = [soak, before, *([rollout] if rollout else []), after]
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        callbacks=callbacks,
        logger=TensorBoardLogger(folder, name="soak", version="callback" if with_callback else "control"),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **setup["trainer"],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=data)
    hook = [b - a for a, b in zip(before.validation_end, after.validation_end)]
    for row, seconds in zip(soak.rows, hook):
        row["callback_s"] = seconds
    return {"rows": soak.rows, "methods": setup["callback"]["methods"]}


# ------------------------------------------------------------------------------------------ report


def slope(xs: List[float], ys: List[float]) -> float:
    """Least-squares growth of ``ys`` per unit of ``xs``."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def report(
    args: argparse.Namespace, result: Dict[str, Any], control: Optional[Dict[str, Any]], wall: float
) -> List[str]:
    rows, methods = result["rows"], result["methods"]
    n = len(rows)
    k = min(10, n // 2)
    first, last = rows[:k], rows[-k:]
    logged = [rows[0]["events_bytes"]] + [b["events_bytes"] - a["events_bytes"] for a, b in zip(rows, rows[1:])]
    half = rows[n // 2 :]
    lines = [
        f"# Soak: {args.scenario}, {n} epochs",
        "",
        f"Python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} CPU(s) "
        f"({platform.processor() or platform.machine()}); methods: {', '.join(methods)}; whole run {wall / 60:.1f} min.",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| epoch | RSS (MiB) | event file (MB) | logged this epoch (kB) | checkpoint (kB) | callback state (kB) "
        "| callback hook (s) | epoch (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = sorted({1, 2, 3, k, n // 4, n // 2, 3 * n // 4, n - 1, n} - {0})
    for epoch in shown:
        row = rows[epoch - 1]
        lines.append(
            f"| {epoch} | {row['rss_mib']:.0f} | {row['events_bytes'] / 1e6:.2f} | {logged[epoch - 1] / 1e3:.0f} "
            f"| {row['checkpoint_bytes'] / 1e3:.0f} | {row['state_bytes'] / 1e3:.1f} | {row.get('callback_s', 0):.2f} "
            f"| {row['epoch_s']:.2f} |"
        )

    def mean(rows_: List[Dict[str, float]], key: str) -> float:
        return statistics.fmean(row[key] for row in rows_)

    lines += [
        "",
        f"| first {k} epochs → last {k} | first | last |",
        "|---|---|---|",
        f"| RSS (MiB, mean) | {mean(first, 'rss_mib'):.0f} | {mean(last, 'rss_mib'):.0f} |",
        f"| logged per epoch (kB, mean; per method: ÷ {len(methods)}) | {statistics.fmean(logged[:k]) / 1e3:.0f} "
        f"| {statistics.fmean(logged[-k:]) / 1e3:.0f} |",
        f"| checkpoint (kB) | {first[-1]['checkpoint_bytes'] / 1e3:.0f} | {last[-1]['checkpoint_bytes'] / 1e3:.0f} |",
        f"| callback state in it (kB) | {first[-1]['state_bytes'] / 1e3:.1f} | {last[-1]['state_bytes'] / 1e3:.1f} |",
        f"| callback hook (s, median) | {statistics.median(r['callback_s'] for r in first):.2f} "
        f"| {statistics.median(r['callback_s'] for r in last):.2f} |",
        "",
        f"RSS growth over the second half (least squares): "
        f"**{slope([r['epoch'] for r in half], [r['rss_mib'] for r in half]) * 1024:.0f} KiB per epoch**.",
    ]
    if control is not None:
        crows = control["rows"]
        chalf = crows[len(crows) // 2 :]
        lines.append(
            f"Without the callback (control run): RSS {crows[0]['rss_mib']:.0f} → {crows[-1]['rss_mib']:.0f} MiB, "
            f"growth over the second half {slope([r['epoch'] for r in chalf], [r['rss_mib'] for r in chalf]) * 1024:.0f}"
            f" KiB per epoch; epoch {statistics.median(r['epoch_s'] for r in crows):.2f} s (median)."
        )
    return lines


def write_csv(path: str, rows: List[Dict[str, float]]) -> None:
    keys = list(rows[0])
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(",".join(keys) + "\n")
        for row in rows:
            handle.write(",".join(f"{row.get(key, '')}" for key in keys) + "\n")


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        result = run(args, True, folder)
        wall = time.perf_counter() - start
        control = run(args, False, folder) if args.control else None
    if args.csv:
        write_csv(args.csv, result["rows"])
    emit(report(args, result, control, wall), args.out)


if __name__ == "__main__":
    main()
