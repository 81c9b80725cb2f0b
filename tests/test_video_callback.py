"""The callback on a video model: 5-D batches with per-frame masks → frame strips, the time-pooled filmstrip,
per-frame localisation scalars; bad clips stop the run before training. A tiny VideoMAE, 2 epochs on CPU."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

transformers = pytest.importorskip("transformers")
pl = pytest.importorskip("lightning.pytorch")

from lightning_helpers import read_events

from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.monitor.settings import MonitorSettings
from lightning_rollout.monitor.side_pass import Runtime
from lightning_rollout.monitor.step import MapLogger
from lightning_rollout.rendering.video import overlay_frames, render_clip_strips, strip_slices


class MovingSquares(Dataset):
    """Clips (4 frames of 32 px) of a bright square moving right; per-frame masks of the square."""

    def __init__(self, size: int = 8, seed: int = 0, frames: int = 4, flat: bool = False):
        generator = torch.Generator().manual_seed(seed)
        self.clips = torch.randn(size, frames, 3, 32, 32, generator=generator) * 0.1
        self.masks = torch.zeros(size, frames, 32, 32)
        for t in range(frames):
            self.masks[:, t, 8:16, 4 + 4 * t : 12 + 4 * t] = 1
        self.clips += self.masks[:, :, None]
        self.labels = torch.randint(0, 3, (size,), generator=generator)
        self.flat = flat

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        clip = self.clips[index][0] if self.flat else self.clips[index]
        return clip, self.labels[index], self.masks[index]


class VideoModule(pl.LightningModule):
    def __init__(self, flat_validation: bool = False):
        super().__init__()
        torch.manual_seed(0)
        config = transformers.VideoMAEConfig(
            image_size=32,
            patch_size=8,
            num_frames=4,
            tubelet_size=2,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=3,
        )
        self.model = transformers.VideoMAEForVideoClassification(config)
        self.flat_validation = flat_validation

    def forward(self, clips):
        return self.model(clips).logits

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        pass

    def train_dataloader(self):
        return DataLoader(MovingSquares(8, seed=1), batch_size=4)

    def val_dataloader(self):
        return DataLoader(MovingSquares(4, seed=2, flat=self.flat_validation), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(tmp_path, module, **callback_kwargs):
    callback = AttentionRolloutCallback(
        methods=["rollout", "grad_rollout"], num_samples=2, faithfulness_steps=0, **callback_kwargs
    )
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=pl.loggers.TensorBoardLogger(str(tmp_path)),
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=1,
    )
    trainer.fit(module)
    return callback


def test_callback_logs_frame_strips_pooled_filmstrips_and_per_frame_scalars(tmp_path):
    callback = _fit(tmp_path, VideoModule())
    events = read_events(str(tmp_path))
    images = set(events.Tags()["images"])
    for method in ("rollout", "grad_rollout"):
        assert {f"attention/{method}/samples", f"attention/{method}/filmstrip"} <= images
        scalars = set(events.Tags()["scalars"])
        assert {
            f"attention/{method}/energy",
            f"attention/{method}/pointing_game",
            f"attention/{method}/frames/energy_00",
            f"attention/{method}/frames/pointing_game_03",
        } <= scalars
        columns = callback.history.columns(method)
        assert [c.label for c in columns] == ["init", "e0 s2", "e1 s4"]
        assert columns[0].maps.shape == (2, 4, 4)  # the map pooled over time (mean of the T'=2 slices)
    assert callback.fixed_batch.images.shape == (2, 4, 3, 32, 32) and callback.fixed_batch.masks.shape == (2, 4, 32, 32)
    area = events.Scalars("attention/mask_area")[0].value
    assert area == pytest.approx(64 / 1024)


def test_a_4d_batch_to_a_video_model_stops_the_run_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"must be a batch of clips \(B, T, C, H, W\) for the video model"):
        _fit(tmp_path, VideoModule(flat_validation=True))


def test_strip_shows_one_frame_per_slice_and_videos_reach_sinks_that_take_them():
    clips = np.zeros((1, 4, 8, 8, 3), dtype=np.uint8)
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0
    maps[0, 1, 1, 1] = 0.5
    strip = render_clip_strips(clips, maps, 2, [["label"]], "jet", 1.0)
    assert strip.ndim == 3 and strip.dtype == np.uint8
    assert strip_slices(8, 4) == [0, 2, 5, 7] and strip_slices(3, 8) == [0, 1, 2]
    frames = overlay_frames(clips[0], maps[0], 2, "gray", 1.0)  # one colour scale for the clip: slice 1 is dimmer
    assert frames.shape == (4, 8, 8, 3)
    assert np.array_equal(frames[0], frames[1]) and frames[0].max() == 255 and 0 < frames[2].max() < 255

    class VideoSink:
        def __init__(self):
            self.images, self.videos = [], []

        def log_image(self, tag, image, step, caption=None):
            self.images.append(tag)

        def can_log_video(self):
            return True

        def log_video(self, tag, frames, step):
            self.videos.append((tag, frames.shape))

    module = VideoModule()
    logger = MapLogger(MonitorSettings(methods=["rollout"], num_samples=2, faithfulness_steps=0))
    logger.setup(module)
    logger.keeper.collect(next(iter(module.val_dataloader())), 0, True)
    sink, scalars = VideoSink(), {}
    assert logger.log(Runtime(torch.device("cpu")), module, [sink], lambda values, step: scalars.update(values), 0, "x")
    assert sink.images == ["attention/rollout/samples", "attention/rollout/filmstrip"]
    assert sink.videos == [("attention/rollout/video", (4, 32, 64, 3))]  # 4 frames, the 2 samples side by side
    assert 0 <= scalars["attention/rollout/frames/energy_02"] <= 1
