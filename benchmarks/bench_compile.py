"""torch.compile and sharded models: what the callback costs there, measured side by side.

Part 1, compile: a ``torch.compile``-d ViT (inductor by default) inside a LightningModule is trained twice
with the same seed, model and data, once without and once with ``AttentionRolloutCallback`` logging every
method after every epoch. Each training step is timed from ``on_train_batch_start`` to
``on_train_batch_end``; epoch 0 (compilation) is left out. Reported: the median step time of each arm and
their ratio, and dynamo's graph and recompile counters of each arm (``torch._dynamo.utils.counters``).

Part 2, sharded: two CPU processes (gloo) shard a ViT with FSDP2 ``fully_shard`` (per block and the root).
On every rank, a plain no-grad forward of the sharded model (what a validation step costs) and each
method's ``explain`` (the side pass every rank joins) are timed in alternating rounds; rank 0 reports the
median over rounds of the per-round ratio. See ``benchmarks/README.md``.
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_engine.py

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _report import emit

from lightning_rollout import explain

# Lightning and the callback are imported by the compile part only (see _compiled_vit.py).

ALL_METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
VIT = dict(img_size=32, patch_size=4, depth=4, embed_dim=96, num_heads=3, num_classes=4)
# --quick: the same code path in seconds (eager backend unless --backend is given, tiny models, few steps).
QUICK_VIT = dict(VIT, patch_size=8, depth=2, embed_dim=48)
QUICK_NOTE = "**`--quick`: a smoke run of the code path on tiny models; its numbers mean nothing.**"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_compiled(args, with_callback: bool, folder: str) -> Dict[str, float]:
    from _compiled_vit import CompiledViT, StepTimer
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger
    from torch._dynamo.utils import counters

    from lightning_rollout import AttentionRolloutCallback

    torch._dynamo.reset()
    counters.clear()
    seed_everything(0, verbose=False)
    timer = StepTimer()
    callbacks = [timer]
    if with_callback:
        callbacks.append(AttentionRolloutCallback(methods=ALL_METHODS, num_samples=8))
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=TensorBoardLogger(folder),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=10,
    )
    started = time.perf_counter()
    trainer.fit(CompiledViT(args.backend, args.train_size, args.batch_size, args.vit, args.val_size))
    return {
        "step": statistics.median(timer.times),
        "steps": len(timer.times),
        "graphs": counters["stats"]["unique_graphs"],
        "recompiles": sum(counters["recompiles"].values()),
        "total": time.perf_counter() - started,
    }


def compiled_part(args) -> List[str]:
    results: Dict[bool, List[Dict[str, float]]] = {False: [], True: []}
    order = [False, True, True, False][: 2 * args.rounds] if args.rounds <= 2 else [False, True] * args.rounds
    with tempfile.TemporaryDirectory() as folder:
        for index, with_callback in enumerate(order):
            log(f"compile arm {index + 1}/{len(order)}: {'with' if with_callback else 'without'} the callback")
            results[with_callback].append(run_compiled(args, with_callback, os.path.join(folder, str(index))))
    without, with_ = results[False], results[True]
    step_without = statistics.median(r["step"] for r in without)
    step_with = statistics.median(r["step"] for r in with_)
    lines = [
        f"### Compiled ViT (`torch.compile(backend={args.backend!r})`), training step time",
        "",
        f"timm `vit_tiny_patch16_224` with {args.vit}, batch {args.batch_size}, {args.epochs} epochs of "
        f"{args.train_size // args.batch_size} steps (epoch 0 not timed), {args.rounds} round(s); callback: all four "
        "methods every epoch, 8 samples.",
        "",
        "| arm | median step (ms) | timed steps | dynamo unique graphs | recompiles |",
        "|---|---|---|---|---|",
    ]
    for name, runs in (("without callback", without), ("with callback", with_)):
        lines.append(
            f"| {name} | {1000 * statistics.median(r['step'] for r in runs):.1f} | {sum(r['steps'] for r in runs)} | "
            f"{[r['graphs'] for r in runs]} | {[r['recompiles'] for r in runs]} |"
        )
    lines += ["", f"**step time with / without the callback: {step_with / step_without:.3f}×**", ""]
    return lines


# ------------------------------------------------------------------------------------------ sharded


def _sharded_worker(rank: int, args, port: int, out: str) -> None:
    import timm
    from torch.distributed.fsdp import fully_shard

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    options = dict(img_size=args.sharded_img_size, patch_size=8, num_classes=10, **args.sharded_kwargs)
    model = timm.create_model(args.sharded_model, **options).eval()
    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    images = torch.randn(
        args.sharded_batch_size,
        3,
        args.sharded_img_size,
        args.sharded_img_size,
        generator=torch.Generator().manual_seed(1),
    )
    target = torch.arange(args.sharded_batch_size) % 10

    def forward():
        with torch.no_grad():
            model(images)

    cases = {"forward": forward}
    for method in ALL_METHODS:
        cases[method] = (lambda m: lambda: explain(model, images, m, target=target))(method)
    times: Dict[str, List[float]] = {name: [] for name in cases}
    for round_index in range(args.sharded_repeats + 1):
        names = list(cases) if round_index % 2 == 0 else list(reversed(cases))
        for name in names:
            torch.distributed.barrier()
            start = time.perf_counter()
            cases[name]()
            torch.distributed.barrier()
            if round_index > 0:  # round 0 warms up
                times[name].append(time.perf_counter() - start)
    if rank == 0:
        torch.save(times, out)
    torch.distributed.destroy_process_group()


def sharded_part(args) -> List[str]:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "times.pt")
        log("sharded part: 2 processes")
        mp.spawn(_sharded_worker, args=(args, port, out), nprocs=2, join=True)
        times = torch.load(out)
    forward = times["forward"]
    lines = [
        "### Sharded side pass (FSDP2 `fully_shard`, 2 CPU processes, gloo, 1 thread each)",
        "",
        f"timm `{args.sharded_model}` (random init, patch 8, {args.sharded_img_size} px"
        f"{''.join(f', {k} {v}' for k, v in args.sharded_kwargs.items())}), batch "
        f"{args.sharded_batch_size} on every rank, {args.sharded_repeats} rounds; every call between two barriers.",
        "",
        "| case | median (ms) | median per-round ratio to the sharded forward |",
        "|---|---|---|",
        f"| sharded no-grad forward | {1000 * statistics.median(forward):.1f} | 1 |",
    ]
    for method in ALL_METHODS:
        ratio = statistics.median(t / f for t, f in zip(times[method], forward))
        lines.append(
            f"| `explain(..., {method!r})` on every rank | {1000 * statistics.median(times[method]):.1f} | "
            f"{ratio:.2f}× |"
        )
    return lines + [""]


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None, help="torch.compile backend (default inductor; eager with --quick)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=1, help="compile arms per side (A B, A B B A, ...)")
    parser.add_argument("--sharded-model", default="vit_tiny_patch16_224")
    parser.add_argument("--sharded-img-size", type=int, default=64)
    parser.add_argument("--sharded-batch-size", type=int, default=8)
    parser.add_argument("--sharded-repeats", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--skip-sharded", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): the eager backend (unless "
        "--backend is given), a 2-block 48-wide ViT, 2 epochs of 2 steps, 8 validation samples; sharded: 2 blocks, "
        "32 px, batch 2, 1 round",
    )
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.vit, args.val_size, args.sharded_kwargs = VIT, 64, {}
    if args.quick:
        args.backend = args.backend or "eager"
        args.epochs, args.train_size, args.batch_size, args.rounds = 2, 16, 8, 1
        args.vit, args.val_size = QUICK_VIT, 8
        args.sharded_img_size, args.sharded_batch_size, args.sharded_repeats = 32, 2, 1
        args.sharded_kwargs = dict(depth=2)
    args.backend = args.backend or "inductor"
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    lines = [
        f"## bench_compile.py — torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}",
        "",
    ]
    if args.quick:
        lines += [QUICK_NOTE, ""]
    if not args.skip_compile:
        lines += compiled_part(args)
    if not args.skip_sharded:
        lines += sharded_part(args)
    lines.append(f"Total run time {time.perf_counter() - started:.0f} s.")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
