"""The engine's cost on each model family: every method against a plain forward of the same model.

    python benchmarks/bench_families.py                       # timm, HF ViT, torchvision, ~10 min on 2 idle CPU cores
    python benchmarks/bench_families.py --families hf --quick
    python benchmarks/bench_families.py --methods grad_rollout chefer --repeats 5   # issue 16's floor bar only

Each family is built ViT-B/16-shaped (or ViT-S/16 for timm, the engine table's model) with random
weights, 224 px, batch 16; the baseline is ``model(x)`` under ``torch.no_grad()`` in the model's default
attention setting (timm's fused kernel, Hugging Face's SDPA, torchvision's ``nn.MultiheadAttention``
fast path). Cases run interleaved in rounds as in ``bench_engine.py``; each ratio is the median over
rounds of the per-round ratio. The `forward+backward floor` column is the floor of every gradient method:
one forward with autograd in the default setting and the backward of the target score to the input, no
hooks, no maps. The next columns are what ``grad_rollout`` and ``chefer`` cost over that floor (median
over rounds of the per-round ratio, with the smallest and largest round in brackets), i.e. the engine's
own share: eager attention, hooks and the per-layer maps; bar ≤ 1.10× (issue 16). They are given in wall
time and in the process's CPU time (user + system, all threads): on a machine where other processes
compete for the cores, wall time also counts the waits for a core, CPU time only the work done. The
load average (1 min) before and after each family is printed below the table.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from _report import emit
from bench_engine import BAR_ROLLOUT_TIME, median_ms, median_ratio, run_rounds
from torch import nn

from lightning_rollout import explain
from lightning_rollout.methods import METHODS

BAR_OVER_FLOOR = 1.10
FLOOR_METHODS = ("grad_rollout", "chefer")
# --quick: every family cut to 2 blocks, 48 wide with 3 heads (the code path in seconds, not a measurement).
QUICK = dict(layers=2, width=48, heads=3, mlp=96)
QUICK_NOTE = "**`--quick`: a smoke run of the code path on tiny models; its numbers mean nothing.**"


def build_timm(size: int, quick: bool) -> nn.Module:
    import timm

    kwargs = dict(depth=QUICK["layers"], embed_dim=QUICK["width"], num_heads=QUICK["heads"]) if quick else {}
    return timm.create_model("vit_small_patch16_224", num_classes=10, img_size=size, **kwargs)


def build_hf(size: int, quick: bool) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    shape = (
        dict(
            num_hidden_layers=QUICK["layers"],
            hidden_size=QUICK["width"],
            num_attention_heads=QUICK["heads"],
            intermediate_size=QUICK["mlp"],
        )
        if quick
        else {}
    )
    config = ViTConfig(image_size=size, patch_size=16, num_labels=10, **shape)
    return ViTForImageClassification(config)


def build_torchvision(size: int, quick: bool) -> nn.Module:
    from torchvision.models import VisionTransformer

    shape = dict(num_layers=QUICK["layers"], num_heads=QUICK["heads"], hidden_dim=QUICK["width"], mlp_dim=QUICK["mlp"])
    if not quick:
        shape = dict(num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)
    return VisionTransformer(image_size=size, patch_size=16, num_classes=10, **shape)


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


def logits_of(output: object) -> torch.Tensor:
    """The logits of a model's output: the tensor itself (timm, torchvision) or its ``.logits`` (Hugging Face)."""
    return output if isinstance(output, torch.Tensor) else output.logits


def with_cpu_time(case: Callable[[], object], store: List[float]) -> Callable[[], object]:
    """``case`` that also appends the process CPU time it took (user + system, all threads) to ``store``."""

    def timed() -> object:
        start = time.process_time()
        result = case()
        store.append(time.process_time() - start)
        return result

    return timed


