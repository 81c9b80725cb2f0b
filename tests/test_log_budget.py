"""Log bytes and checkpointed state over a longer run at 224 px on real photographs (scikit-image's samples)."""

import glob
import os
import pickle

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from lightning_helpers import make_module_class, read_events
from torch.utils.data import DataLoader, TensorDataset

from lightning_rollout import AttentionRolloutCallback

skimage_data = pytest.importorskip("skimage.data")

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry", "colorwheel"]
BUDGET = 1_000_000  # bytes per method and logged epoch (samples + filmstrip), issue 14 item 2
VIT_224 = dict(img_size=224, patch_size=16, depth=1, embed_dim=32, num_heads=2, num_classes=4)
Module = make_module_class(pl.LightningModule)


def photographs(size: int = 224) -> torch.Tensor:
    """The 8 photographs, square-cropped, resized to ``size`` and normalised with mean = std = 0.5."""
    pictures = []
    for name in PHOTOS:
        image = getattr(skimage_data, name)()
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        side = min(image.shape[:2])
        pixels = torch.from_numpy(np.ascontiguousarray(image[:side, :side])).permute(2, 0, 1).float()[None] / 255
        pictures.append(F.interpolate(pixels, size=(size, size), mode="area"))
    return (torch.cat(pictures) - 0.5) / 0.5


class Photos(Module):
    def __init__(self):
        super().__init__(**VIT_224)
        self.images, self.labels = photographs(), torch.arange(len(PHOTOS)) % 4

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=8)

    def val_dataloader(self):
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=8)


def _image_bytes(log_dir):
    """{(tag, step): encoded bytes} of every picture in the run's event file."""
    events = read_events(log_dir)
    return {
        (tag, event.step): len(event.encoded_image_string)
        for tag in events.Tags()["images"]
        for event in events.Images(tag)
    }


def test_each_method_logs_under_a_megabyte_per_epoch_and_the_state_stops_growing(tmp_path):
    pl.seed_everything(0)
    methods = ["rollout", "gradcam"]
    callback = AttentionRolloutCallback(methods=methods, mean=[0.5] * 3, std=[0.5] * 3, faithfulness_steps=0)
    states = []

    class StateBytes(pl.Callback):
        def on_validation_epoch_end(self, trainer, pl_module):
            states.append(len(pickle.dumps(callback.state_dict())))

    trainer = pl.Trainer(
        max_epochs=13,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=[callback, StateBytes()],
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        enable_checkpointing=False,
    )
    trainer.fit(Photos())

    sizes = _image_bytes(trainer.logger.log_dir)
    steps = sorted({step for _, step in sizes})
    assert len(steps) == 14, "the untrained model, then 13 epochs"
    for method in methods:
        per_epoch = [
            sizes[(f"attention/{method}/samples", s)] + sizes[(f"attention/{method}/filmstrip", s)] for s in steps
        ]
        assert max(per_epoch) <= BUDGET, per_epoch
        full = per_epoch[9:]  # 10 columns from the 10th logging step on: the cost stops growing
        assert max(full) <= 1.1 * min(full), per_epoch
        film = read_events(trainer.logger.log_dir).Images(f"attention/{method}/filmstrip")
        assert film[0].height == film[-1].height and film[9].width == film[-1].width
        # 8 rows of 128-px cells (the 224-px inputs downscaled) under a label strip each
        assert 8 * 128 < film[-1].height < 8 * (128 + 40)
        columns = callback.history.columns(method)
        assert [label for label, *_ in columns][0] == "init" and columns[-1][0] == "e12 s13" and len(columns) == 10
    # The state holds the batch plus 10 columns per method: flat once the filmstrip is full.
    assert abs(states[-1] - states[-4]) < 100 and states[-1] > states[0] + 8 * 14 * 14 * 4
    encoded = read_events(trainer.logger.log_dir).Images("attention/rollout/samples")[-1].encoded_image_string
    assert encoded[:3] == b"\xff\xd8\xff", "JPEG"


