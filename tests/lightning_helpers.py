"""Tiny real Lightning runs for the callback tests (a random-init timm ViT, random data with masks); log readers."""

import glob
import os
import struct
import time
from typing import Any, Iterator, List

import timm
import torch
from torch.utils.data import DataLoader, Dataset


class RandomScenes(Dataset):
    """Deterministic random images (16×16), labels and square masks; uses no global RNG."""

    def __init__(self, size: int = 16, num_classes: int = 3, as_dict: bool = False, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 16, 16, generator=generator)
        self.labels = torch.randint(0, num_classes, (size,), generator=generator)
        self.masks = torch.zeros(size, 16, 16, dtype=torch.bool)
        self.masks[:, 4:12, 4:12] = True
        self.as_dict = as_dict

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        if self.as_dict:
            return {"image": self.images[index], "label": self.labels[index], "mask": self.masks[index]}
        return self.images[index], self.labels[index], self.masks[index]


def make_module_class(base):
    """A LightningModule class of the given namespace around a tiny ViT (module-level for pickling)."""

    class TinyViTModule(base):
        def __init__(self, lr: float = 0.01, **vit_kwargs):
            super().__init__()
            options = dict(img_size=16, patch_size=4, depth=2, embed_dim=16, num_heads=2, num_classes=3)
            options.update(vit_kwargs)
            self.model = timm.create_model("vit_tiny_patch16_224", **options)
            self.lr = lr

        def forward(self, x):
            return self.model(x)

        def _loss(self, batch):
            images, labels = (batch["image"], batch["label"]) if isinstance(batch, dict) else batch[:2]
            return torch.nn.functional.cross_entropy(self(images), labels)

        def training_step(self, batch, batch_idx):
            loss = self._loss(batch)
            self.log("train_loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch))

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self._loss(batch))

        def train_dataloader(self):
            return DataLoader(RandomScenes(32, seed=1), batch_size=8, shuffle=True)

        def val_dataloader(self):
            return DataLoader(RandomScenes(16, seed=2), batch_size=4)

        def test_dataloader(self):
            return DataLoader(RandomScenes(8, seed=3), batch_size=4)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return TinyViTModule


def read_events(log_dir):
    """EventAccumulator over the single event file under ``log_dir``."""
    from tensorboard.backend.event_processing import event_accumulator

    files = glob.glob(os.path.join(log_dir, "**", "events.out.tfevents.*"), recursive=True)
    assert files, f"no event file under {log_dir}"
    accumulator = event_accumulator.EventAccumulator(
        os.path.dirname(files[0]), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.SCALARS: 0}
    )
    accumulator.Reload()
    return accumulator


def wandb_records(path: str) -> Iterator[Any]:
    """The records of an offline run's ``.wandb`` file (LevelDB log blocks of 32 KiB after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2

    with open(path, "rb") as file:
        data = file.read()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    position, block, chunks = 7, 32768, []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        length, kind = struct.unpack("<HB", data[position + 4 : position + 7])
        if position + 7 + length > len(data):
            return  # a record still being written
        chunks.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def finished_wandb_records(path: str, timeout: float = 30.0) -> List[Any]:
    """The records of an offline run's ``.wandb`` file once it holds the exit record: wandb's service process
    may still be writing the file when ``wandb.finish()`` returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = list(wandb_records(path))
        if any(record.WhichOneof("record_type") == "exit" for record in records):
            return records
        assert time.monotonic() < deadline, f"{path} has no exit record after {timeout:.0f} s"
        time.sleep(0.2)


def make_trainer(tmp_path, callbacks, max_epochs=2, **kwargs):
    """A quiet, deterministic ``lightning.pytorch`` Trainer on the CPU logging to TensorBoard under ``tmp_path``."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import TensorBoardLogger

    options = dict(
        max_epochs=max_epochs,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
        log_every_n_steps=1,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)
