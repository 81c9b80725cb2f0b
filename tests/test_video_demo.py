"""The video demo's data (the class is the target's motion; per-frame masks) and a short run of its config."""

import os
import random
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lightning_helpers import read_events

import train_demo
from lightning_rollout.demo.clips import DIRECTIONS, MovingTargetClips, MovingTargetClipsDataModule


def test_deterministic_from_seed_split_and_index_and_global_rngs_untouched():
    state = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    first = MovingTargetClips(4, "val", seed=3).render(2)
    again = MovingTargetClips(4, "val", seed=3).render(2)
    other = MovingTargetClips(4, "train", seed=3).render(2)
    assert all(np.array_equal(a, b) for a, b in zip(first[::2], again[::2])) and first[1] == again[1]
    assert not np.array_equal(first[0], other[0])
    assert torch.equal(state[0], torch.get_rng_state()) and np.array_equal(state[1], np.random.get_state()[1])
    assert state[2] == random.getstate()


@pytest.mark.parametrize("index", range(8))
def test_the_mask_moves_with_the_label_and_everything_else_stands_still(index):
    clips = MovingTargetClips(8, "val", speed=3.0, noise=0.0)
    frames, label, masks = clips.render(index)
    assert masks.shape == (8, 32, 32) and bool(masks.any(axis=(1, 2)).all())
    rows, cols = np.arange(32)[:, None], np.arange(32)[None, :]
    centres = np.array([[(rows * m).sum() / m.sum(), (cols * m).sum() / m.sum()] for m in masks])
    steps = np.diff(centres, axis=0)
    np.testing.assert_allclose(steps.mean(axis=0), 3.0 * np.array(list(DIRECTIONS.values())[label]), atol=0.5)
    # Outside the target's path no pixel changes from frame to frame (noise off): only the target moves.
    path = masks.any(axis=0)
    assert np.array_equal(frames[:, ~path], np.broadcast_to(frames[0, ~path], frames[:, ~path].shape))
    # The target's colour is drawn from the distractors' palette: pixels inside the mask are one colour.
    assert len({tuple(pixel) for pixel in frames[0][masks[0]]}) == 1


def test_batches_and_bad_arguments():
    data = MovingTargetClipsDataModule(num_train=8, num_val=4, batch_size=4)
    clips, labels, masks = next(iter(data.val_dataloader()))
    assert clips.shape == (4, 8, 3, 32, 32) and clips.dtype == torch.float32
    assert labels.shape == (4,) and masks.shape == (4, 8, 32, 32) and masks.dtype == torch.bool
    assert data.class_names == ["right", "left", "down", "up"]
    with pytest.raises(ValueError, match="needs 36 px, more than `image_size`=32"):
        MovingTargetClips(4, speed=4.0)


def test_short_video_demo_run_logs_strips_filmstrips_and_per_frame_scalars(tmp_path):
    config = os.path.join(ROOT, "configs", "video_demo.yaml")
    cli = train_demo.main(
        [
            "fit",
            "--config",
            config,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--data.init_args.num_train=32",
            "--data.init_args.num_val=8",
            "--data.init_args.batch_size=8",
        ]
    )
    events = read_events(cli.trainer.logger.log_dir)
    for method in ("rollout", "grad_rollout", "chefer", "gradcam"):
        assert [e.step for e in events.Images(f"attention/{method}/samples")] == [0, 4]
        assert [e.step for e in events.Images(f"attention/{method}/filmstrip")] == [0, 4]
        assert len(events.Scalars(f"attention/{method}/frames/energy_07")) == 2
