"""Throughput of ``lightning-rollout explain`` on a folder of images: batched against one image at a time.

The command is run in-process (``lightning_rollout.cli.main``) on a folder of 64 PNG files (demo scenes),
the whole command timed: reading and preprocessing the files, the model passes, rendering and writing one
overlay PNG per image and method, printing the predictions. Two models, random init:

- ``demo``: the demo's ViT (``configs/demo.yaml``: 48 px, 8-px patches, 3 blocks), as a Lightning checkpoint
  with ``--config``;
- ``vit_small``: timm ``vit_small_patch16_224`` at 224 px (``--model``), the size of a real user's model.

Per round each case runs with ``--batch-size 16`` and with ``--batch-size 1``, alternating which goes first
(A B, B A, ...); the claim is the median over rounds of the per-round ratio of images per second. One
warm-up round is not counted. See ``benchmarks/README.md``.
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

# See bench_engine.py: spinning OpenMP waits make a shared 2-core machine unusable for timing.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from _report import emit  # noqa: E402
from lightning_rollout.cli import main  # noqa: E402
from lightning_rollout.demo import SyntheticScenes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_CONFIG = os.path.join(ROOT, "configs", "demo.yaml")


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
        assert main(arguments) == 0
    return time.perf_counter() - start


def run(rounds: int, methods: List[str], count: int) -> List[str]:
    with tempfile.TemporaryDirectory() as folder:
        images, checkpoint = _make_inputs(folder, count)
        cases: Dict[str, List[str]] = {
            "demo (48 px, 3 blocks)": ["--checkpoint", checkpoint, "--config", DEMO_CONFIG, "--crop-pct", "1"],
            "vit_small_patch16_224 (224 px)": ["--model", "vit_small_patch16_224"],
        }
        rows = []
        for name, model_arguments in cases.items():
            ratios, rates = [], {16: [], 1: []}
            for index in range(rounds + 1):
                order = (16, 1) if index % 2 == 0 else (1, 16)
                seconds = {}
                for batch_size in order:
                    out = os.path.join(folder, f"out_{batch_size}")
                    seconds[batch_size] = _time(["explain", images, *model_arguments, "--method", *methods,
                                                 "--batch-size", str(batch_size), "--output", out])
                    print(f"{name} batch {batch_size}: {seconds[batch_size]:.2f} s", file=sys.stderr)
                if index == 0:
                    continue  # warm-up
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
        f"{torch.__version__}; {rounds} timed rounds after one warm-up, medians.",
        "",
        "| model | images/s, --batch-size 16 | images/s, --batch-size 1 | batched ÷ one at a time |",
        "|---|---|---|---|",
        *rows,
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (default: 2)")
    parser.add_argument("--images", type=int, default=64, help="images in the folder (default: 64)")
    parser.add_argument(
        "--method", nargs="+", default=["rollout", "gradcam"], help="methods (default: rollout gradcam)"
    )
    parser.add_argument("--out", help="also write the Markdown report to this file")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    emit(run(arguments.rounds, arguments.method, arguments.images), arguments.out)
