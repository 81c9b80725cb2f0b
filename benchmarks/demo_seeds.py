"""Do the demo's claims hold for every seed? Trains ``configs/demo.yaml`` once per seed and measures the maps.

For each seed the demo's model is built after ``seed_everything(seed)`` (as LightningCLI does with
``seed_everything: <seed>``) and trained with the config's trainer settings (no callback: the callback does
not change training, see the README). On the first ``--num-val`` validation scenes it measures, with the
untrained and with the trained model, the energy inside the target mask and the pointing game of
``grad_rollout`` (and ``chefer``, ``legrad`` at its defaults, the released code's rule, and ``legrad`` with the
model's own read-out over every layer, its earlier default), against the demo's claims:

- untrained ``grad_rollout`` energy ≤ 2 × the mask area (chance),
- trained / untrained ``grad_rollout`` energy ≥ 3,
- trained ``grad_rollout`` pointing game ≥ 0.7,
- the fit takes ≤ 5 minutes.

Writes a Markdown table (``--out``) and, with ``--ckpt-dir``, each seed's trained checkpoint
(``seed<k>.ckpt``, loadable by ``python -m lightning_rollout.evaluation.table``).

    flock /tmp/heavy.lock python benchmarks/demo_seeds.py --seeds 0 1 2 3 4 --out demo_seeds.md
"""

import argparse
import os
import platform
import sys
import time
import warnings
from typing import Any, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import yaml
from _report import emit
from bench_callback import (
    DEFAULT_CONFIG,
    DEFAULT_DATA,
    DEFAULT_MODEL,
    QUICK_DATA,
    ROOT,
    instantiate,
    quick_config,
    section_spec,
)
from lightning.pytorch import Callback, Trainer, seed_everything

from lightning_rollout import explain
from lightning_rollout.metrics import energy_in_mask, mask_area_fraction, pointing_game

METHODS = ("grad_rollout", "chefer", "legrad")
VARIANTS = {"legrad_head": ("legrad", dict(legrad_readout="head", legrad_first_layer=0))}
"""Measured beside the methods: name → (method, options)."""
BAR_RATIO, BAR_POINTING, BAR_CHANCE, BAR_MINUTES = 3.0, 0.7, 2.0, 5.0
QUICK_NOTE = "**`--quick`: a smoke run of the code path, one short epoch on a few scenes; its numbers mean nothing.**"


