"""Throughput of ``lightning-rollout explain`` on a folder of images: batched against one image at a time.

The command is run in-process (``lightning_rollout.cli.main``) on a folder of 64 PNG files (demo scenes),
the whole command timed: reading and preprocessing the files, the model passes, rendering and writing one
overlay PNG per image and method, printing the predictions. Two models, random init:

- ``demo``: the demo's ViT (``configs/demo.yaml``: 48 px, 8-px patches, 3 blocks), as a Lightning checkpoint
  with ``--config``;
- ``vit_small``: timm ``vit_small_patch16_224`` at 224 px (``--model``), the size of a real user's model.

Per round each case runs with ``--batch-size 16`` and with ``--batch-size 1``, alternating which goes first
(A B, B A, ...); the claim is the median over rounds of the per-round ratio of images per second. One
warm-up round is not counted.

Also timed: ``python -m lightning_rollout [explain|replay] --help`` in a fresh process (wall and CPU time,
medians over the same rounds after one warm-up), bar 2 s of wall time on an idle machine: the help must
answer without loading torch or Lightning (the test suite checks that it imports neither). See
``benchmarks/README.md``.
"""

import argparse
import contextlib
import io
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

# See bench_engine.py: spinning OpenMP waits make a shared 2-core machine unusable for timing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import yaml
from _report import emit
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's package
from lightning_rollout.cli import main as cli_main
from lightning_rollout.demo import SyntheticScenes

DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")
BAR_HELP_SECONDS = 2.0
HELP_COMMANDS = ([], ["explain"], ["replay"])
QUICK_NOTE = "**`--quick`: a smoke run of the code path on tiny inputs; its numbers mean nothing.**"


def _make_inputs(folder: str, count: int) -> Tuple[str, str]:
    """``count`` demo scenes (48 px) as PNGs in ``folder/images``, and a random-init demo checkpoint."""
    from lightning_rollout.demo import TimmClassifier

    images = os.path.join(folder, "images")
    os.makedirs(images)
    scenes = SyntheticScenes(count, image_size=48, num_classes=4, split="test")
    for index in range(count):
        Image.fromarray(scenes.render(index)[0]).save(os.path.join(images, f"scene_{index:03d}.png"))
    with open(DEMO_CONFIG) as handle:
        model_args = yaml.safe_load(handle)["model"]["init_args"]
    torch.manual_seed(0)
    checkpoint = os.path.join(folder, "demo.pt")
    torch.save({"state_dict": TimmClassifier(**model_args).state_dict()}, checkpoint)
    return images, checkpoint


def _time(arguments: List[str]) -> float:
    """Seconds one ``lightning-rollout`` command takes (its printed output swallowed)."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert cli_main(arguments) == 0
    return time.perf_counter() - start


def _time_help(command: List[str]) -> Tuple[float, float]:
    """Wall and CPU seconds of ``python -m lightning_rollout <command> --help`` in a fresh process."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "lightning_rollout", *command, "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0 or "usage: lightning-rollout" not in result.stdout:
        raise RuntimeError(f"lightning-rollout {' '.join(command)} --help failed:\n{result.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def help_rows(rounds: int, warm_up: bool = True) -> List[str]:
    """One table row per ``--help``: median wall and CPU time over ``rounds`` after one warm-up call (none in a
    quick run, which times nothing)."""
    rows = []
    for command in HELP_COMMANDS:
        if warm_up:
            _time_help(command)  # the file system cache
        walls, cpus = zip(*(_time_help(command) for _ in range(rounds)))
        wall = statistics.median(walls)
        name = " ".join(["lightning-rollout", *command, "--help"])
        rows.append(
            f"| `{name}` | {wall:.2f} | {statistics.median(cpus):.2f} | ≤ {BAR_HELP_SECONDS:.0f} s: "
            f"{'met' if wall <= BAR_HELP_SECONDS else 'NOT met'} |"
        )
        print(f"{name}: {wall:.2f} s", file=sys.stderr)
    return rows


def run(rounds: int, methods: List[str], count: int, quick: bool = False) -> List[str]:
    with tempfile.TemporaryDirectory() as folder:
        images, checkpoint = _make_inputs(folder, count)
        large = (
            ["--model", "vit_tiny_patch16_224", "--image-size", "32", "--num-classes", "4"]
            if quick
            else ["--model", "vit_small_patch16_224"]
        )
        cases: Dict[str, List[str]] = {
            "demo (48 px, 3 blocks)": ["--checkpoint", checkpoint, "--config", DEMO_CONFIG, "--crop-pct", "1"],
            ("vit_tiny_patch16_224 (32 px)" if quick else "vit_small_patch16_224 (224 px)"): large,
        }
        rows = []
        for name, model_arguments in cases.items():
            ratios, rates = [], {16: [], 1: []}
            warm_ups = 0 if quick else 1  # a quick run times nothing: no warm-up round
            for index in range(rounds + warm_ups):
                order = (16, 1) if index % 2 == 0 else (1, 16)
                seconds = {}
                for batch_size in order:
                    out = os.path.join(folder, f"out_{batch_size}")
                    seconds[batch_size] = _time(
                        [
                            "explain",
                            images,
                            *model_arguments,
                            "--method",
                            *methods,
                            "--batch-size",
                            str(batch_size),
                            "--output",
                            out,
                        ]
                    )
                    print(f"{name} batch {batch_size}: {seconds[batch_size]:.2f} s", file=sys.stderr)
                if index < warm_ups:
                    continue
                for batch_size, value in seconds.items():
                    rates[batch_size].append(count / value)
                ratios.append(seconds[1] / seconds[16])
            rows.append(
                f"| {name} | {statistics.median(rates[16]):.1f} | {statistics.median(rates[1]):.1f} | "
                f"**{statistics.median(ratios):.2f}×** (min {min(ratios):.2f}, max {max(ratios):.2f}) |"
            )
    return [
        f"## `lightning-rollout explain` on a folder of {count} images, methods {', '.join(methods)}",
        "",
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}; {rounds} timed rounds after {'no' if quick else 'one'} warm-up, medians.",
        *(["", QUICK_NOTE] if quick else []),
        "",
        "| model | images/s, --batch-size 16 | images/s, --batch-size 1 | batched ÷ one at a time |",
        "|---|---|---|---|",
        *rows,
        "",
        f"`--help` in a fresh process (`{os.path.basename(sys.executable)} -m lightning_rollout`), medians over "
        f"{rounds} round(s) after {'no' if quick else 'one'} warm-up call; CPU = user + system time of the process:",
        "",
        "| command | wall s | CPU s | bar |",
        "|---|---|---|---|",
        *help_rows(rounds, warm_up=not quick),
    ]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (default: 2)")
    parser.add_argument("--images", type=int, default=64, help="images in the folder (default: 64)")
    parser.add_argument(
        "--method", nargs="+", default=["rollout", "gradcam"], help="methods (default: rollout gradcam)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): 4 images, 1 round, "
        "vit_tiny_patch16_224 at 32 px in place of vit_small_patch16_224",
    )
    parser.add_argument("--out", help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.images = 1, 4
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    emit(run(args.rounds, args.method, args.images, args.quick), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
