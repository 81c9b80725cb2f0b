"""A LightningModule around a small Hugging Face VideoMAE classifier, for the video demo.

``transformers`` is imported when the module is built, so importing this file needs only Lightning.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig

__all__ = ["VideoMAEClassifier"]


class VideoMAEClassifier(LightningModule):
    """``transformers.VideoMAEForVideoClassification`` from a config (random init), trained with AdamW, linear
    warm-up and cosine decay per step.

    Args:
        num_classes: classes of the head.
        num_frames: frames per clip (the model takes exactly this many).
        image_size: side of the frames in pixels.
        patch_size: side of a tubelet in pixels.
        tubelet_size: frames per tubelet.
        hidden_size: the encoder's token width.
        num_hidden_layers: the encoder's layers.
        num_attention_heads: heads per attention layer.
        intermediate_size: the width of each MLP.
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        warmup_fraction: share of the steps spent warming up.

    ``forward(clips)`` takes ``(B, T, C, H, W)`` and returns logits; batches are ``(clips, labels, ...)``.

    Example:
        ```python
        module = VideoMAEClassifier(num_classes=4, num_frames=8, image_size=32)
        logits = module(torch.randn(2, 8, 3, 32, 32))
        ```
    """

    def __init__(
        self,
        num_classes: int = 4,
        num_frames: int = 8,
        image_size: int = 32,
        patch_size: int = 8,
        tubelet_size: int = 2,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        intermediate_size: int = 128,
        lr: float = 3e-3,
        weight_decay: float = 0.05,
        warmup_fraction: float = 0.1,
    ) -> None:
        super().__init__()
        if lr <= 0 or not 0 <= warmup_fraction < 1:
            raise ValueError(f"need `lr` > 0 and `warmup_fraction` in [0, 1), got {lr} and {warmup_fraction}")
        self.save_hyperparameters()
        import transformers

        config = transformers.VideoMAEConfig(  # type: ignore[call-arg]  # num_labels: PretrainedConfig's **kwargs
            num_labels=num_classes,
            num_frames=num_frames,
            image_size=image_size,
            patch_size=patch_size,
            tubelet_size=tubelet_size,
            hidden_size=hidden_size,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            intermediate_size=intermediate_size,
        )
        self.model = transformers.VideoMAEForVideoClassification(config)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips).logits

    def _step(self, batch: Any, stage: str) -> torch.Tensor:
        clips, labels = batch[0], batch[1]
        logits = self(clips)
        loss = F.cross_entropy(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(labels))
        acc = (logits.argmax(dim=-1) == labels).float().mean()
        self.log(f"{stage}/acc", acc, prog_bar=True, on_step=on_step, on_epoch=True, batch_size=len(labels))
        return loss

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        decay = [p for p in self.model.parameters() if p.ndim > 1]
        no_decay = [p for p in self.model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=self.hparams["lr"],
        )
        total = max(float(self.trainer.estimated_stepping_batches), 1.0)
        warmup = self.hparams["warmup_fraction"] * total

        def factor(step: int) -> float:
            if step < warmup:
                return 0.01 + 0.99 * step / warmup
            return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min((step - warmup) / max(total - warmup, 1.0), 1.0)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
