"""Tiny real `transformers.Trainer` runs for the Trainer callback's tests: random-init models, data made here."""

import glob
import os
from typing import Any, Dict, List

import timm
import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

NUM_CLASSES = 3


class DictScenes(Dataset):
    """Deterministic random 32×32 images, labels and square masks as collator dicts; uses no global RNG."""

    def __init__(self, size: int, seed: int, image_key: str = "pixel_values", label_key: str = "labels"):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 32, 32, generator=generator)
        self.labels = torch.randint(0, NUM_CLASSES, (size,), generator=generator)
        self.masks = torch.zeros(size, 32, 32, dtype=torch.bool)
        self.masks[:, 8:24, 8:24] = True
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {self.image_key: self.images[index], self.label_key: self.labels[index], "mask": self.masks[index]}


def tiny_hf_vit(seed: int = 0) -> ViTForImageClassification:
    """A random-init 2-layer HF ViT on 32×32 inputs with 8×8 patches (SDPA attention, the default)."""
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, num_labels=NUM_CLASSES,
    )
    return ViTForImageClassification(config)


class TimmForTrainer(nn.Module):
    """A timm ViT as `Trainer` wants a model: keyword inputs, a dict with the loss and the logits."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.vit = timm.create_model(
            "vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
            num_classes=NUM_CLASSES,
        )

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor = None, **kwargs: Any) -> Dict[str, Any]:
        logits = self.vit(pixel_values)
        output = {"logits": logits}
        if labels is not None:
            output = {"loss": nn.functional.cross_entropy(logits, labels), **output}
        return output


def training_arguments(output_dir: str, **overrides: Any) -> TrainingArguments:
    """4 steps of 8 samples, an evaluation every 2 steps, no checkpoints, PNG output, CPU, seed 0."""
    options = dict(
        output_dir=str(output_dir), report_to="none", max_steps=4, eval_strategy="steps", eval_steps=2,
        per_device_train_batch_size=8, per_device_eval_batch_size=4, use_cpu=True, save_strategy="no",
        disable_tqdm=True, logging_steps=2, seed=0, learning_rate=1e-3, remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    options.update(overrides)
    return TrainingArguments(**options)


def make_trainer(output_dir: str, callbacks: List[Any], model: nn.Module = None, train_size: int = 32,
                 eval_size: int = 12, **overrides: Any) -> Trainer:
    """A Trainer over `DictScenes` (train seed 1, evaluation seed 2) with `training_arguments`."""
    return Trainer(
        model=tiny_hf_vit() if model is None else model,
        args=training_arguments(output_dir, **overrides),
        train_dataset=DictScenes(train_size, seed=1),
        eval_dataset=DictScenes(eval_size, seed=2),
        callbacks=callbacks,
    )


def png_steps(folder: str) -> List[int]:
    """The steps of the `step_XXXXXXXX.png` files in `folder`, sorted."""
    return sorted(int(os.path.basename(path)[5:13]) for path in glob.glob(os.path.join(folder, "step_*.png")))
