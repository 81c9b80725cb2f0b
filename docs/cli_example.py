"""Writes the README's command-line example inputs: three scenes of the demo's test split as PNG files.

    .venv/bin/python docs/cli_example.py docs/cli_example

The demo trains on the ``train`` split and validates on ``val``; the ``test`` split's scenes are new to it.
Files are named ``scene_<index>_<true colour>.png``.
"""

import os
import sys

from PIL import Image

from lightning_rollout.demo import SyntheticScenes


def main(folder: str, count: int = 3) -> None:
    # The demo config's scene settings (configs/demo.yaml, data.init_args).
    scenes = SyntheticScenes(count, image_size=48, num_classes=4, target_area=(0.11, 0.15), seed=0, split="test")
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        pixels, label, _ = scenes.render(index)
        Image.fromarray(pixels).save(os.path.join(folder, f"scene_{index}_{scenes.class_names[label]}.png"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "cli_example"))
