"""Which faithfulness baseline makes the deletion and insertion AUCs informative, on real scans.

Writes scikit-learn's digits (1797 real 8 x 8 grey scans, 10 classes) as an image folder to a temporary
directory (every 5th scan to ``val/``), trains a small random-init timm ViT on it (40 epochs reach val accuracy
0.97) with ``ImageFolderDataModule`` (no augmentation) and scores every method's maps of the first validation scans with
:func:`lightning_rollout.evaluation.evaluate` under each baseline: ``"blur"``, ``"mean"`` and the constant
``0.0``. A baseline says something when the best method's deletion AUC sits clearly below its insertion AUC
and below the random-map floor.

    .venv/bin/python benchmarks/bench_baseline.py [--epochs 40] [--num-samples 256] [--steps 16] [--out FILE]
    .venv/bin/python benchmarks/bench_baseline.py --baselines mean --methods rollout grad_rollout chefer gradcam \
        legrad attention          # every method under the default baseline (the table has SaCo's column too)
    .venv/bin/python benchmarks/bench_baseline.py --quick   # the same code path in seconds; numbers mean nothing
"""

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's package
from lightning_rollout.data import ImageFolderDataModule
from lightning_rollout.demo import TimmClassifier
from lightning_rollout.evaluation import evaluate, format_markdown

METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
BASELINES = ["blur", "mean", 0.0]
VIT = dict(img_size=32, patch_size=4, depth=4, embed_dim=64, num_heads=4)
QUICK_VIT = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
QUICK_PER_CLASS = 10


def write_digits(root: str, per_class: Optional[int] = None) -> None:
    """scikit-learn's digits as ``root/{train,val}/<digit>/<index>.png`` (every 5th scan in ``val/``).

    With ``per_class``, only the first ``per_class`` scans of each digit, every 5th of them in ``val/``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    seen: Counter = Counter()
    for index, (scan, label) in enumerate(zip(digits.images, digits.target)):
        if per_class is not None and seen[label] >= per_class:
            continue
        position = index if per_class is None else seen[label]
        seen[label] += 1
        folder = os.path.join(root, "val" if position % 5 == 0 else "train", str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray((scan * 255 / 16).round().astype(np.uint8)).save(os.path.join(folder, f"{index}.png"))


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--num-samples", type=int, default=256, help="validation scans scored")
    parser.add_argument("--steps", type=int, default=16, help="steps of the deletion and insertion curves")
    parser.add_argument("--baselines", nargs="+", default=BASELINES, help="'blur', 'mean' or numbers")
    parser.add_argument("--methods", nargs="+", default=METHODS, help="e.g. every registered method, for SaCo")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run of the same code path in seconds (the numbers mean nothing): {QUICK_PER_CLASS} scans per "
        f"digit, a 2-block ViT {QUICK_VIT}, 1 epoch, 8 scans scored, 2 steps",
    )
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    args.baselines = [b if isinstance(b, float) or b in ("blur", "mean") else float(b) for b in args.baselines]
    vit, per_class = VIT, None
    if args.quick:
        args.epochs, args.num_samples, args.steps = 1, 8, 2
        vit, per_class = QUICK_VIT, QUICK_PER_CLASS

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        write_digits(root, per_class)
        pl.seed_everything(0, verbose=False)
        data = ImageFolderDataModule(
            root, image_size=32, batch_size=64, mean=[0.5] * 3, std=[0.5] * 3, train_augmentation="none"
        )
        model = TimmClassifier(model_kwargs=vit, num_classes=10, lr=2e-3)
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.fit(model, datamodule=data)
        images, labels = zip(*(data.val_set[i] for i in range(min(args.num_samples, len(data.val_set)))))
        images, labels = torch.stack(images), torch.tensor(labels)
        model.eval()
        with torch.no_grad():
            accuracy = float((model(images).argmax(-1) == labels).float().mean())
        print(f"trained {args.epochs} epochs, val accuracy {accuracy:.3f} on {len(labels)} scans", file=sys.stderr)
        sections = []
        for baseline in args.baselines:
            rows = evaluate(model, images, labels, methods=args.methods, steps=args.steps, baseline=baseline)
            best = min((row for row in rows if row["name"] in args.methods), key=lambda row: row["deletion_auc"])
            random_floor = next(row for row in rows if row["name"] == "random")
            sections.append(
                f"### baseline {baseline!r}\n\n{format_markdown(rows)}\n\nbest method `{best['name']}`: deletion "
                f"{best['deletion_auc']:.3f}, insertion {best['insertion_auc']:.3f}, random floor deletion "
                f"{random_floor['deletion_auc']:.3f}\n"
            )
            print(f"baseline {baseline!r} done", file=sys.stderr)
    quick_note = "**`--quick`: a smoke run of the code path on a few scans; its numbers mean nothing.**\n\n"
    report = (
        f"## Faithfulness baselines on scikit-learn's digits\n\n{quick_note if args.quick else ''}{len(labels)} "
        f"validation scans (32 px), timm ViT {vit}, random init, {args.epochs} epochs without augmentation, val "
        f"accuracy {accuracy:.3f}; {args.steps} steps; true labels; {time.perf_counter() - started:.0f} s.\n\n"
        + "\n".join(sections)
    )
    print(report)
    if args.out:
        with open(args.out, "w") as file:
            file.write(report)
    return report


if __name__ == "__main__":
    main()
