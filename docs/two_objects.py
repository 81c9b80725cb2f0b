"""Makes docs/two_objects.png: one two-object scene's class maps, as the callback logged them.

    .venv/bin/python train_demo.py fit --config configs/two_objects.yaml
    .venv/bin/python docs/two_objects.py logs/two_objects docs/two_objects.png

It reads the last ``attention/<method>/samples`` picture of each method from the run's TensorBoard events and
keeps the first scene's two panels (one per class present, each captioned with the class and its sigmoid
score), a row per method.
"""

import argparse
import glob
import io
import math
import os

import numpy as np
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from lightning_rollout.rendering import GAP, render_filmstrip, render_grid

COLUMNS = 4  # the samples picture's panels per row (lightning_rollout.report.render_samples)


def first_scene(picture: np.ndarray, panels: int) -> np.ndarray:
    """The first two cells of a samples picture laid out by ``render_grid`` with :data:`COLUMNS` columns."""
    rows = math.ceil(panels / COLUMNS)
    cell_h = (picture.shape[0] - (rows - 1) * GAP) // rows
    cell_w = (picture.shape[1] - (COLUMNS - 1) * GAP) // COLUMNS
    return picture[:cell_h, : 2 * cell_w + GAP]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log_dir")
    parser.add_argument("out")
    parser.add_argument("--methods", nargs="+", default=["grad_rollout", "chefer", "rollout"])
    parser.add_argument("--panels", type=int, default=64, help="panels in the samples picture (scenes x labels)")
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.log_dir, "**", "events.out.tfevents.*"), recursive=True))
    events = event_accumulator.EventAccumulator(files[-1], size_guidance={event_accumulator.IMAGES: 0})
    events.Reload()
    rows = []
    for method in args.methods:
        encoded = events.Images(f"attention/{method}/samples")[-1].encoded_image_string
        picture = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
        rows.append(render_filmstrip([first_scene(picture, args.panels)], [method]))
    Image.fromarray(render_grid(rows, ncols=1)).save(args.out)
    print(f"{args.out}: a row per method: {', '.join(args.methods)}")


if __name__ == "__main__":
    main()
