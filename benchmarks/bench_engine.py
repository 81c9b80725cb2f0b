"""Side-by-side cost of ``lightning_rollout.engine.api`` against a plain forward of the same batch.

Every performance claim of the engine is a ratio measured here, in one process, against a baseline run
right next to it, so that machine speed and background load cancel out:

1. time of ``explain(model, x, "rollout")`` / time of a plain fused-attention forward (``torch.no_grad()``);
2. the same for ``grad_rollout``, ``chefer`` and ``gradcam``;
3. extra peak memory of a pass over what storing every layer's attention maps (and, for gradient methods,
   their gradients) would take;
4. speed-up of the batched engine over the original recipe's one-image-at-a-time loop (written below).

Timed cases run interleaved in rounds (every case once per round, the order reversed every other round,
after one warm-up round), and each ratio is the median over rounds of the per-round ratio. See
``benchmarks/README.md`` for the commands and the meaning of every number.
"""

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Callable, Dict, Iterator, List, Optional, Tuple

# OpenMP threads that spin while they wait make a 2-core machine shared with another job (a training run,
# a test suite) 10x slower and the timings meaningless; passive waiting keeps them usable. Must be set
# before torch loads OpenMP; export OMP_WAIT_POLICY=ACTIVE to measure with OpenMP's default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch
from _report import emit
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout import explain
from lightning_rollout.core.hooks import fused_attention_disabled

GRADIENT_METHODS = ("grad_rollout", "chefer", "gradcam")
METHODS = ("rollout",) + GRADIENT_METHODS
ATTENTION_PATTERN = "*attn_drop"

BAR_ROLLOUT_TIME = 1.15
BAR_GRADIENT_TIME = 2.5
BAR_ROLLOUT_MEMORY = 0.15

MIB = 2.0**20
QUICK_NOTE = "**`--quick`: a smoke run of the code path on a tiny model; its numbers mean nothing.**"


