"""A LightningModule around any timm model, for the demo and for the user's own training runs."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import timm
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

__all__ = ["TimmClassifier"]


class TimmClassifier(LightningModule):
    """Image classifier built by ``timm.create_model``, trained with AdamW, linear warm-up and cosine decay.

    Args:
        model_name: a timm model name, e.g. ``"vit_tiny_patch16_224"``.
        model_kwargs: extra keyword arguments of ``timm.create_model`` (``img_size``, ``patch_size``, ``depth``,
            ``embed_dim``, ``num_heads``, ``class_token``, ``global_pool``, ``reg_tokens``, ...).
        num_classes: number of classes of the head.
        pretrained: load timm's pretrained weights (downloads them unless ``checkpoint_path`` is given).
        checkpoint_path: a local weights file (``.pth``, ``.bin`` or ``.safetensors`` state dict) loaded through
            timm, which adapts the head and position embeddings to the model's arguments.
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not applied to biases, norms and embeddings).
        warmup_epochs: epochs (may be fractional) of linear warm-up from ``lr * warmup_start_factor``.
        min_lr_factor: the cosine decay ends at ``lr * min_lr_factor``.
        warmup_start_factor: the warm-up starts at ``lr * warmup_start_factor``.
        label_smoothing: label smoothing of the cross-entropy loss.
        schedule_interval: ``"step"`` (the schedule advances every optimiser step) or ``"epoch"``.
        task: ``"multiclass"`` (integer labels, cross-entropy; ``acc`` is top-1 accuracy) or ``"multilabel"``
            (multi-hot labels ``(B, num_classes)``, binary cross-entropy on each logit; ``acc`` is the share of
            labels right at a 0.5 sigmoid threshold).

    The timm model is ``self.model``; ``forward(images)`` returns logits. Batches may be tuples or lists
    ``(images, labels, ...)`` or dicts with ``"image"`` and ``"label"``.

    Raises:
        ValueError: if an argument is out of range.

    Example:
        ```python
        module = TimmClassifier(
            "vit_tiny_patch16_224",
            model_kwargs=dict(img_size=32, patch_size=4, depth=4, embed_dim=96, num_heads=3),
            num_classes=4,
        )
        logits = module(torch.randn(2, 3, 32, 32))
        ```
    """

    def __init__(
        self,
        model_name: str = "vit_tiny_patch16_224",
        model_kwargs: dict[str, Any] | None = None,
        num_classes: int = 4,
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_epochs: float = 1.0,
        min_lr_factor: float = 0.01,
        warmup_start_factor: float = 0.01,
        label_smoothing: float = 0.0,
        schedule_interval: str = "step",
        task: str = "multiclass",
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"`num_classes` must be >= 1, got {num_classes}")
        if lr <= 0:
            raise ValueError(f"`lr` must be > 0, got {lr}")
        if weight_decay < 0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}")
        if warmup_epochs < 0:
            raise ValueError(f"`warmup_epochs` must be >= 0, got {warmup_epochs}")
        if not 0 <= min_lr_factor <= 1:
            raise ValueError(f"`min_lr_factor` must be in [0, 1], got {min_lr_factor}")
        if not 0 < warmup_start_factor <= 1:
            raise ValueError(f"`warmup_start_factor` must be in (0, 1], got {warmup_start_factor}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing}")
        if schedule_interval not in ("step", "epoch"):
            raise ValueError(f"`schedule_interval` must be 'step' or 'epoch', got {schedule_interval!r}")
        if task not in ("multiclass", "multilabel"):
            raise ValueError(f"`task` must be 'multiclass' or 'multilabel', got {task!r}")
        self.save_hyperparameters()

        kwargs = dict(model_kwargs or {})
        if checkpoint_path is not None:
            kwargs["pretrained_cfg_overlay"] = dict(file=str(checkpoint_path))
        self.model = timm.create_model(
            model_name,
            pretrained=pretrained or checkpoint_path is not None,
            num_classes=num_classes,
            **kwargs,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    @staticmethod
    def unpack_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of a tuple/list batch ``(images, labels, ...)`` or a dict batch."""
        if isinstance(batch, Mapping):
            try:
                return batch["image"], batch["label"]
            except KeyError as err:
                raise KeyError(f"a dict batch needs 'image' and 'label' keys, got {sorted(batch)}") from err
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            return batch[0], batch[1]
        raise TypeError(f"a batch must be (image, label, ...) or a dict with 'image'/'label', got {type(batch)}")

    def _shared_step(self, batch: Any, stage: str) -> torch.Tensor:
        images, labels = self.unpack_batch(batch)
        logits = self(images)
        if self.hparams.get("task", "multiclass") == "multilabel":
            loss = F.binary_cross_entropy_with_logits(logits, labels.float())
            acc = ((logits > 0) == (labels > 0.5)).float().mean()
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams["label_smoothing"])
            acc = (logits.argmax(dim=-1) == labels).float().mean()
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(labels))
        self.log(f"{stage}/acc", acc, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images = batch if isinstance(batch, torch.Tensor) else self.unpack_batch(batch)[0]
        logits = self(images)
        return logits.sigmoid() if self.hparams.get("task", "multiclass") == "multilabel" else logits.softmax(dim=-1)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """AdamW groups: weight decay on matrices only, none on biases, norms, tokens and embeddings."""
        no_decay_names = set(getattr(self.model, "no_weight_decay", lambda: set())())
        decay, no_decay = [], []
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            if param.ndim <= 1 or name in no_decay_names or name.endswith(".bias"):
                no_decay.append(param)
            else:
                decay.append(param)
        return [
            {"params": decay, "weight_decay": self.hparams["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def lr_factor(self, progress: float, warmup: float, total: float) -> float:
        """Multiplier of ``lr`` after ``progress`` steps (or epochs) of ``total``, ``warmup`` of them warm-up."""
        start, floor = self.hparams["warmup_start_factor"], self.hparams["min_lr_factor"]
        if progress < warmup:
            return start + (1.0 - start) * progress / warmup
        span = max(total - warmup, 1.0)
        t = min(max((progress - warmup) / span, 0.0), 1.0)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer = torch.optim.AdamW(self.parameter_groups(), lr=self.hparams["lr"])
        interval = self.hparams["schedule_interval"]
        max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        if interval == "step":
            total = float(max(self.trainer.estimated_stepping_batches, 1))
            warmup = self.hparams["warmup_epochs"] * total / max_epochs
        else:
            total = float(max_epochs)
            warmup = float(self.hparams["warmup_epochs"])
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda progress: self.lr_factor(float(progress), warmup, total)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}
