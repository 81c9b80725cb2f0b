"""Side-by-side cost of ``explain(..., "legrad")`` against ``explain(..., "grad_rollout")`` on the same batch.

Issue 16's bar: LeGrad (each arm: the default, the released rule over every layer, the model's own read-out
over every layer) costs at most 1.3× gradient rollout (timm ViT-S/16, 224 px, batch
16, CPU). Arms run interleaved in rounds (every arm once per round, the order reversed every other round,
after one warm-up round); each ratio is the median over rounds of the per-round ratio to ``grad_rollout``.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see bench_engine.py

import timm
import torch
from _report import emit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout import explain

BAR = 1.3
QUICK_NOTE = "**`--quick`: a smoke run of the code path on a tiny model; its numbers mean nothing.**"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random init)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): vit_tiny cut to 2 blocks, "
        "48 wide, 8-px patches on 32 px, batch 4, 1 round",
    )
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.model_kwargs = {}
    if args.quick:
        args.model, args.img_size, args.batch_size, args.rounds = "vit_tiny_patch16_224", 32, 4, 1
        args.model_kwargs = dict(patch_size=8, depth=2, embed_dim=48, num_heads=3)
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.img_size, **args.model_kwargs).eval()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    arms: Dict[str, Callable[[], torch.Tensor]] = {
        "grad_rollout": lambda: explain(model, images, "grad_rollout"),
        "chefer": lambda: explain(model, images, "chefer"),
        "legrad (default: mean token, last two layers)": lambda: explain(model, images, "legrad"),
        "legrad (mean token, every layer)": lambda: explain(model, images, "legrad", legrad_first_layer=0),
        "legrad (head read-out, every layer)": lambda: explain(
            model, images, "legrad", legrad_readout="head", legrad_first_layer=0
        ),
    }
    times: Dict[str, List[float]] = {name: [] for name in arms}
    for round_index in range(args.rounds + 1):
        order = list(arms) if round_index % 2 == 0 else list(reversed(arms))
        for name in order:
            start = time.perf_counter()
            arms[name]()
            elapsed = time.perf_counter() - start
            if round_index > 0:
                times[name].append(elapsed)
        print(
            f"round {round_index}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in arms if times[n]),
            file=sys.stderr,
            flush=True,
        )
    base = times["grad_rollout"]
    lines = [
        f"`{args.model}`, {args.img_size} px, batch {args.batch_size}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds, torch {torch.__version__}, {platform.processor() or platform.machine()}",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| method | median s | × grad_rollout (median of per-round ratios) |",
        "|---|---|---|",
    ]
    verdict = True
    for name in arms:
        ratio = statistics.median(t / b for t, b in zip(times[name], base))
        lines.append(f"| `{name}` | {statistics.median(times[name]):.2f} | {ratio:.2f} |")
        if name.startswith("legrad"):
            verdict = verdict and ratio <= BAR
    lines += ["", f"bar: legrad ≤ {BAR}× grad_rollout: {'met' if verdict else 'NOT met'}"]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
