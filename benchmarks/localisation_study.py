"""Localisation before and after training, on the first validation scenes of a demo config.

    python benchmarks/localisation_study.py --config configs/avg_pool.yaml   # ~3 min on 2 CPU cores
    python benchmarks/localisation_study.py --config configs/demo.yaml --methods grad_rollout chefer

Builds the config's model and data (no callback, no logger), measures the maps of the untrained model on the
first ``--num-scenes`` validation scenes, trains exactly as the config says, and measures again: energy
inside the object mask (the area a uniform map would get is printed beside it), the pointing game and the
ratio of trained to untrained energy. Prints a Markdown table (``--out`` writes it too).
"""

import argparse
import os
import sys
import time
from typing import Dict, List, Optional

import torch
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _report import emit  # noqa: E402
from lightning.pytorch import Trainer, seed_everything  # noqa: E402

from lightning_rollout import explain  # noqa: E402
from lightning_rollout.demo import SyntheticScenesDataModule, TimmClassifier  # noqa: E402
from lightning_rollout.metrics import energy_in_mask, pointing_game  # noqa: E402


def measure(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor,
            methods: List[str], batch_size: int = 32) -> Dict[str, Dict[str, float]]:
    """Mean energy and pointing game per method, explaining the true labels."""
    result = {}
    for method in methods:
        maps = torch.cat([
            explain(model, images[i:i + batch_size], method, target=labels[i:i + batch_size])
            for i in range(0, len(images), batch_size)
        ])
        result[method] = {
            "energy": float(energy_in_mask(maps, masks).mean()),
            "pointing": float(pointing_game(maps, masks).mean()),
        }
    return result


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "configs", "avg_pool.yaml"))
    parser.add_argument("--methods", nargs="+", default=["grad_rollout", "chefer"])
    parser.add_argument("--num-scenes", type=int, default=64)
    parser.add_argument("--max-epochs", type=int, help="override the config's trainer.max_epochs")
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    with open(args.config) as handle:
        config = yaml.safe_load(handle)
    seed_everything(config.get("seed_everything", 0))
    model = TimmClassifier(**config["model"]["init_args"])
    data = SyntheticScenesDataModule(**config["data"]["init_args"])
    trainer_options = {k: v for k, v in config["trainer"].items() if k not in ("callbacks", "default_root_dir")}
    if args.max_epochs is not None:
        trainer_options["max_epochs"] = args.max_epochs
    trainer_options.update(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                           enable_model_summary=False)

    data.setup("fit")
    scenes = [data.val_dataloader().dataset[i] for i in range(args.num_scenes)]
    images = torch.stack([scene[0] for scene in scenes])
    labels = torch.tensor([int(scene[1]) for scene in scenes])
    masks = torch.stack([torch.as_tensor(scene[2]) for scene in scenes]).float()

    before = measure(model, images, labels, masks, args.methods)
    start = time.perf_counter()
    trainer = Trainer(**trainer_options)
    trainer.fit(model, datamodule=data)
    minutes = (time.perf_counter() - start) / 60
    model.eval()
    with torch.no_grad():
        accuracy = float((model(images).argmax(-1) == labels).float().mean())
    after = measure(model, images, labels, masks, args.methods)

    area = float(masks.mean())
    lines = [
        f"`{os.path.relpath(args.config, ROOT)}`, first {args.num_scenes} validation scenes, object area {area:.3f}, "
        f"accuracy on them after training {accuracy:.2f}, training {minutes:.1f} min",
        "",
        "| method | energy untrained | energy trained | ratio | pointing game untrained | pointing game trained |",
        "|---|---|---|---|---|---|",
    ]
    for method in args.methods:
        b, a = before[method], after[method]
        lines.append(f"| `{method}` | {b['energy']:.3f} | {a['energy']:.3f} | {a['energy'] / b['energy']:.1f}x | "
                     f"{b['pointing']:.2f} | {a['pointing']:.2f} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
