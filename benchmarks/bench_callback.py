"""Overhead of ``AttentionRolloutCallback`` on the demo's Lightning run, measured side by side.

The demo configuration (``configs/demo.yaml``) is trained three times per round with the same seed, model
and data: without the callback, with ``AttentionRolloutCallback`` logging every method at every epoch into
a TensorBoard logger with the deletion/insertion AUCs on (``--faithfulness-steps``, default 8, the
callback's default), and the same with them off (``faithfulness_steps=0``). Each epoch is timed from
``on_train_epoch_start`` to ``on_train_epoch_end``, which in Lightning's fit loop comes after the epoch's
validation (and so after the callback's ``on_validation_epoch_end``). The claims are

    overhead = (median epoch time with − median epoch time without) / median epoch time without
    ≤ 5 % with the AUCs on, ≤ 3 % with them off

With ``--rounds R`` the arms alternate A B C C B A ... to cancel drift. Checkpointing, the progress
bar and the model summary are off in both arms; both log to a ``TensorBoardLogger`` in a temporary
folder. See ``benchmarks/README.md``.
"""

import argparse
import copy
import importlib
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
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout import AttentionRolloutCallback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
BAR_OVERHEAD = 0.03
BAR_OVERHEAD_FAITHFULNESS = 0.05
ARMS = ("without", "with", "with_no_auc")
ALL_METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]

# Only used when configs/demo.yaml does not exist yet: the demo's small model and data, as the demo
# package documents them (TimmClassifier's example; SyntheticScenesDataModule's defaults).
FALLBACK_CONFIG: Dict[str, Any] = {
    "seed_everything": 0,
    "trainer": {"accelerator": "cpu", "devices": 1, "log_every_n_steps": 10},
    "model": {
        "class_path": "lightning_rollout.demo.TimmClassifier",
        "init_args": {
            "model_name": "vit_tiny_patch16_224",
            "model_kwargs": {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 96, "num_heads": 3},
            "num_classes": 4,
        },
    },
    "data": {
        "class_path": "lightning_rollout.demo.SyntheticScenesDataModule",
        "init_args": {"image_size": 32, "num_classes": 4},
    },
}
DEFAULT_MODEL = "lightning_rollout.demo.TimmClassifier"
DEFAULT_DATA = "lightning_rollout.demo.SyntheticScenesDataModule"
# Callbacks of the config that both arms drop: checkpointing is off, and progress bars only add noise.
DROPPED_CALLBACKS = ("AttentionRolloutCallback", "ModelCheckpoint", "ProgressBar", "RichModelSummary", "ModelSummary")
# --quick: the config's data module with a few scenes (two training steps, one validation batch).
QUICK_DATA = {"num_train": 32, "num_val": 16, "batch_size": 16}
QUICK_NOTE = "**`--quick`: a smoke run of the code path on a few scenes; its numbers mean nothing.**"


# ------------------------------------------------------------------------------------------ config


def import_object(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def instantiate(spec: Any) -> Any:
    """Builds ``{"class_path": ..., "init_args": {...}}`` specs (recursively); returns other values as they are."""
    if isinstance(spec, dict) and "class_path" in spec:
        cls = import_object(spec["class_path"])
        return cls(**{key: instantiate(value) for key, value in (spec.get("init_args") or {}).items()})
    if isinstance(spec, list):
        return [instantiate(value) for value in spec]
    return spec


def section_spec(config: Dict[str, Any], key: str, default_class: str) -> Dict[str, Any]:
    """``model:``/``data:`` as LightningCLI reads them: with a ``class_path``, or the bare init args."""
    section = config.get(key) or {}
    if "class_path" in section:
        return section
    return {"class_path": default_class, "init_args": section}


def quick_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A copy of ``config`` whose data module has only :data:`QUICK_DATA`'s few scenes."""
    config = copy.deepcopy(config)
    data = section_spec(config, "data", DEFAULT_DATA)
    config["data"] = dict(data, init_args=dict(data.get("init_args") or {}, **QUICK_DATA))
    return config


def short_name(spec: Any) -> str:
    return spec["class_path"].rpartition(".")[2] if isinstance(spec, dict) and "class_path" in spec else ""


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="LightningCLI-style YAML (default: configs/demo.yaml)")
    parser.add_argument("--epochs", type=int, default=3, help="max_epochs of every run")
    parser.add_argument(
        "--rounds", type=int, default=2, help="runs per arm, alternating A B B A ... (default 2: A B B A)"
    )
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, help="the callback's methods")
    parser.add_argument("--faithfulness-steps", type=int, default=8, help="the callback's faithfulness_steps")
    parser.add_argument("--limit-train-batches", type=float, default=None, help="override the config's value")
    parser.add_argument("--limit-val-batches", type=float, default=None, help="override the config's value")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run of the same code path in seconds (the numbers mean nothing): the config's data module with "
        f"{QUICK_DATA}, 1 epoch, 1 round, faithfulness_steps 2",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.rounds, args.faithfulness_steps = 1, 1, 2
    if args.epochs < 1 or args.rounds < 1:
        parser.error("--epochs and --rounds must be >= 1")
    return args


