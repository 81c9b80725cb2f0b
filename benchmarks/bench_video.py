"""Peak memory and time of every method on a VideoMAE-B-shaped model, against the forward(+backward) floor.

Default: Hugging Face ``VideoMAEForVideoClassification`` with VideoMAE-B's shape (hidden 768, 12 layers,
12 heads, MLP 3072, patch 16, tubelets of 2 frames; random init), clips of 16 frames of 224², batch 2, CPU:
1568 tokens, so one layer's per-head attention of one clip is 12 × 1568² × 4 B = 113 MiB, and all 12
layers' 1.3 GiB per clip (2.6 GiB for the batch).

Floors, measured beside the methods in the same process:

- ``forward (sdpa)``: `model(x)` under `torch.no_grad()` with the model's default attention (SDPA), what a
  validation step costs; the floor of the forward-only methods (rollout, attention);
- ``forward+backward (sdpa)``: the same forward with autograd and one `torch.autograd.grad` of the target
  logits to the input, the floor of the gradient methods with the default attention;
- ``forward+backward (eager)``: the same with transformers' eager attention, which forms the N×N attention
  (any method reading the attention pays it: SDPA never forms it).

Every method runs through `explain` with its defaults: clips one at a time (`chunk_size=None` for video);
``grad_rollout, whole batch`` runs `chunk_size=2` to show what chunking saves. Times: every case once per
round, the order reversed every other round, after the memory passes (which warm up); each ratio is the
median over rounds of the per-round ratio. Two clocks: wall time, and the process's CPU time (user + system,
all threads), which a machine shared with other jobs distorts far less than the wall clock.
Peak memory: torch's profiler allocation events (as `bench_engine.py`), the largest running total of live
CPU bytes relative to the start of the call. Run from the repository root::

    .venv/bin/python benchmarks/bench_video.py            # VideoMAE-B shape: ~20 min of timing rounds, ~1 h with
                                                          # the memory passes, on 2 busy CPU cores
    .venv/bin/python benchmarks/bench_video.py --quick    # a small VideoMAE, < 1 min
"""

import argparse
import gc
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch
import transformers
from _report import emit
from bench_engine import peak_bytes

from lightning_rollout import explain, explain_many

METHODS = ("rollout", "grad_rollout", "chefer", "gradcam", "legrad", "attention")
GRADIENT = {"grad_rollout", "chefer", "gradcam", "legrad"}
MIB = 2.0**20
VIDEOMAE_B = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    image_size=224,
    patch_size=16,
    num_frames=16,
    tubelet_size=2,
)
QUICK = dict(
    hidden_size=192,
    num_hidden_layers=4,
    num_attention_heads=3,
    intermediate_size=768,
    image_size=64,
    patch_size=16,
    num_frames=8,
    tubelet_size=2,
)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed rounds")
    parser.add_argument("--quick", action="store_true", help="a small VideoMAE (4 layers, 8 frames of 64 px)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory passes")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    return parser.parse_args(argv)


