"""Fine-tune a small Hugging Face ViT on the demo scenes with `transformers.Trainer`, and watch its maps.

    python examples/hf_trainer_demo.py                              # configs/hf_trainer_demo.yaml
    python examples/hf_trainer_demo.py --set training.num_train_epochs=1 --set training.report_to=none
    tensorboard --logdir logs/hf_trainer_demo/runs --samples_per_plugin images=100

Everything comes from the YAML config: `model` (a `ViTConfig`, random init), `data` (`SyntheticScenes` per
split: a filled target among distractors, its colour the class, its mask in each batch), `training`
(`TrainingArguments`), `callback` (`AttentionRolloutTrainerCallback`). Offline: nothing is downloaded.

At the end it prints, in Markdown, what the callback logged (energy inside the target's mask and pointing
game of each method on its 8 kept samples, untrained at step 0 and after training, read back from the
TensorBoard event files or `scalars.jsonl`), and the same two measures with the untrained and the trained
model on the first `measure.num_val` validation scenes (as `benchmarks/demo_seeds.py` measures the Lightning
demo).
"""

import argparse
import glob
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads make a shared machine crawl

import torch
import yaml
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification, set_seed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's lightning_rollout

from lightning_rollout import AttentionRolloutTrainerCallback, explain
from lightning_rollout.demo import SyntheticScenes  # noqa: E402  (examples may use the demo; the library never does)
from lightning_rollout.metrics import energy_in_mask, mask_area_fraction, pointing_game

DEFAULT_CONFIG = os.path.join(ROOT, "configs", "hf_trainer_demo.yaml")


class SceneDicts(Dataset):
    """`SyntheticScenes` as the collator dicts `Trainer` expects: `pixel_values`, `labels`, `mask`."""

    def __init__(self, scenes: SyntheticScenes) -> None:
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image, label, mask = self.scenes[index]
        return {"pixel_values": image, "labels": label, "mask": mask}


def load_config(path: str, overrides: List[str]) -> Dict[str, Any]:
    """The YAML config with `section.key=value` overrides (values read as YAML)."""
    with open(path, encoding="utf-8") as file:
        config = yaml.safe_load(file)
    for override in overrides:
        key, _, value = override.partition("=")
        *sections, name = key.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = yaml.safe_load(value)
    return config


def scenes(config: Dict[str, Any], split: str) -> SyntheticScenes:
    data = dict(config["data"])
    size = data.pop(f"num_{split}")
    data.pop("num_train" if split == "val" else "num_val")
    return SyntheticScenes(size, seed=config["seed"], split=split, **data)


def build_model(config: Dict[str, Any]) -> ViTForImageClassification:
    set_seed(config["seed"])
    return ViTForImageClassification(ViTConfig(num_labels=config["data"]["num_classes"], **config["model"]))


def logged_scalars(output_dir: str, tag_prefix: str) -> Dict[int, Dict[str, float]]:
    """{step: {tag: value}} of what the callback logged, from TensorBoard's event files or `scalars.jsonl`."""
    found: Dict[int, Dict[str, float]] = {}
    lines = os.path.join(output_dir, tag_prefix, "scalars.jsonl")
    if os.path.exists(lines):
        with open(lines, encoding="utf-8") as file:
            for line in file:
                row = json.loads(line)
                found.setdefault(row.pop("step"), {}).update(row)
    files = glob.glob(os.path.join(output_dir, "runs", "**", "events.out.tfevents.*"), recursive=True)
    if files:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for folder in sorted({os.path.dirname(f) for f in files}, key=os.path.getmtime)[-1:]:  # the newest run
            events = EventAccumulator(folder, size_guidance={"scalars": 0})
            events.Reload()
            for tag in events.Tags()["scalars"]:
                if tag.startswith(tag_prefix + "/"):
                    for event in events.Scalars(tag):
                        found.setdefault(event.step, {})[tag] = event.value
    return found