def as_limit(value: Optional[float]) -> Optional[float]:
    return int(value) if value is not None and value > 1 and float(value).is_integer() else value


# ------------------------------------------------------------------------------------------ timing


class EpochClock(Callback):
    """Wall time of every training epoch, validation included (``on_train_epoch_end`` follows it)."""

    def __init__(self) -> None:
        self.epochs: List[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: Any) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        self.epochs.append(time.perf_counter() - self._start)


class Mark(Callback):
    """Records when ``on_train_start`` and (non-sanity) ``on_validation_epoch_end`` reach it.

    Two marks placed right before and right after the rollout callback bracket its own hooks.
    """

    def __init__(self) -> None:
        self.train_start: List[float] = []
        self.validation_end: List[float] = []

    def on_train_start(self, trainer: Trainer, pl_module: Any) -> None:
        self.train_start.append(time.perf_counter())

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.validation_end.append(time.perf_counter())


def warm_data_cache(data: Any) -> None:
    """Renders every sample once, so that no run pays for drawing the synthetic scenes (cached per item)."""
    for name in ("train_set", "val_set"):
        dataset = getattr(data, name, None)
        if dataset is not None and getattr(dataset, "cache", False):
            for index in range(len(dataset)):
                dataset[index]


def run_once(
    config: Dict[str, Any], args: argparse.Namespace, data: Any, arm: str, log_dir: str, index: int
) -> Dict[str, Any]:
    with_callback = arm != "without"
    seed = config.get("seed_everything", 0)
    seed = 0 if seed in (None, True) else int(seed)
    seed_everything(seed, workers=True, verbose=False)
    model = instantiate(section_spec(config, "model", DEFAULT_MODEL))

    trainer_config = dict(config.get("trainer") or {})
    config_callbacks = trainer_config.pop("callbacks", None) or []
    trainer_config.pop("logger", None)
    rollout_args: Dict[str, Any] = {}
    others = []
    for spec in config_callbacks:
        if short_name(spec) == "AttentionRolloutCallback":
            rollout_args = dict(spec.get("init_args") or {})
        elif not any(short_name(spec).endswith(name) for name in DROPPED_CALLBACKS):
            others.append(instantiate(spec))
    rollout_args.update(
        methods=list(args.methods),
        every_n_epochs=1,
        faithfulness_steps=args.faithfulness_steps if arm == "with" else 0,
    )

    clock, before, after = EpochClock(), Mark(), Mark()
    callbacks = [clock, *others, before]
    if with_callback:
        callbacks.append(AttentionRolloutCallback(**rollout_args))
    callbacks.append(after)
    for key in ("limit_train_batches", "limit_val_batches"):
        if getattr(args, key) is not None:
            trainer_config[key] = as_limit(getattr(args, key))
    trainer_config.update(
        max_epochs=args.epochs,
        max_steps=-1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=log_dir,
        logger=TensorBoardLogger(log_dir, name=arm, version=index),
        callbacks=callbacks,
    )
    trainer = Trainer(**trainer_config)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_time = time.perf_counter() - start
    return {
        "epochs": clock.epochs,
        "fit": fit_time,
        "callback": [b - a for a, b in zip(before.validation_end, after.validation_end)],
        "initial": [b - a for a, b in zip(before.train_start, after.train_start)],
        "rollout_args": rollout_args,
        "steps": trainer.global_step,
    }


