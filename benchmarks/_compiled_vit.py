"""bench_compile.py's compile part: the compiled LightningModule and the step timer.

A module of its own so that bench_compile.py imports Lightning only when its compile part runs: the sharded
part's workers start with ``spawn``, which runs bench_compile.py's top again in every worker.
"""

import time
from typing import Dict, List

import torch
from lightning.pytorch import Callback, LightningModule
from torch.utils.data import DataLoader, TensorDataset


class CompiledViT(LightningModule):
    """A timm ViT compiled with ``torch.compile`` as a submodule (``self.model = torch.compile(vit)``)."""

    def __init__(self, backend: str, train_size: int, batch_size: int, vit: Dict, val_size: int):
        super().__init__()
        import timm

        self.model = torch.compile(timm.create_model("vit_tiny_patch16_224", **vit), backend=backend)
        generator = torch.Generator().manual_seed(0)
        self.train_data = TensorDataset(torch.randn(train_size, 3, 32, 32, generator=generator),
                                        torch.randint(0, 4, (train_size,), generator=generator))
        self.val_data = TensorDataset(torch.randn(val_size, 3, 32, 32, generator=generator),
                                      torch.randint(0, 4, (val_size,), generator=generator))
        self.batch_size = batch_size

    def forward(self, x):
        return self.model(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def train_dataloader(self):
        return DataLoader(self.train_data, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self):
        return DataLoader(self.val_data, batch_size=self.batch_size)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class StepTimer(Callback):
    """Wall time of each training step after the first epoch (which compiles)."""

    def __init__(self) -> None:
        self.times: List[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch > 0:
            self.times.append(time.perf_counter() - self._start)