def test_png_stays_available(tmp_path):
    callback = AttentionRolloutCallback(image_format="png", faithfulness_steps=0, num_samples=4)
    trainer = pl.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(Module())
    encoded = read_events(trainer.logger.log_dir).Images("attention/rollout/samples")[-1].encoded_image_string
    assert encoded[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_shows_the_same_filmstrip(tmp_path):
    def run(max_epochs, callback, ckpt_path=None, name="a"):
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator="cpu",
            logger=TensorBoardLogger(str(tmp_path), name=name),
            callbacks=[callback],
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            deterministic=True,
        )
        pl.seed_everything(0)
        trainer.fit(Module(), ckpt_path=ckpt_path)
        return trainer

    options = dict(num_samples=4, filmstrip_columns=3, faithfulness_steps=0)
    straight = AttentionRolloutCallback(**options)
    run(6, straight, name="straight")
    first = AttentionRolloutCallback(**options)
    trainer = run(4, first)
    path = str(tmp_path / "mid.ckpt")
    trainer.save_checkpoint(path)
    resumed = AttentionRolloutCallback(**options)
    trainer = run(6, resumed, ckpt_path=path, name="b")
    labels = [label for label, *_ in resumed.history.columns("rollout")]
    assert labels == [label for label, *_ in straight.history.columns("rollout")]
    assert labels[0] == "init" and labels[-1] == "e5 s24" and len(labels) == 3
    positions = [position for *_, position in resumed.history.columns("rollout")]
    assert positions == [position for *_, position in straight.history.columns("rollout")]
    # The columns from before the checkpoint come back from the state, maps and all.
    before = {label: maps for label, maps, _ in first.history.columns("rollout")}
    for label, maps, _ in resumed.history.columns("rollout"):
        if label in before:
            torch.testing.assert_close(maps, before[label])
    assert len(glob.glob(os.path.join(trainer.logger.log_dir, "events.*"))) == 1


def test_wandb_and_mlflow_sinks_keep_the_same_budget(tmp_path):
    """The largest pictures of a full filmstrip at 224 px, through the W&B and MLflow sinks' encoders."""
    from lightning_rollout.monitor import tasks
    from lightning_rollout.monitor.captions import captions
    from lightning_rollout.rendering.figures import render_filmstrips, render_samples
    from lightning_rollout.rendering.images import fit_display_images, to_display_images
    from lightning_rollout.sinks import MLflowImageSink, WandbImageSink

    wandb = pytest.importorskip("wandb")
    display = fit_display_images(to_display_images(photographs(), [0.5], [0.5]), 128)
    generator = torch.Generator().manual_seed(0)
    history = [(f"e{i}", torch.rand(8, 14, 14, generator=generator)) for i in range(10)]
    classes = torch.arange(8) % 4
    scores = torch.rand(8, 4, generator=generator).softmax(-1)
    labels = captions("multiclass", tasks.Panels(torch.arange(8), classes), classes, scores, None)
    pictures = [
        render_samples(display, history[-1][1], labels, "jet", 0.5),
        render_filmstrips(display, history, "jet", 0.5),
    ]

    sizes = {"mlflow": 0, "wandb": 0}

    class Client:
        def log_image(self, *args, **kwargs):
            raise AssertionError("JPEG goes through log_artifact")

        def log_artifact(self, run_id, path, artifact_path):
            if "+compressed" not in path:
                sizes["mlflow"] += os.path.getsize(path)

    class Logger:
        run_id, experiment = "run", Client()

        def log_image(self, key, images, step, **kwargs):
            for image, file_type in zip(images, kwargs["file_type"]):
                sizes["wandb"] += os.path.getsize(wandb.Image(image, file_type=file_type)._path)

    for picture in pictures:
        MLflowImageSink(Logger()).log_image("attention/rollout/x", picture, 3)
        WandbImageSink(Logger()).log_image("attention/rollout/x", picture, 3)
    assert 0 < sizes["mlflow"] <= BUDGET and 0 < sizes["wandb"] <= BUDGET, sizes
