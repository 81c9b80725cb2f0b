"""Writes the command-line guide's example inputs: three scenes of the demo's test split as PNG files.

    .venv/bin/python docs/cli_example.py docs/cli_example

The scenes follow ``configs/demo.yaml``'s data settings. The demo trains on the ``train`` split and validates
on ``val``; the ``test`` split's scenes are new to it. Files are named ``scene_<index>_<true colour>.png``.
"""

import inspect
import os
import sys

import yaml
from PIL import Image

from lightning_rollout.demo import SyntheticScenes

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "demo.yaml")


def main(folder: str, count: int = 3) -> None:
    with open(DEMO_CONFIG, encoding="utf-8") as handle:
        data_args = yaml.safe_load(handle)["data"]["init_args"]
    accepted = inspect.signature(SyntheticScenes).parameters
    scene_args = {key: value for key, value in data_args.items() if key in accepted}
    scenes = SyntheticScenes(count, split="test", **scene_args)
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        pixels, label, _ = scenes.render(index)
        Image.fromarray(pixels).save(os.path.join(folder, f"scene_{index}_{scenes.class_names[label]}.png"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "cli_example"))
