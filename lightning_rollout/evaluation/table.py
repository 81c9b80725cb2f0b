"""Offline evaluation of explanation methods on a validation set: one table, per method and two floors.

For each method (and a random-map and a uniform-map floor) it reports, as means over the samples:

- ``deletion_auc`` ↓ and ``insertion_auc`` ↑ (`deletion_insertion_auc`);
- ``saco`` ↑: SaCo, whether the map's amounts of salience order the drops of the class probability when each
  of ``K`` pixel groups alone is replaced (Wu et al., CVPR 2024; `saco`);
- with object masks, ``energy`` ↑ (share of the map inside the mask) and ``pointing_game`` ↑;
- ``randomisation`` ↓: the Spearman correlation between the method's maps of the model and of a
  re-initialised copy (Adebayo et al. 2018; `randomized_copy`).

`evaluate` works on tensors; `main` is the command, which builds the model and data from a
LightningCLI config, loads a checkpoint and writes the table of every registered method (``legrad`` and
``attention`` included) as Markdown, JSON and CSV::

    python -m lightning_rollout.evaluation --config configs/demo.yaml --ckpt_path path/to/last.ckpt
    python train_demo.py evaluate --config configs/demo.yaml --ckpt_path path/to/last.ckpt  # the same
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
from typing import Any, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from lightning_rollout.engine.api import explain_with
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.methods import METHODS, method_names
from lightning_rollout.metrics import (
    deletion_insertion_auc,
    energy_in_mask,
    pointing_game,
    randomized_copy,
    rank_correlation,
    saco,
)
from lightning_rollout.metrics.faithfulness import check_baseline
from lightning_rollout.monitor.batch import FixedBatch, take_samples
from lightning_rollout.monitor.scalars import check_saco_groups

__all__ = ["COLUMNS", "FLOORS", "evaluate", "format_markdown", "main", "save_table"]

FLOORS = ("random", "uniform")
"""Rows that use no explanation: i.i.d. uniform random maps, and a constant map (row-major pixel order)."""

COLUMNS = ("deletion_auc", "insertion_auc", "saco", "energy", "pointing_game", "randomisation")
_HEADERS = {
    "deletion_auc": "deletion AUC ↓",
    "insertion_auc": "insertion AUC ↑",
    "saco": "SaCo ↑",
    "energy": "energy in mask ↑",
    "pointing_game": "pointing game ↑",
    "randomisation": "randomisation corr. ↓",
}


def _floor_maps(name: str, batch: int, grid: Sequence[int], generator: torch.Generator) -> Tensor:
    if name == "random":
        return torch.rand(batch, *grid, generator=generator)
    return torch.ones(batch, *grid)


def evaluate(
    model: nn.Module,
    images: Tensor,
    labels: Optional[Tensor] = None,
    masks: Optional[Tensor] = None,
    *,
    methods: Sequence[str] = METHODS,
    steps: int = 16,
    baseline: Any = "mean",
    saco_groups: int = 10,
    chunk_size: int = 64,
    seed: int = 0,
    options: Optional[ExplainOptions] = None,
    **explain_kwargs: Any,
) -> List[Dict[str, Any]]:
    """Scores every method's maps of ``images`` and the two floors; one dict per row.

    Args:
        model: the trained classifier (a timm ViT, or a module holding one, as `explain_many` takes).
        images: ``(N, C, H, W)`` samples on the model's device.
        labels: ``(N,)`` true classes, explained and scored; ``None``: the model's predictions.
        masks: ``(N, H, W)`` object masks, for ``energy`` and ``pointing_game``; ``None`` leaves them out.
        methods: method names, explained together in one side pass per chunk (`explain_many`).
        steps: steps of the deletion and insertion curves.
        baseline: the perturbation baseline (see `lightning_rollout.metrics.faithfulness`).
        saco_groups: SaCo's ``K`` pixel groups (``K`` perturbed copies of each sample per row, 128 images per
            forward); ``0`` leaves the ``saco`` column out (``None``).
        chunk_size: samples explained at a time (bounds memory).
        seed: seed of the random floor and of the re-initialised copy's weights.
        options: the side pass's settings as one bundle (as a callback holds them).
        **explain_kwargs: or the same as keyword arguments of `explain_many` (``head_fusion``,
            ``discard_ratio``, ...), when ``options`` is not given.

    Returns:
        Rows ``{"name": ..., "deletion_auc": ..., ...}``: methods first, then ``random`` and ``uniform``.
        ``energy``/``pointing_game`` are ``None`` without masks, ``randomisation`` is ``None`` for the floors,
        ``saco`` is ``None`` with ``saco_groups=0`` (the uniform floor's is 0 by definition: a constant map
        ranks no group above another).
    """
    check_saco_groups("saco_groups", saco_groups)
    if options is None:
        options = ExplainOptions.from_kwargs(**explain_kwargs)
    elif explain_kwargs:
        raise ValueError(f"pass either `options` or explain keyword arguments, got both (`{sorted(explain_kwargs)}`)")
    if labels is None:
        with torch.no_grad():
            labels = torch.cat([model(chunk).argmax(dim=-1) for chunk in images.split(chunk_size)])
    randomized = randomized_copy(model, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    sums: Dict[str, Dict[str, float]] = {name: {} for name in [*methods, *FLOORS]}

    def add(name: str, key: str, values: Tensor) -> None:
        sums[name][key] = sums[name].get(key, 0.0) + float(values.double().sum())

    for start in range(0, images.shape[0], chunk_size):
        chunk = images[start : start + chunk_size]
        target = labels[start : start + chunk_size].to(chunk.device)
        chunk_masks = None if masks is None else masks[start : start + chunk_size].to(chunk.device)
        maps: Dict[str, Tensor] = {}
        if methods:  # one side pass per model for all methods
            maps = explain_with(model, chunk, list(methods), options, target).maps
            shuffled = explain_with(randomized, chunk, list(methods), options, target).maps
            for method in methods:
                add(method, "randomisation", rank_correlation(maps[method], shuffled[method]))
        grid = next(iter(maps.values())).shape[1:] if maps else (chunk.shape[2], chunk.shape[3])
        for floor in FLOORS:
            maps[floor] = _floor_maps(floor, chunk.shape[0], grid, generator).to(chunk.device)
        for name, name_maps in maps.items():
            deletion, insertion = deletion_insertion_auc(
                model, chunk, name_maps, target, steps=steps, baseline=baseline
            )
            add(name, "deletion_auc", deletion)
            add(name, "insertion_auc", insertion)
            if saco_groups:
                add(name, "saco", saco(model, chunk, name_maps, target, groups=saco_groups, batch_size=128))
            if chunk_masks is not None:
                add(name, "energy", energy_in_mask(name_maps, chunk_masks))
                add(name, "pointing_game", pointing_game(name_maps, chunk_masks))
    count = images.shape[0]
    return [
        {"name": name, **{key: (sums[name][key] / count if key in sums[name] else None) for key in COLUMNS}}
        for name in sums
    ]


def format_markdown(rows: Sequence[Dict[str, Any]]) -> str:
    """The rows as a Markdown table; missing values show as ``—``."""
    lines = ["| method | " + " | ".join(_HEADERS[key] for key in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for row in rows:
        cells = [
            "—" if row[key] is None or (isinstance(row[key], float) and math.isnan(row[key])) else f"{row[key]:.3f}"
            for key in COLUMNS
        ]
        lines.append(f"| {row['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def save_table(rows: Sequence[Dict[str, Any]], out_dir: str, meta: Optional[Dict[str, Any]] = None) -> Dict[str, str]:
    """Writes ``evaluation.md``, ``evaluation.json`` (rows and ``meta``) and ``evaluation.csv``; returns the paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"evaluation.{ext}") for ext in ("md", "json", "csv")}
    with open(paths["md"], "w", encoding="utf-8") as handle:
        handle.write(format_markdown(rows))
    with open(paths["json"], "w", encoding="utf-8") as handle:
        json.dump({"meta": meta or {}, "rows": list(rows)}, handle, indent=2)
    with open(paths["csv"], "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    return paths


def _load_samples(datamodule: Any, num_samples: int, callback: Any) -> FixedBatch:
    """The first ``num_samples`` validation samples, with the callback's batch keys when it has one."""
    keys = {}
    if callback is not None:
        settings = callback.settings
        keys = dict(image_key=settings.image_key, label_key=settings.label_key, mask_key=settings.mask_key)
    datamodule.setup("validate")
    samples: Optional[FixedBatch] = None
    for batch in datamodule.val_dataloader():
        taken = take_samples(batch, num_samples - (0 if samples is None else len(samples)), **keys)
        samples = taken if samples is None else samples.extend(taken, num_samples)
        if len(samples) >= num_samples:
            break
    if samples is None:
        raise ValueError("the validation data loader yielded no batch")
    return samples


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_rollout.evaluation.table",
        description="Explain the first N validation samples with a checkpoint; print and save the table. "
        "Other arguments (e.g. --data.init_args.num_val=64) go to LightningCLI as overrides of the config.",
    )
    parser.add_argument("--config", required=True, help="the LightningCLI YAML the model was trained with")
    parser.add_argument("--ckpt_path", required=True, help="a Lightning checkpoint of that model")
    parser.add_argument("--num_samples", type=int, default=256, help="first N validation samples (default 256)")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (default 16)")
    parser.add_argument(
        "--baseline",
        default=None,
        help="'blur', 'mean' or a number (default: the config's callback's faithfulness_baseline, else 'mean')",
    )
    parser.add_argument(
        "--saco_groups",
        type=int,
        default=None,
        help="SaCo's pixel groups K, 0: no SaCo column (default: the config's callback's saco_groups when on, else 10)",
    )
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random floor and the re-initialised copy")
    parser.add_argument("--out_dir", default=None, help="default: evaluation/ beside the checkpoint")
    args, overrides = parser.parse_known_args(argv)
    args.overrides = overrides
    if args.num_samples < 1 or args.steps < 1:
        parser.error("--num_samples and --steps must be >= 1")
    if args.saco_groups is not None:
        try:
            check_saco_groups("--saco_groups", args.saco_groups)
        except ValueError as error:
            parser.error(str(error))
    if args.baseline is not None:
        try:
            args.baseline = float(args.baseline)
        except ValueError:
            pass
        try:
            check_baseline("--baseline", args.baseline)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """The command: model and data from ``--config``, weights from ``--ckpt_path``, table to stdout and files."""
    from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback
    from lightning_rollout.data.linking import LinkedLightningCLI

    args = parse_args(argv)
    cli = LinkedLightningCLI(
        args=["--config", args.config, *args.overrides, "--trainer.logger=false"],
        run=False,
        auto_configure_optimizers=False,
    )
    model, datamodule = cli.model, cli.datamodule
    checkpoint = torch.load(args.ckpt_path, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    callbacks = getattr(cli.trainer, "callbacks", [])  # set by Lightning's callback connector, not declared on Trainer
    callback = next((c for c in callbacks if isinstance(c, AttentionRolloutCallback)), None)
    options = ExplainOptions() if callback is None else callback.settings.explain
    methods = args.methods or method_names()  # the table compares methods: all of them, not only those logged
    if args.baseline is None:
        args.baseline = callback.settings.faithfulness_baseline if callback is not None else "mean"
    if args.saco_groups is None:
        args.saco_groups = (callback.settings.saco_groups if callback is not None else 0) or 10
    samples = _load_samples(datamodule, args.num_samples, callback)
    rows = evaluate(
        model,
        samples.images,
        samples.labels,
        samples.masks,
        methods=methods,
        steps=args.steps,
        baseline=args.baseline,
        saco_groups=args.saco_groups,
        seed=args.seed,
        options=options,
    )
    table = format_markdown(rows)
    out_dir = args.out_dir or os.path.join(os.path.dirname(os.path.abspath(args.ckpt_path)), "evaluation")
    meta = dict(
        config=args.config,
        ckpt_path=args.ckpt_path,
        num_samples=len(samples),
        steps=args.steps,
        baseline=args.baseline,
        saco_groups=args.saco_groups,
        seed=args.seed,
        target="label" if samples.labels is not None else "prediction",
        **{k: v for k, v in vars(options).items() if v is not None and k != "method_options"},
        method_options=options.resolved_method_options(),
    )
    paths = save_table(rows, out_dir, meta)
    groups = f"SaCo {args.saco_groups} groups" if args.saco_groups else "SaCo off"
    print(f"{len(samples)} validation samples, {args.steps} steps, baseline {args.baseline!r}, {groups}\n\n{table}")
    print("Saved " + ", ".join(paths.values()))
    return rows