def build(config: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    model = transformers.VideoMAEForVideoClassification(transformers.VideoMAEConfig(num_labels=10, **config))
    return model.eval()


def cases_for(model: torch.nn.Module, clips: torch.Tensor, target: torch.Tensor) -> Dict[str, Callable[[], object]]:
    def forward_sdpa() -> None:
        with torch.no_grad():
            model(clips)

    def forward_backward(implementation: str) -> Callable[[], None]:
        def run() -> None:
            model.set_attn_implementation(implementation)
            try:
                with torch.enable_grad():
                    inputs = clips.clone().requires_grad_(True)
                    logits = model(inputs).logits
                    torch.autograd.grad(logits.gather(1, target[:, None]).sum(), inputs)
            finally:
                model.set_attn_implementation("sdpa")

        return run

    cases: Dict[str, Callable[[], object]] = {
        "forward (sdpa)": forward_sdpa,
        "forward+backward (sdpa)": forward_backward("sdpa"),
        "forward+backward (eager)": forward_backward("eager"),
    }
    for method in METHODS:
        cases[method] = lambda m=method: explain(model, clips, m, target=target)
    cases["explain_many (all six, one pass per clip)"] = lambda: explain_many(
        model, clips, list(METHODS), target=target
    )
    cases["grad_rollout, whole batch (chunk_size=B)"] = lambda: explain(
        model, clips, "grad_rollout", target=target, chunk_size=clips.shape[0]
    )
    return cases


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_rounds(cases: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[tuple]]:
    """``{case: [(wall s, cpu s) per round]}``; the order of the cases is reversed every other round."""
    names = list(cases)
    times: Dict[str, List[tuple]] = {name: [] for name in names}
    for round_index in range(repeats):
        for name in names if round_index % 2 == 0 else names[::-1]:
            gc.collect()
            wall, cpu = time.perf_counter(), cpu_seconds()
            cases[name]()
            times[name].append((time.perf_counter() - wall, cpu_seconds() - cpu))
        print(
            f"  round {round_index + 1}/{repeats}: "
            + ", ".join(f"{n} {times[n][-1][0]:.1f} s wall / {times[n][-1][1]:.1f} s cpu" for n in names),
            file=sys.stderr,
            flush=True,
        )
    return times


def median_ratio(values: List[tuple], floor: List[tuple], clock: int) -> float:
    return statistics.median(a[clock] / b[clock] for a, b in zip(values, floor))


def floor_of(name: str) -> str:
    if name.startswith("forward"):
        return ""
    if name.startswith("explain_many") or any(name.startswith(m) for m in GRADIENT):
        return "forward+backward (sdpa)"
    return "forward (sdpa)"


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    config = QUICK if args.quick else VIDEOMAE_B
    model = build(config)
    frames, size = config["num_frames"], config["image_size"]
    clips = torch.randn(args.batch_size, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    target = torch.arange(args.batch_size) % 10
    tokens = (frames // config["tubelet_size"]) * (size // config["patch_size"]) ** 2
    all_maps = config["num_hidden_layers"] * args.batch_size * config["num_attention_heads"] * tokens**2 * 4
    cases = cases_for(model, clips, target)
    started = time.time()
    peaks: Dict[str, float] = {}
    if not args.no_memory:
        for name, case in cases.items():
            print(f"  memory: {name}", file=sys.stderr, flush=True)
            peaks[name] = peak_bytes(case, torch.device("cpu")) / MIB
    times = run_rounds(cases, args.repeats)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        f"# bench_video ({'quick' if args.quick else 'VideoMAE-B shape'})",
        "",
        *(
            ["**`--quick`: a smoke run of the code path on tiny inputs; its numbers mean nothing.**", ""]
            if args.quick
            else []
        ),
        f"VideoMAE {config}, random init; clips {tuple(clips.shape)}, {tokens} tokens; all layers' per-head N×N "
        f"for the batch: {all_maps / MIB:.0f} MiB. torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, commit {commit}, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| case | wall s (median) | × its floor | CPU s (median) | × its floor | peak memory (MiB) | × its floor "
        "| ÷ all layers' N×N |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in cases:
        floor = floor_of(name)
        wall = statistics.median(t[0] for t in times[name])
        cpu = statistics.median(t[1] for t in times[name])
        wall_ratio = f"{median_ratio(times[name], times[floor], 0):.2f}" if floor else "floor"
        cpu_ratio = f"{median_ratio(times[name], times[floor], 1):.2f}" if floor else "floor"
        if peaks:
            memory_ratio = f"{peaks[name] / peaks[floor]:.2f}" if floor else "floor"
            memory = f"{peaks[name]:.0f} | {memory_ratio} | {peaks[name] * MIB / all_maps:.2f}"
        else:
            memory = "– | – | –"
        lines.append(f"| {name} | {wall:.2f} | {wall_ratio} | {cpu:.2f} | {cpu_ratio} | {memory} |")
    lines += [
        "",
        f"Floors: gradient methods and explain_many against forward+backward (sdpa), the others against "
        f"forward (sdpa). Load average at the end {', '.join(f'{v:.1f}' for v in os.getloadavg())}. Total run "
        f"time {time.time() - started:.0f} s.",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
