"""The engine's cost on each model family: every method against a plain forward of the same model.

    python benchmarks/bench_families.py                       # timm, HF ViT, torchvision, ~10 min on 2 CPU cores
    python benchmarks/bench_families.py --families hf --quick

Each family is built ViT-B/16-shaped (or ViT-S/16 for timm, the engine table's model) with random
weights, 224 px, batch 16; the baseline is ``model(x)`` under ``torch.no_grad()`` in the model's default
attention setting (timm's fused kernel, Hugging Face's SDPA, torchvision's ``nn.MultiheadAttention``
fast path). Cases run interleaved in rounds as in ``bench_engine.py``; each ratio is the median over
rounds of the per-round ratio. The `forward+backward floor` column is the floor of every gradient method:
one forward with autograd in the default setting and the backward of the target score to the input, no
hooks, no maps; the next column is what ``grad_rollout`` and ``chefer`` cost over that floor (median over
rounds of the per-round ratio), i.e. the engine's own share: eager attention, hooks and the per-layer maps.
"""

import argparse
import os
import subprocess
import sys
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _report import emit  # noqa: E402
from bench_engine import BAR_GRADIENT_TIME, BAR_ROLLOUT_TIME, median_ms, median_ratio, run_rounds  # noqa: E402
from lightning_rollout import explain  # noqa: E402
from lightning_rollout.checks import logits_of  # noqa: E402
from lightning_rollout.methods import METHODS  # noqa: E402

BAR_TIMM_GRADIENT_TIME = 2.0


def build_timm(size: int, quick: bool) -> nn.Module:
    import timm

    kwargs = dict(depth=2) if quick else {}
    return timm.create_model("vit_small_patch16_224", num_classes=10, img_size=size, **kwargs)


def build_hf(size: int, quick: bool) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=size, patch_size=16, num_labels=10, num_hidden_layers=2 if quick else 12)
    return ViTForImageClassification(config)


def build_torchvision(size: int, quick: bool) -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(image_size=size, patch_size=16, num_layers=2 if quick else 12, num_heads=12,
                             hidden_dim=768, mlp_dim=3072, num_classes=10)


FAMILIES: Dict[str, Callable[[int, bool], nn.Module]] = {
    "timm": build_timm,
    "hf": build_hf,
    "torchvision": build_torchvision,
}
NAMES = {
    "timm": "timm `vit_small_patch16_224`",
    "hf": "HF `ViTForImageClassification` (ViT-B/16 config)",
    "torchvision": "torchvision `VisionTransformer` (`vit_b_16` shape)",
}


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 blocks, 64 px, batch 4, 2 rounds")
    parser.add_argument("--out")
    parser.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.img_size, args.batch_size, args.repeats = 64, 4, 2
    device = torch.device("cpu")
    lines = [
        f"{args.img_size} px, batch {args.batch_size}, CPU, {torch.get_num_threads()} torch threads, "
        f"{args.repeats} timed rounds after a warm-up; baseline: a `torch.no_grad()` forward in the model's "
        "default attention setting.",
        "",
        "| model | `rollout` | `grad_rollout` | `chefer` | `gradcam` | forward+backward floor "
        "| `grad_rollout` / `chefer` over the floor | forward ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    if len(args.families) > 1:
        # One process per family, so that one model's allocations do not shape the next one's timings.
        for family in args.families:
            command = [sys.executable, os.path.abspath(__file__), "--families", family, "--row-only",
                       "--img-size", str(args.img_size), "--batch-size", str(args.batch_size),
                       "--repeats", str(args.repeats)] + (["--quick"] if args.quick else [])
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            print(result.stderr, end="", file=sys.stderr, flush=True)
            lines.append(result.stdout.strip().splitlines()[-1])
        emit(lines, args.out)
        return 0
    for family in args.families:
        torch.manual_seed(0)
        model = FAMILIES[family](args.img_size, args.quick).eval()
        images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(1))
        targets = torch.arange(args.batch_size) % 10

        def forward() -> torch.Tensor:
            with torch.no_grad():
                return logits_of(model(images))

        def forward_backward() -> torch.Tensor:
            # The floor of any gradient method: one forward with autograd and the backward to the input.
            with torch.enable_grad():
                inputs = images.clone().requires_grad_(True)
                score = logits_of(model(inputs)).gather(1, targets[:, None]).sum()
                return torch.autograd.grad(score, inputs)[0]

        cases = {"forward": forward, "forward+backward": forward_backward}
        for method in METHODS:
            cases[method] = lambda method=method: explain(model, images, method, target=targets)
        print(f"{family}: warm-up", file=sys.stderr, flush=True)
        for case in cases.values():
            case()
        times = run_rounds(cases, args.repeats, device, {})
        cells = []
        for method in METHODS:
            ratio = median_ratio(times[method], times["forward"])
            bar = BAR_ROLLOUT_TIME if method == "rollout" else BAR_GRADIENT_TIME
            if family == "timm" and method in ("grad_rollout", "chefer"):
                bar = BAR_TIMM_GRADIENT_TIME
            cells.append(f"{ratio:.2f}× ({'pass' if ratio <= bar else 'FAIL'} ≤ {bar}×)")
        floor = median_ratio(times["forward+backward"], times["forward"])
        over = " / ".join(
            f"{median_ratio(times[method], times['forward+backward']):.2f}×" for method in ("grad_rollout", "chefer")
        )
        forward_ms = median_ms(times["forward"])
        lines.append(f"| {NAMES[family]} | " + " | ".join(cells) + f" | {floor:.2f}× | {over} | {forward_ms:.0f} |")
    if args.row_only:
        print(lines[-1])
        return 0
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
