"""The video demo's claims: it trains in minutes with the callback on, and its maps follow the moving target.

1. Trains ``configs/video_demo.yaml`` through LightningCLI (the callback logging every epoch), timing the fit
   (wall clock and the process's CPU time, which is what a shared machine does not distort).
2. On the first 64 validation clips, for every method: each input frame's map against that frame's mask
   (:func:`lightning_rollout.metrics.localisation_over_frames`): energy in the mask and pointing game, averaged
   over frames and clips, beside the mask's share of the frame (the energy of a uniform map). The same for
   the untrained model (same seed; the sanity check of Adebayo et al.: it must not find the target already)
   and for a time-blind control (each frame scored with the clip's map averaged over time).
3. Accuracy on the validation clips.

    .venv/bin/python benchmarks/video_demo.py --out video_demo.md     # ~5 min on 2 idle cores
"""

import argparse
import copy
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
from _report import emit
from lightning.pytorch.cli import LightningCLI

from lightning_rollout import explain_many
from lightning_rollout.metrics import localisation_over_frames

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = ["rollout", "grad_rollout", "chefer", "gradcam", "legrad", "attention"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def scores(model: torch.nn.Module, clips: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> Dict[str, tuple]:
    """``{method: (energy, pointing, time-blind energy, time-blind pointing, energy per frame)}``, means over
    frames and clips (the last over clips only)."""
    maps = explain_many(model.eval(), clips, METHODS, target=labels, chunk_size=len(clips))
    result = {}
    for method, method_maps in maps.items():
        over = localisation_over_frames(method_maps, masks, tubelet=2)
        blind = method_maps.mean(dim=1, keepdim=True).expand_as(method_maps)
        flat = localisation_over_frames(blind, masks, tubelet=2)
        result[method] = (
            float(over["energy"].mean()),
            float(over["pointing_game"].mean()),
            float(flat["energy"].mean()),
            float(flat["pointing_game"].mean()),
            over["energy"].mean(dim=0).tolist(),
        )
    return result


QUICK_NOTE = "**`--quick`: a smoke run of the code path on a few clips; its numbers mean nothing.**"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "video_demo.yaml"))
    parser.add_argument("--clips", type=int, default=64, help="validation clips scored")
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="one epoch on 32 clips, 8 scored, logs in a temp dir")
    args, cli_args = parser.parse_known_args(argv)  # the rest goes to LightningCLI, e.g. --trainer.max_epochs=2
    if args.quick:
        args.clips = 8
        cli_args = [
            "--trainer.max_epochs=1",
            "--data.init_args.num_train=32",
            "--data.init_args.num_val=8",
            "--data.init_args.batch_size=8",
            f"--trainer.default_root_dir={tempfile.mkdtemp()}",
            *cli_args,
        ]
    cli = LightningCLI(
        args=["--config", args.config, *cli_args],
        run=False,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
    )
    untrained = copy.deepcopy(cli.model)
    cpu, wall = cpu_seconds(), time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    cpu, wall = cpu_seconds() - cpu, time.perf_counter() - wall

    val = cli.datamodule.val_set
    items = [val[i] for i in range(len(val))]
    clips = torch.stack([item[0] for item in items])
    labels = torch.tensor([item[1] for item in items])
    masks = torch.stack([item[2] for item in items]).float()
    model = cli.model.eval()
    with torch.no_grad():
        accuracy = float((model(clips).argmax(dim=-1) == labels).float().mean())
    n = args.clips
    trained, before = (
        scores(model, clips[:n], labels[:n], masks[:n]),
        scores(untrained, clips[:n], labels[:n], masks[:n]),
    )
    area = float(masks[:n].mean())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    lines = [
        f"# video demo ({os.path.relpath(args.config, ROOT)})",
        "",
        *([QUICK_NOTE, ""] if args.quick else []),
        f"{time.strftime('%Y-%m-%d')}, commit {commit.strip()}, {platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads; load average at the end "
        f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}.",
        "",
        f"Training (`trainer.fit`, callback on): **{wall / 60:.1f} min wall**, {cpu / 60:.1f} min of process CPU time; "
        f"validation accuracy {accuracy:.3f} on {len(val)} clips.",
        "",
        f"First {n} validation clips, every frame's map against that frame's mask; the mask covers "
        f"**{area:.3f}** of a frame (a uniform map's energy).",
        "",
        "| method | energy (untrained → trained) | × mask share | pointing game (untrained → trained) | "
        "time-blind control: energy / pointing |",
        "|---|---|---|---|---|",
    ]
    for method in METHODS:
        e0, p0 = before[method][:2]
        e1, p1, eb, pb, _ = trained[method]
        lines.append(
            f"| {method} | {e0:.3f} → **{e1:.3f}** | {e1 / area:.1f}× | {p0:.2f} → **{p1:.2f}** | {eb:.3f} / {pb:.2f} |"
        )
    frames = len(trained[METHODS[0]][4])
    lines += [
        "",
        "Energy of each frame's map (trained), mean over the clips:",
        "",
        "| method | " + " | ".join(f"frame {t}" for t in range(frames)) + " |",
        "|---|" + "---|" * frames,
    ]
    for method in METHODS:
        lines.append(f"| {method} | " + " | ".join(f"{value:.3f}" for value in trained[method][4]) + " |")
    emit(lines, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