# ------------------------------------------------------------------------------------------ report


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    if os.path.exists(args.config):
        with open(args.config, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
        source = os.path.relpath(args.config, ROOT) if args.config.startswith(ROOT) else args.config
    else:
        warnings.warn(f"{args.config} does not exist; using the built-in fallback demo configuration", stacklevel=1)
        config, source = FALLBACK_CONFIG, "built-in fallback (configs/demo.yaml missing)"
    if args.quick:
        config = quick_config(config)

    data = instantiate(section_spec(config, "data", DEFAULT_DATA))
    warm_data_cache(data)
    print(f"  data ready at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    results: Dict[str, List[Dict[str, Any]]] = {arm: [] for arm in ARMS}
    order: List[str] = []
    for round_index in range(args.rounds):
        order += list(ARMS) if round_index % 2 == 0 else list(reversed(ARMS))
    with tempfile.TemporaryDirectory(prefix="bench_callback_") as log_dir, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*log_every_n_steps.*")
        for run_index, arm in enumerate(order):
            result = run_once(config, args, data, arm, log_dir, run_index)
            results[arm].append(result)
            print(
                f"  run {run_index + 1}/{len(order)} {arm}: epochs "
                + ", ".join(f"{t:.2f}" for t in result["epochs"])
                + f" s; fit {result['fit']:.1f} s",
                file=sys.stderr,
                flush=True,
            )

    def pooled(arm: str, key: str) -> List[float]:
        return [value for result in results[arm] for value in result[key]]

    without, with_, with_no_auc = pooled("without", "epochs"), pooled("with", "epochs"), pooled("with_no_auc", "epochs")
    base = statistics.median(without)
    overhead = (statistics.median(with_) - base) / base
    overhead_no_auc = (statistics.median(with_no_auc) - base) / base
    callback_times = pooled("with", "callback")
    callback_median = statistics.median(callback_times) if callback_times else 0.0
    callback_no_auc = statistics.median(pooled("with_no_auc", "callback") or [0.0])
    marks_without = pooled("without", "callback")
    initial = pooled("with", "initial")
    fit_without = statistics.median([r["fit"] for r in results["without"]])
    fit_with = statistics.median([r["fit"] for r in results["with"]])
    rollout_args = results["with"][0]["rollout_args"]
    steps = results["without"][0]["steps"]
    model_spec = section_spec(config, "model", DEFAULT_MODEL)
    data_spec = section_spec(config, "data", DEFAULT_DATA)

    verdict = "yes" if overhead <= BAR_OVERHEAD_FAITHFULNESS else "**NO**"
    verdict_no_auc = "yes" if overhead_no_auc <= BAR_OVERHEAD else "**NO**"
    lines = [
        "# bench_callback",
        "",
        f"Config: {source}; model {short_name(model_spec)} {model_spec.get('init_args', {})}; "
        f"data {short_name(data_spec)} {data_spec.get('init_args', {})}; {args.epochs} epochs "
        f"({steps // args.epochs} steps each) per run, {args.rounds} run(s) per arm; callback "
        f"`AttentionRolloutCallback({', '.join(f'{k}={v!r}' for k, v in rollout_args.items())})`; "
        f"{torch.get_num_threads()} torch threads (OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}); "
        f"torch {torch.__version__}, Python {platform.python_version()}.",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| measure | ratio | bar | pass | detail |",
        "|---|---|---|---|---|",
        f"| epoch time with callback (AUCs on, {args.faithfulness_steps} steps) − without, / without (medians) | "
        f"{overhead:+.1%} | ≤ {BAR_OVERHEAD_FAITHFULNESS:.0%} | "
        f"{verdict} | {statistics.median(with_) * 1e3:.0f} vs {base * 1e3:.0f} ms |",
        f"| epoch time with callback (AUCs off) − without, / without (medians) | {overhead_no_auc:+.1%} | "
        f"≤ {BAR_OVERHEAD:.0%} | {verdict_no_auc} | {statistics.median(with_no_auc) * 1e3:.0f} vs {base * 1e3:.0f} ms |",
        f"| the AUCs' share: callback's own time with − without them, / epoch without | "
        f"{(callback_median - callback_no_auc) / base:.1%} | — | info | "
        f"{callback_median * 1e3:.0f} vs {callback_no_auc * 1e3:.0f} ms per epoch |",
        f"| callback's own `on_validation_epoch_end` / epoch without | {callback_median / base:.1%} | — | info | "
        f"{callback_median * 1e3:.0f} ms per epoch (bracketed by two marker callbacks; "
        f"empty bracket {statistics.median(marks_without) * 1e3 if marks_without else 0:.2f} ms) |",
        f"| one-off initial maps at `on_train_start` / epoch without | "
        f"{(statistics.median(initial) if initial else 0) / base:.1%} | — | info | "
        f"{(statistics.median(initial) if initial else 0) * 1e3:.0f} ms, once per fit |",
        f"| whole fit with − without, / without | {(fit_with - fit_without) / fit_without:+.1%} | — | info | "
        f"{fit_with:.1f} vs {fit_without:.1f} s (includes the sanity check and the one-off maps) |",
        "",
        "| arm | epoch times (s) |",
        "|---|---|",
        f"| without | {', '.join(f'{t:.2f}' for t in without)} |",
        f"| with | {', '.join(f'{t:.2f}' for t in with_)} |",
        f"| with, AUCs off | {', '.join(f'{t:.2f}' for t in with_no_auc)} |",
        "",
        f"Total benchmark time {time.perf_counter() - started:.0f} s.",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
