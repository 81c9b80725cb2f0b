"""What SaCo adds to the callback's logging hook: the whole hook with and without it, side by side.

Three ``AttentionRolloutCallback`` instances keep the same fixed batch in one ``trainer.validate`` run and differ
only in their faithfulness scalars:

- ``defaults``: deletion/insertion AUCs (``faithfulness_steps=8``) and SaCo (``saco_groups=10``), the defaults;
- ``SaCo off``: the same with ``saco_groups=0``;
- ``AUCs and SaCo off``: ``faithfulness_steps=0, saco_groups=0`` (side pass, pictures and the other scalars).

Each arm times the callback's whole logging hook (``AttentionRolloutCallback.log_maps``: side pass, perturbed
forwards, pictures, scalars into a TensorBoard logger) under ``torch.inference_mode()`` as the validation loop
runs it. The arms run interleaved (one warm-up round not counted, the order reversed every other round); each
ratio is the median over rounds of the per-round ratio. A forward hook on the model counts the forwards and
the images each arm sends through it: SaCo must add one forward of ``P * K`` images per method (``P`` panels,
``K`` groups), i.e. at most ``K`` batched forwards' worth of images per method.

    .venv/bin/python benchmarks/bench_saco.py            # timm vit_small_patch16_224, 224 px, 8 samples, 4 methods
    .venv/bin/python benchmarks/bench_saco.py --quick    # smoke run: a 4-block vit_tiny on 32 px, 4 samples
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_engine.py

import timm
import torch
from _report import emit
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout import AttentionRolloutCallback

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
ARMS = {
    "defaults (AUCs + SaCo)": dict(faithfulness_steps=8, saco_groups=10),
    "SaCo off": dict(faithfulness_steps=8, saco_groups=0),
    "AUCs and SaCo off": dict(faithfulness_steps=0, saco_groups=0),
}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random init)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--num-samples", type=int, default=8, help="the callback's num_samples (its default: 8)")
    parser.add_argument("--methods", nargs="+", default=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (after one warm-up round)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 4-block vit_tiny on 32 px, 4 samples")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.model_kwargs = {}
    if args.quick:
        args.model, args.img_size, args.num_samples, args.repeats = "vit_tiny_patch16_224", 32, 4, 1
        args.model_kwargs = dict(img_size=32, patch_size=4, depth=4)
    return args


class Counter:
    """Counts the forwards of a module and the images they carry."""

    def __init__(self, module: nn.Module) -> None:
        self.forwards = self.images = 0
        module.register_forward_hook(self._count)

    def _count(self, module: nn.Module, inputs: tuple, output) -> None:
        self.forwards += 1
        self.images += int(inputs[0].shape[0])

    def take(self) -> tuple:
        counts = (self.forwards, self.images)
        self.forwards = self.images = 0
        return counts


def setup(args: argparse.Namespace, log_dir: str):
    """A validated Trainer whose three callbacks kept the same fixed batch; the arms' hooks and the counter."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    torch.manual_seed(0)
    net = timm.create_model(args.model, pretrained=False, num_classes=10, **args.model_kwargs).eval()
    images = torch.randn(args.num_samples, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(args.num_samples) % 10

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x)

        def validation_step(self, batch, batch_idx):
            return None

    callbacks = {
        name: AttentionRolloutCallback(
            methods=args.methods,
            num_samples=args.num_samples,
            tag_prefix=f"arm{i}",
            sample_selection="first",
            **settings,
        )
        for i, (name, settings) in enumerate(ARMS.items())
    }
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=len(images))
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(log_dir),
        callbacks=list(callbacks.values()),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(module, data)
    if any(callback.fixed_batch is None for callback in callbacks.values()):
        raise RuntimeError("a callback kept no fixed batch")
    counter = Counter(net)
    step = [0]

    def hook(callback: AttentionRolloutCallback) -> Callable[[], None]:
        def run() -> None:
            step[0] += 1
            with torch.inference_mode():  # as the validation loop runs it
                callback.log_maps(trainer, module, f"s{step[0]}", step=step[0])

        return run

    return {name: hook(callback) for name, callback in callbacks.items()}, counter, trainer.logger


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as log_dir:
        cases, counter, logger = setup(args, log_dir)
        counter.take()
        times: Dict[str, List[float]] = {name: [] for name in cases}
        counts: Dict[str, tuple] = {}
        names = list(cases)
        for round_index in range(args.repeats + 1):
            for name in names if round_index % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                cases[name]()
                elapsed = time.perf_counter() - start
                counts[name] = counter.take()
                if round_index > 0:
                    times[name].append(elapsed)
                print(
                    f"round {round_index} {name}: {elapsed * 1000:.0f} ms, forwards/images {counts[name]}",
                    file=sys.stderr,
                    flush=True,
                )
        logger.finalize("success")

    def ratio(numerator: str, denominator: str) -> float:
        return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))

    on, off, floor = names
    panels, groups, methods = args.num_samples, ARMS[on]["saco_groups"], len(args.methods)
    added = (counts[on][0] - counts[off][0], counts[on][1] - counts[off][1])
    quick = ["**`--quick`: a smoke run of the code path on a tiny model; its numbers mean nothing.**", ""]
    lines = (quick if args.quick else []) + [
        f"# SaCo in the callback's hook: {args.model} (random init), {args.img_size} px, {panels} samples, "
        f"methods {args.methods}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} rounds",
        "",
        "| ratio (median over rounds of the per-round ratio) | value |",
        "|---|---|",
        f"| whole hook, defaults (AUCs + SaCo K={groups}) / SaCo off (AUCs on) | {ratio(on, off):.2f}× |",
        f"| whole hook, SaCo off / AUCs and SaCo off | {ratio(off, floor):.2f}× |",
        f"| whole hook, defaults / AUCs and SaCo off | {ratio(on, floor):.2f}× |",
        "",
        f"SaCo added {added[0]} forwards carrying {added[1]} images per hook call: {methods} methods × "
        f"{panels} panels × K={groups} = {methods * panels * groups} images expected, in {methods} forwards "
        f"({'as expected' if added == (methods, methods * panels * groups) else 'NOT as expected'}).",
        "",
        "| arm | median ms | min ms | max ms | forwards | images |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in times.items():
        lines.append(
            f"| {name} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | "
            f"{max(values) * 1000:.0f} | {counts[name][0]} | {counts[name][1]} |"
        )
    lines += ["", f"Total run time {time.perf_counter() - started:.0f} s."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