def over(numerator: List[float], denominator: List[float]) -> str:
    """Median per-round ratio, the smallest and largest round in brackets, and the verdict against the bar."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    value = statistics.median(ratios)
    verdict = "pass" if value <= BAR_OVER_FLOOR else "FAIL"
    return f"{value:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) {verdict}"


def family_rows(family: str, args: argparse.Namespace) -> List[str]:
    """The table row of one family, then a line with the load average around its measurement."""
    load_before = os.getloadavg()[0]
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
    for method in args.methods:
        cases[method] = lambda method=method: explain(model, images, method, target=targets)
    cpu: Dict[str, List[float]] = {name: [] for name in cases}
    cases = {name: with_cpu_time(case, cpu[name]) for name, case in cases.items()}
    print(f"{family}: warm-up", file=sys.stderr, flush=True)
    for case in cases.values():
        case()
    for store in cpu.values():
        store.clear()
    times = run_rounds(cases, args.repeats, torch.device("cpu"), {})

    forward_cells = []
    for method in METHODS:
        if method not in cases:
            forward_cells.append("—")
            continue
        ratio = median_ratio(times[method], times["forward"])
        forward_cells.append(
            f"{ratio:.2f}× ({'pass' if ratio <= BAR_ROLLOUT_TIME else 'FAIL'} ≤ {BAR_ROLLOUT_TIME}×)"
            if method == "rollout"
            else f"{ratio:.2f}×"
        )
    floor = median_ratio(times["forward+backward"], times["forward"])
    floor_cells = [
        over(clock[method], clock["forward+backward"]) if method in cases else "—"
        for clock in (times, cpu)
        for method in FLOOR_METHODS
    ]
    row = (
        f"| {NAMES[family]} | "
        + " | ".join(forward_cells)
        + f" | {floor:.2f}× | "
        + " | ".join(floor_cells)
        + f" | {median_ms(times['forward']):.0f} |"
    )
    load = f"{NAMES[family]}: load average (1 min) {load_before:.1f} before, {os.getloadavg()[0]:.1f} after."
    return [row, load]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): every family cut to 2 blocks, "
        "48 wide, 32 px, batch 2, 1 round",
    )
    parser.add_argument("--out")
    parser.add_argument("--row-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.img_size, args.batch_size, args.repeats = 32, 2, 1
    if args.row_only:
        print("\n".join(family_rows(args.families[0], args)))
        return 0
    lines = [
        f"{args.img_size} px, batch {args.batch_size}, CPU ({os.cpu_count()} cores), {torch.get_num_threads()} torch "
        f"threads, {args.repeats} timed rounds after a warm-up; baseline: a `torch.no_grad()` forward in the model's "
        "default attention setting. Over the floor: median (smallest–largest round), bar ≤ "
        f"{BAR_OVER_FLOOR:.2f}×.",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| model | "
        + " | ".join(f"`{method}`" for method in METHODS)
        + " | forward+backward floor | "
        + " | ".join(f"`{method}` over the floor{clock}" for clock in ("", ", CPU time") for method in FLOOR_METHODS)
        + " | forward ms |",
        "|" + "---|" * (len(METHODS) + 2 * len(FLOOR_METHODS) + 3),
    ]
    loads = []
    # One process per family, so that one model's allocations do not shape the next one's timings (a quick
    # run times nothing: it runs the families in this process).
    for family in args.families:
        if args.quick:
            row, load = family_rows(family, args)
            lines.append(row)
            loads.append(load)
            continue
        command = [
            sys.executable,
            os.path.abspath(__file__),
            "--families",
            family,
            "--row-only",
            "--img-size",
            str(args.img_size),
            "--batch-size",
            str(args.batch_size),
            "--repeats",
            str(args.repeats),
            "--methods",
            *args.methods,
        ] + (["--quick"] if args.quick else [])
        result = subprocess.run(command, check=True, capture_output=True, text=True)
        print(result.stderr, end="", file=sys.stderr, flush=True)
        row, load = result.stdout.strip().splitlines()[-2:]
        lines.append(row)
        loads.append(load)
    emit(lines + [""] + loads, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