def measure(model: Any, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> Dict[str, float]:
    """Energy and pointing game of each method's maps, batch means."""
    scores: Dict[str, float] = {}
    for method, (name, options) in {**{m: (m, {}) for m in METHODS}, **VARIANTS}.items():
        maps = explain(model, images, name, target=labels, **options)
        scores[f"{method}/energy"] = float(energy_in_mask(maps, masks).mean())
        scores[f"{method}/pointing_game"] = float(pointing_game(maps, masks).mean())
    with torch.no_grad():
        scores["accuracy"] = float((model(images).argmax(-1) == labels).float().mean())
    return scores


class EpochMaps(Callback):
    """``grad_rollout`` pointing game on the measured scenes after every training epoch (no RNG, no grads)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
        self.images, self.labels, self.masks = images, labels, masks
        self.pointing_game: List[float] = []

    def on_train_epoch_end(self, trainer: Trainer, pl_module: Any) -> None:
        maps = explain(pl_module, self.images, "grad_rollout", target=self.labels)
        self.pointing_game.append(float(pointing_game(maps, self.masks).mean()))


def run_seed(config: Dict[str, Any], seed: int, num_val: int, ckpt_dir: Optional[str]) -> Dict[str, Any]:
    data = instantiate(section_spec(config, "data", DEFAULT_DATA))
    val = [data.val_set[i] for i in range(min(num_val, len(data.val_set)))]
    images = torch.stack([v[0] for v in val])
    labels = torch.tensor([v[1] for v in val])
    masks = torch.stack([v[2] for v in val])

    seed_everything(seed, workers=True, verbose=False)
    model = instantiate(section_spec(config, "model", DEFAULT_MODEL))
    untrained = measure(model, images, labels, masks)

    trainer_config = dict(config.get("trainer") or {})
    for key in ("callbacks", "logger", "default_root_dir"):
        trainer_config.pop(key, None)
    trainer_config.update(
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
    )
    epochs = EpochMaps(images, labels, masks)
    trainer = Trainer(callbacks=[epochs], **trainer_config)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    fit_seconds = time.perf_counter() - start
    if ckpt_dir:
        os.makedirs(ckpt_dir, exist_ok=True)
        trainer.save_checkpoint(os.path.join(ckpt_dir, f"seed{seed}.ckpt"))
    trained = measure(model, images, labels, masks)
    return {
        "seed": seed,
        "area": float(mask_area_fraction(masks).mean()),
        "untrained": untrained,
        "trained": trained,
        "fit": fit_seconds,
        "val_acc": float(trainer.callback_metrics.get("val/acc", float("nan"))),
        "pg_by_epoch": epochs.pointing_game,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--num-val", type=int, default=64, help="validation scenes measured (the first N)")
    parser.add_argument("--ckpt-dir", default=None, help="save each seed's trained checkpoint here")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run of the same code path in seconds (the numbers mean nothing): seed 0, the config's data "
        f"module with {QUICK_DATA}, 1 epoch, 8 measured scenes",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    if args.quick:
        args.seeds, args.num_val = [0], 8
        config = quick_config(config)
        config["trainer"] = dict(config.get("trainer") or {}, max_epochs=1)
    started = time.perf_counter()
    rows = []
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        for seed in args.seeds:
            result = run_seed(config, seed, args.num_val, args.ckpt_dir)
            rows.append(result)
            print(f"  seed {seed}: {result}", file=sys.stderr, flush=True)

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**NO**"

    lines = [
        "# demo_seeds",
        "",
        f"Config: {os.path.relpath(args.config, ROOT)}; first {args.num_val} validation scenes; "
        f"{torch.get_num_threads()} torch threads; torch {torch.__version__}, Python {platform.python_version()}. "
        f"Energy = share of the map inside the target mask (chance = the mask area); PG = pointing game.",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| seed | area | untrained grad_rollout energy (× area) | trained energy (× untrained) | trained PG "
        "| trained chefer energy / PG | trained legrad energy / PG | trained legrad (head, every layer) energy / PG "
        "| val acc | fit (s) | claims hold | grad_rollout PG after each epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        u, t = row["untrained"], row["trained"]
        chance = u["grad_rollout/energy"] / row["area"]
        ratio = t["grad_rollout/energy"] / max(u["grad_rollout/energy"], 1e-12)
        pg = t["grad_rollout/pointing_game"]
        ok = chance <= BAR_CHANCE and ratio >= BAR_RATIO and pg >= BAR_POINTING and row["fit"] <= 60 * BAR_MINUTES
        lines.append(
            f"| {row['seed']} | {row['area']:.3f} | {u['grad_rollout/energy']:.3f} ({chance:.2f}×) | "
            f"{t['grad_rollout/energy']:.3f} ({ratio:.1f}×) | {pg:.2f} | "
            f"{t['chefer/energy']:.3f} / {t['chefer/pointing_game']:.2f} | "
            f"{t['legrad/energy']:.3f} / {t['legrad/pointing_game']:.2f} | "
            f"{t['legrad_head/energy']:.3f} / {t['legrad_head/pointing_game']:.2f} | {row['val_acc']:.3f} | "
            f"{row['fit']:.0f} | {verdict(ok)} | {', '.join(f'{v:.2f}' for v in row['pg_by_epoch'])} |"
        )
    lines += [
        "",
        f"Bars: untrained energy ≤ {BAR_CHANCE:.0f}× area, trained/untrained energy ≥ {BAR_RATIO:.0f}×, "
        f"trained pointing game ≥ {BAR_POINTING}, fit ≤ {BAR_MINUTES:.0f} min (the fit includes the per-epoch "
        f"pointing game: one explain() of the measured scenes per epoch). "
        f"Total {time.perf_counter() - started:.0f} s.",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
