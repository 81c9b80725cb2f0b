"""One side pass for every method (``explain_many``) against one pass per method, measured side by side.

Two claims, each a ratio of arms timed in the same process, interleaved (the order reversed every other
round, one warm-up round not counted), as the median over rounds of the per-round ratio:

1. engine: ``explain_many(model, x, [rollout, grad_rollout, chefer, gradcam])`` ÷ ``explain(model, x,
   "grad_rollout")`` alone ≤ 1.2×; the per-method loop (four ``explain`` calls) is timed beside them;
2. callback: its side pass over the fixed batch (``monitor.side_pass.explain_samples``: four methods,
   deletion/insertion AUCs and SaCo off) ÷ the same running the per-method design used before ``explain_many`` (a
   no-grad forward for the probabilities, then one ``explain`` per method) ≤ 0.5×; and the same ratio for
   the whole logging hook (``AttentionRolloutCallback.log_maps``: side pass, then pictures and scalars into a
   TensorBoard logger), whose rendering is the same in both arms.

Setup (defaults): timm ``vit_small_patch16_224``, random init, 224 px, batch 16, CPU. See
``benchmarks/README.md``.
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
import lightning_rollout.monitor.side_pass as side_pass
from lightning_rollout import AttentionRolloutCallback, explain, explain_many
from lightning_rollout.callbacks.loggers import runtime_of
from lightning_rollout.engine.api import PassResult, explain_with

ONE_PASS = explain_with
"""The side pass of one call for every method (what the callback runs)."""

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
BAR_ENGINE = 1.2
BAR_CALLBACK = 0.5
QUICK_NOTE = "**`--quick`: a smoke run of the code path on a tiny model; its numbers mean nothing.**"


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vit_small_patch16_224", help="timm model name (random init)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=4, help="timed rounds (after one warm-up round)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run of the same code path in seconds (the numbers mean nothing): vit_tiny cut to 2 blocks, "
        "48 wide, 8-px patches on 32 px, batch 4, 1 round",
    )
    parser.add_argument("--skip-callback", action="store_true", help="only the engine arms")
    parser.add_argument("--out", default=None, help="also write the Markdown report to this file")
    args = parser.parse_args(argv)
    args.model_kwargs = {}
    if args.quick:
        args.model, args.img_size, args.batch_size, args.repeats = "vit_tiny_patch16_224", 32, 4, 1
        args.model_kwargs = dict(img_size=32, patch_size=8, depth=2, embed_dim=48, num_heads=3)
    return args


def build_model(args: argparse.Namespace) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(args.model, pretrained=False, num_classes=10, **args.model_kwargs).eval()


def time_rounds(cases: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    """Seconds of each case per round; one warm-up round first, the order reversed every other round."""
    times: Dict[str, List[float]] = {name: [] for name in cases}
    names = list(cases)
    for round_index in range(repeats + 1):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            cases[name]()
            elapsed = time.perf_counter() - start
            if round_index > 0:
                times[name].append(elapsed)
            print(f"round {round_index} {name}: {elapsed * 1000:.0f} ms", file=sys.stderr)
    return times


def median_ratio(times: Dict[str, List[float]], numerator: str, denominator: str) -> float:
    return statistics.median(a / b for a, b in zip(times[numerator], times[denominator]))


# ------------------------------------------------------------------------------------------ engine


def engine_cases(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> Dict[str, Callable[[], object]]:
    return {
        "grad_rollout alone": lambda: explain(model, images, "grad_rollout", target=target),
        "explain_many (4 methods)": lambda: explain_many(model, images, METHODS, target=target),
        "per-method loop (4 explain calls)": lambda: [explain(model, images, m, target=target) for m in METHODS],
    }


# ---------------------------------------------------------------------------------------- callback


def per_method_design(model, images, methods, options, target=None, return_output=False, per_head=False):
    """The callback's design before ``explain_many``: a no-grad forward in eval mode for the probabilities,
    then one pass per method (``explain_with``'s signature)."""
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            logits = model(images)  # the benchmark's module returns the logits tensor
    finally:
        model.train(training)
    maps = {method: ONE_PASS(model, images, [method], options, target).maps[method] for method in methods}
    return PassResult(maps, logits, None)


class _Classifier(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


def callback_cases(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, log_dir: str):
    """A Trainer that has run one validation epoch (the callback kept its fixed batch), and the hook's arms."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _Classifier(model)

        def forward(self, x):
            return self.net(x)

        def validation_step(self, batch, batch_idx):
            return None

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=len(images))
    callback = AttentionRolloutCallback(methods=METHODS, num_samples=len(images), faithfulness_steps=0, saco_groups=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(log_dir),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    module = Module()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(module, data)
    if callback.fixed_batch is None:
        raise RuntimeError("the callback kept no fixed batch")
    step = [0]

    def hook(design, whole: bool) -> Callable[[], object]:
        def run() -> None:
            step[0] += 1
            side_pass.explain_with = design
            try:
                with torch.inference_mode():  # as the validation loop runs it
                    if whole:
                        callback.log_maps(trainer, module, f"s{step[0]}", step=step[0])
                    else:
                        runtime = runtime_of(trainer, module)
                        inputs = callback.maps.inputs(runtime.device)
                        side_pass.explain_samples(
                            callback.settings, runtime, module, inputs, callback.fixed_batch.labels
                        )
            finally:
                side_pass.explain_with = ONE_PASS

        return run

    cases = {
        "callback side pass, per-method design": hook(per_method_design, whole=False),
        "callback side pass, explain_many": hook(ONE_PASS, whole=False),
        "callback hook, per-method design": hook(per_method_design, whole=True),
        "callback hook, explain_many": hook(ONE_PASS, whole=True),
    }
    return cases, trainer.logger


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    model = build_model(args)
    images = torch.randn(args.batch_size, 3, args.img_size, args.img_size, generator=torch.Generator().manual_seed(0))
    target = torch.arange(args.batch_size) % 10
    started = time.perf_counter()
    cases = engine_cases(model, images, target)
    with tempfile.TemporaryDirectory() as log_dir:
        logger = None
        if not args.skip_callback:
            hook_cases, logger = callback_cases(model, images, target, log_dir)
            cases.update(hook_cases)
        times = time_rounds(cases, args.repeats)
        if logger is not None:
            logger.finalize("success")
    many = median_ratio(times, "explain_many (4 methods)", "grad_rollout alone")
    loop = median_ratio(times, "per-method loop (4 explain calls)", "grad_rollout alone")
    lines = [
        f"# explain_many vs one pass per method: {args.model} (random init), {args.img_size} px, batch "
        f"{args.batch_size}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} rounds",
        *(["", QUICK_NOTE] if args.quick else []),
        "",
        "| ratio (median over rounds) | value | bar |",
        "|---|---|---|",
        f"| explain_many, 4 methods / grad_rollout alone | {many:.2f}× | ≤ {BAR_ENGINE}× "
        f"({'met' if many <= BAR_ENGINE else 'NOT met'}) |",
        f"| per-method loop, 4 explain calls / grad_rollout alone | {loop:.2f}× | info |",
    ]
    if not args.skip_callback:
        side = median_ratio(times, "callback side pass, explain_many", "callback side pass, per-method design")
        hook = median_ratio(times, "callback hook, explain_many", "callback hook, per-method design")
        lines += [
            f"| callback side pass (explain_samples) with explain_many / with the per-method design (4 methods, "
            f"AUCs and SaCo off) | {side:.2f}× | ≤ {BAR_CALLBACK}× ({'met' if side <= BAR_CALLBACK else 'NOT met'}) |",
            f"| callback hook (log_maps: side pass + pictures + scalars) with explain_many / with the per-method "
            f"design | {hook:.2f}× | ≤ {BAR_CALLBACK}× ({'met' if hook <= BAR_CALLBACK else 'NOT met'}) |",
        ]
    lines += ["", "| case | median ms | min ms | max ms |", "|---|---|---|---|"]
    for name, values in times.items():
        lines.append(
            f"| {name} | {statistics.median(values) * 1000:.0f} | {min(values) * 1000:.0f} | {max(values) * 1000:.0f} |"
        )
    lines += ["", f"Total run time {time.perf_counter() - started:.0f} s."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