def measure(model: Any, data: SyntheticScenes, count: int, methods: List[str]) -> Dict[str, float]:
    """Energy in the target mask and pointing game of each method on the first `count` scenes."""
    images, labels, masks = (torch.stack([torch.as_tensor(data[i][k]) for i in range(count)]) for k in range(3))
    scores = {"mask_area": float(mask_area_fraction(masks).mean())}
    for method in methods:
        maps = explain(model, images, method, target=labels)
        scores[f"{method}/energy"] = float(energy_in_mask(maps, masks).mean())
        scores[f"{method}/pointing_game"] = float(pointing_game(maps, masks).mean())
    with torch.no_grad():
        scores["accuracy"] = float((model(pixel_values=images).logits.argmax(-1) == labels).float().mean())
    return scores


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(
    config: Dict[str, Any],
    logged: Dict[int, Dict[str, float]],
    before: Dict[str, float],
    after: Dict[str, float],
    fit_seconds: float,
    fit_cpu_seconds: float,
) -> str:
    prefix, methods = "attention", config["callback"]["methods"]
    first, last = min(logged), max(logged)
    rows = [
        "| method | logged energy, step 0 → {} | logged pointing game, step 0 → {} |".format(last, last),
        "|---|---|---|",
    ]
    for method in methods:
        energy = [logged[s].get(f"{prefix}/{method}/energy", float("nan")) for s in (first, last)]
        points = [logged[s].get(f"{prefix}/{method}/pointing_game", float("nan")) for s in (first, last)]
        rows.append(f"| `{method}` | {energy[0]:.3f} → {energy[1]:.3f} | {points[0]:.2f} → {points[1]:.2f} |")
    area = logged[last].get(f"{prefix}/mask_area", float("nan"))
    count = config["measure"]["num_val"]
    accuracy = f"accuracy {before['accuracy']:.3f} → {after['accuracy']:.3f}"
    kept = config["callback"].get("num_samples", 8)
    rows += [
        "",
        f"({kept} kept samples; mask area {area:.3f}.) First {count} validation scenes "
        f"(mask area {after['mask_area']:.3f}, {accuracy}):",
        "",
        "| method | energy untrained → trained | pointing game untrained → trained |",
        "|---|---|---|",
    ]
    for method in config["measure"]["methods"]:
        e0, e1 = before[f"{method}/energy"], after[f"{method}/energy"]
        p0, p1 = before[f"{method}/pointing_game"], after[f"{method}/pointing_game"]
        rows.append(f"| `{method}` | {e0:.3f} → {e1:.3f} ({e1 / e0:.1f}×) | {p0:.2f} → {p1:.2f} |")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    load = os.getloadavg()[0]
    rows += [
        "",
        f"Fit {fit_seconds / 60:.1f} min wall ({fit_cpu_seconds / 60:.1f} CPU-min; load average {load:.1f} at "
        f"the end); {time.strftime('%Y-%m-%d')}, commit {commit.stdout.strip() or '?'}, {machine}.",
    ]
    return "\n".join(rows)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG, help="the YAML config")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a value")
    options = parser.parse_args(argv)
    config = load_config(options.config, options.set)

    model = build_model(config)
    callback = AttentionRolloutTrainerCallback(**config["callback"])
    args = TrainingArguments(**config["training"])
    train, val = scenes(config, "train"), scenes(config, "val")
    trainer = Trainer(
        model=model, args=args, train_dataset=SceneDicts(train), eval_dataset=SceneDicts(val), callbacks=[callback]
    )
    start, start_cpu = time.perf_counter(), cpu_seconds()
    trainer.train()
    fit_seconds, fit_cpu_seconds = time.perf_counter() - start, cpu_seconds() - start_cpu

    measured = config["measure"]
    before = measure(build_model(config), val, measured["num_val"], measured["methods"])
    after = measure(trainer.model, val, measured["num_val"], measured["methods"])
    logged = logged_scalars(args.output_dir, callback.tag_prefix)
    table = report(config, logged, before, after, fit_seconds, fit_cpu_seconds)
    print(table)
    with open(os.path.join(args.output_dir, "maps_table.md"), "w", encoding="utf-8") as file:
        file.write(table + "\n")
    return {"trainer": trainer, "callback": callback, "before": before, "after": after, "table": table}


if __name__ == "__main__":
    main()