# --------------------------------------------------------------------------------------------- setup


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random init)")
    parser.add_argument("--img-size", type=int, default=224, help="square input side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds (after one warm-up round)")
    parser.add_argument(
        "--loop-repeats",
        type=int,
        default=None,
        help="first rounds that also time the one-image-at-a-time loops (default: repeats // 2, at least 1)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--discard-ratio", type=float, default=0.9, help="explain's discard_ratio (its default)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): vit_tiny cut to 2 blocks, "
        "48 wide, 8-px patches on 32-px images, batch 4, 1 round",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also time rollout with discard_ratio=0 (splits the rollout overhead into its parts)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.model_kwargs = {}
    if args.quick:
        args.model, args.img_size, args.batch_size, args.repeats = "vit_tiny_patch16_224", 32, 4, 1
        args.model_kwargs = dict(patch_size=8, depth=2, embed_dim=48, num_heads=3)
    if args.loop_repeats is None:
        args.loop_repeats = max(1, args.repeats // 2)
    args.loop_repeats = min(args.loop_repeats, args.repeats)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.repeats < 1 or args.batch_size < 1:
        parser.error("--repeats and --batch-size must be >= 1")
    if not 0 <= args.discard_ratio < 1:
        parser.error("--discard-ratio must be in [0, 1)")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_forward(model: nn.Module, images: Tensor) -> Tensor:
    """The baseline: what a validation step runs, with whatever attention kernel the model is set to."""
    with torch.no_grad():
        return model(images)


def attention_modules(model: nn.Module) -> List[nn.Module]:
    modules = [m for name, m in model.named_modules() if fnmatchcase(name, ATTENTION_PATTERN)]
    if not modules:
        raise SystemExit(f"{type(model).__name__} has no module matching {ATTENTION_PATTERN!r}")
    return modules


# ------------------------------------------------------------- the original recipe, one image at a time


class _MapStore:
    """Forward hook keeping every layer's attention map (and, with ``keep_grads``, its gradient)."""

    def __init__(self, keep_grads: bool) -> None:
        self.keep_grads = keep_grads
        self.maps: List[Tensor] = []
        self.grads: List[Tensor] = []

    def __call__(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        if self.keep_grads:
            output.register_hook(self.grads.append)  # arrive last layer first
            self.maps.append(output.detach())
        else:
            self.maps.append(output.detach().clone())


@contextmanager
def hooked(modules: List[nn.Module], store: _MapStore) -> Iterator[_MapStore]:
    handles = [m.register_forward_hook(store) for m in modules]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _drop_smallest(fused: Tensor, ratio: float) -> Tensor:
    """Zeroes the ``int(N*N*ratio)`` smallest entries of one ``(N, N)`` matrix, never entry [0, 0]."""
    count = int(fused.numel() * ratio)
    if count == 0:
        return fused
    flat = fused.flatten().clone()
    ranking = flat.clone()
    ranking[0] = float("inf")
    flat[ranking.topk(count, largest=False).indices] = 0
    return flat.view_as(fused)


def _chain(fused_per_layer: List[Tensor], ratio: float) -> Tensor:
    """The plain rollout loop over one image's layers; returns the class-token row of ``R``."""
    n = fused_per_layer[0].shape[-1]
    eye = torch.eye(n, device=fused_per_layer[0].device)
    result = eye
    for fused in fused_per_layer:
        a = (_drop_smallest(fused, ratio) + eye) / 2
        a = a / a.sum(dim=-1, keepdim=True)
        result = a @ result
    return result[0]


def loop_rollout(model: nn.Module, images: Tensor, ratio: float) -> Tensor:
    """Rollout as the original recipe computes it: per image, store all L maps, then multiply."""
    rows = []
    modules = attention_modules(model)
    with fused_attention_disabled(model), torch.no_grad():
        for image in images:
            with hooked(modules, _MapStore(keep_grads=False)) as store:
                model(image[None])
            rows.append(_chain([m[0].mean(dim=0) for m in store.maps], ratio))
    return torch.stack(rows)


def loop_grad_rollout(model: nn.Module, images: Tensor, targets: Tensor, ratio: float) -> Tensor:
    """Gradient rollout as the original recipe computes it: per image, forward, ``backward()`` of the
    target logit, every layer's map and gradient stored, then the rollout loop."""
    rows = []
    modules = attention_modules(model)
    with fused_attention_disabled(model), torch.enable_grad():
        for image, target in zip(images, targets):
            with hooked(modules, _MapStore(keep_grads=True)) as store:
                model.zero_grad(set_to_none=True)
                logits = model(image[None])
                logits[0, target].backward()
            grads = store.grads[::-1]
            fused = [(a[0] * g[0]).mean(dim=0).clamp(min=0) for a, g in zip(store.maps, grads)]
            rows.append(_chain(fused, ratio))
    model.zero_grad(set_to_none=True)
    return torch.stack(rows)


# ------------------------------------------------------------------------------------- peak memory


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silences the C++ profiler's start/stop lines on file descriptor 2 (Python exceptions still raise)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak of the bytes allocated by ``fn`` on ``device`` and still alive, relative to its start.

    CUDA: the caching allocator's own peak counter. CPU: the profiler's allocation events (every CPU tensor
    allocation and free goes through them while ``profile_memory=True``); each event carries the running
    total of live profiled bytes, whose maximum is the peak.
    """
    gc.collect()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    peak = 0
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    seen = 0
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu":
            peak = max(peak, event.extra_fields.total_allocated)
            seen += 1
        stack.extend(event.children)
    if seen == 0:
        raise RuntimeError("the profiler recorded no CPU allocation events; cannot measure peak memory")
    return peak


# ------------------------------------------------------------------------------------------ timing


def run_rounds(
    cases: Dict[str, Callable[[], object]], repeats: int, device: torch.device, only_first: Dict[str, int]
) -> Dict[str, List[Optional[float]]]:
    """Times every case once per round, in a fixed order that is reversed every other round.

    Cases named in ``only_first`` run only in that many first rounds (``None`` afterwards).
    """
    names = list(cases)
    times: Dict[str, List[Optional[float]]] = {name: [] for name in names}
    for round_index in range(repeats):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            if round_index >= only_first.get(name, repeats):
                continue
            gc.collect()
            synchronize(device)
            start = time.perf_counter()
            cases[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
        for name in names:
            if len(times[name]) < round_index + 1:
                times[name].append(None)
        print(
            f"  round {round_index + 1}/{repeats}: "
            + ", ".join(f"{n} {t * 1e3:.0f} ms" for n in names if (t := times[n][round_index]) is not None),
            file=sys.stderr,
            flush=True,
        )
    return times


def median_ratio(numerator: List[Optional[float]], denominator: List[Optional[float]]) -> float:
    ratios = [a / b for a, b in zip(numerator, denominator) if a is not None and b is not None]
    return statistics.median(ratios)


def median_ms(values: List[Optional[float]]) -> float:
    return statistics.median([v for v in values if v is not None]) * 1e3


# ------------------------------------------------------------------------------------------ report


def verdict(value: float, bar: Optional[float]) -> str:
    """Every bar here is an upper bound; rows without one are for information."""
    if bar is None:
        return "info"
    return "yes" if value <= bar else "**NO**"


def main(argv: Optional[List[str]] = None) -> int:
    import timm  # here, not at the top: bench_families imports this module's helpers for other model families

    args = parse_args(argv)
    device = torch.device(args.device)
    started = time.perf_counter()

    torch.manual_seed(0)
    model = timm.create_model(args.model, pretrained=False, img_size=args.img_size, **args.model_kwargs)
    model = model.to(device).eval()
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    with torch.no_grad():
        targets = model(images).argmax(dim=-1)
    modules = attention_modules(model)
    fused_flags = {m.fused_attn for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)}
    with hooked(modules, _MapStore(keep_grads=False)) as store, fused_attention_disabled(model):
        plain_forward(model, images[:1])
    layers, (_, heads, tokens, _) = len(store.maps), store.maps[0].shape
    map_bytes = layers * args.batch_size * heads * tokens * tokens * 4
    ratio = args.discard_ratio

    def unfused_forward() -> None:
        with fused_attention_disabled(model):
            plain_forward(model, images)

    cases: Dict[str, Callable[[], object]] = {
        "fused forward": lambda: plain_forward(model, images),
        "unfused forward": unfused_forward,
        "rollout": lambda: explain(model, images, "rollout", discard_ratio=ratio),
    }
    if args.diagnose:
        cases["rollout, discard 0"] = lambda: explain(model, images, "rollout", discard_ratio=0.0)
    for method in GRADIENT_METHODS:
        cases[method] = lambda method=method: explain(model, images, method, target=targets, discard_ratio=ratio)
    cases["loop rollout"] = lambda: loop_rollout(model, images, ratio)
    cases["loop grad_rollout"] = lambda: loop_grad_rollout(model, images, targets, ratio)
    loops = {"loop rollout": args.loop_repeats, "loop grad_rollout": args.loop_repeats}

    print(
        f"{args.model} {args.img_size}px, batch {args.batch_size}, {device.type}, {torch.get_num_threads()} threads: "
        f"L={layers}, heads={heads}, N={tokens}; fused attention flags {sorted(fused_flags)}",
        file=sys.stderr,
        flush=True,
    )
    # Warm-up round, which also checks that the loops and the engine compute the same maps; the loops are
    # warmed up (and compared) on the first two images only, as their cost is linear in the images anyway.
    print("  warm-up", file=sys.stderr, flush=True)
    warm = {name: case() for name, case in cases.items() if name not in loops}
    few = min(2, args.batch_size)
    warm["loop rollout"] = loop_rollout(model, images[:few], ratio)
    warm["loop grad_rollout"] = loop_grad_rollout(model, images[:few], targets[:few], ratio)
    grid = warm["rollout"].shape[-2:]
    agreement = {
        method: (warm[f"loop {method}"][:, -grid.numel() :].reshape(-1, *grid) - warm[method][:few]).abs().max().item()
        for method in ("rollout", "grad_rollout")
    }
    del warm
    print(f"  warm-up done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    times = run_rounds(cases, args.repeats, device, loops)
    print(f"  timing done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    memory: Dict[str, int] = {}
    if not args.no_memory:
        print("  peak memory", file=sys.stderr, flush=True)

        def forward_backward() -> None:
            with fused_attention_disabled(model), torch.enable_grad():
                x = images.detach().clone().requires_grad_(True)
                score = model(x).gather(1, targets[:, None]).sum()
                torch.autograd.grad(score, x)

        memory["fused forward"] = peak_bytes(cases["fused forward"], device)
        memory["unfused forward"] = peak_bytes(cases["unfused forward"], device)
        memory["unfused forward+backward"] = peak_bytes(forward_backward, device)
        for method in METHODS:
            memory[method] = peak_bytes(cases[method], device)
        print(f"  memory done at {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)

    fused = times["fused forward"]
    rows: List[Tuple[str, str, str, str, str]] = []

    def add(measure: str, value: float, fmt: str, bar: Optional[float], bar_text: str, detail: str) -> None:
        rows.append((measure, fmt.format(value), bar_text, verdict(value, bar), detail))

    value = median_ratio(times["rollout"], fused)
    add(
        "`rollout` time / fused forward",
        value,
        "{:.2f}×",
        BAR_ROLLOUT_TIME,
        f"≤ {BAR_ROLLOUT_TIME}×",
        f"{median_ms(times['rollout']):.0f} vs {median_ms(fused):.0f} ms",
    )
    for method in GRADIENT_METHODS:
        value = median_ratio(times[method], fused)
        add(
            f"`{method}` time / fused forward",
            value,
            "{:.2f}×",
            BAR_GRADIENT_TIME,
            f"≤ {BAR_GRADIENT_TIME}×",
            f"{median_ms(times[method]):.0f} vs {median_ms(fused):.0f} ms",
        )
    value = median_ratio(times["unfused forward"], fused)
    add(
        "unfused forward / fused forward (floor of any map capture)",
        value,
        "{:.2f}×",
        None,
        "—",
        f"{median_ms(times['unfused forward']):.0f} vs {median_ms(fused):.0f} ms",
    )
    value = median_ratio(times["rollout"], times["unfused forward"])
    add(
        "`rollout` time / unfused forward",
        value,
        "{:.2f}×",
        None,
        "—",
        f"{median_ms(times['rollout']):.0f} vs {median_ms(times['unfused forward']):.0f} ms",
    )
    if args.diagnose:
        value = median_ratio(times["rollout, discard 0"], fused)
        add(
            "`rollout` (discard_ratio=0) time / fused forward",
            value,
            "{:.2f}×",
            None,
            "—",
            f"{median_ms(times['rollout, discard 0']):.0f} vs {median_ms(fused):.0f} ms",
        )

    if memory:
        detail = f"all maps: {map_bytes / MIB:.1f} MiB"
        for reference in ("unfused forward", "fused forward"):
            extra = memory["rollout"] - memory[reference]
            bar = BAR_ROLLOUT_MEMORY if reference == "unfused forward" else None
            add(
                f"`rollout` extra peak memory vs {reference} / all L maps",
                extra / map_bytes,
                "{:.1%}",
                bar,
                f"≤ {BAR_ROLLOUT_MEMORY:.0%}" if bar else "—",
                f"{extra / MIB:+.1f} MiB; {detail}",
            )
        both = 2 * map_bytes
        for method in GRADIENT_METHODS:
            for reference in ("unfused forward", "unfused forward+backward"):
                extra = memory[method] - memory[reference]
                add(
                    f"`{method}` extra peak memory vs {reference} / all maps + grads",
                    extra / both,
                    "{:.1%}",
                    None,
                    "—",
                    f"{extra / MIB:+.1f} MiB; maps + grads: {both / MIB:.1f} MiB",
                )

    for batched, loop in (("rollout", "loop rollout"), ("grad_rollout", "loop grad_rollout")):
        value = median_ratio(times[loop], times[batched])
        add(
            f"speed-up of batched `{batched}` over the per-image loop",
            value,
            "{:.2f}×",
            None,
            "—",
            f"{median_ms(times[loop]):.0f} vs {median_ms(times[batched]):.0f} ms",
        )

    lines = [
        "# bench_engine",
        "",
        f"`{args.model}` (random init{', ' + str(args.model_kwargs) if args.model_kwargs else ''}), "
        f"{args.img_size} px, batch {args.batch_size}, L={layers}, heads={heads}, N={tokens}, "
        f"device {device.type}, {torch.get_num_threads()} torch threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}), discard_ratio {ratio}; "
        f"{args.repeats} timed rounds after a warm-up ({args.loop_repeats} with the per-image loops); "
        f"torch {torch.__version__}, timm {timm.__version__}, Python {platform.python_version()}.",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| measure | ratio | bar | pass | detail |",
        "|---|---|---|---|---|",
        *[f"| {' | '.join(row)} |" for row in rows],
        "",
        "| case | median ms | min ms | max ms | rounds |",
        "|---|---|---|---|---|",
    ]
    for name, values in times.items():
        done = [v * 1e3 for v in values if v is not None]
        lines.append(f"| {name} | {statistics.median(done):.0f} | {min(done):.0f} | {max(done):.0f} | {len(done)} |")
    if memory:
        lines += ["", "| pass | peak MiB above start |", "|---|---|"]
        lines += [f"| {name} | {value / MIB:.1f} |" for name, value in memory.items()]
    lines += [
        "",
        f"Per-image loop vs engine on the first {few} images, max |difference| of the maps: "
        f"rollout {agreement['rollout']:.2e}, grad_rollout {agreement['grad_rollout']:.2e}. "
        f"Total benchmark time {time.perf_counter() - started:.0f} s.",
    ]
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
