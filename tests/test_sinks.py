import io

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from torch.utils.tensorboard import SummaryWriter

from lightning_rollout.sinks import ImageSink, PNGImageSink, TensorBoardImageSink


def _image(height: int, width: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


class _RecordingWriter:
    def __init__(self):
        self.calls = []

    def add_image(self, *args, **kwargs):
        self.calls.append((args, kwargs))


def test_sinks_satisfy_the_protocol(tmp_path):
    assert isinstance(TensorBoardImageSink(_RecordingWriter()), ImageSink)
    assert isinstance(PNGImageSink(tmp_path), ImageSink)


def test_tensorboard_sink_passes_hwc_to_the_writer():
    writer = _RecordingWriter()
    image = _image(2, 3, seed=0)
    TensorBoardImageSink(writer).log_image("a/b", image, step=7)
    ((args, kwargs),) = writer.calls
    assert args[0] == "a/b" and args[1] is image
    assert kwargs == {"global_step": 7, "dataformats": "HWC"}


def test_tensorboard_sink_round_trip(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    sink = TensorBoardImageSink(writer, image_format="png")  # lossless: the pixels come back exactly
    images = {0: _image(6, 10, seed=0), 5: _image(6, 10, seed=1)}
    for step, image in images.items():
        sink.log_image("rollout/overlays", image, step=step)
    sink.log_image("chefer/overlays", _image(4, 8, seed=2), step=0)
    writer.close()

    accumulator = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.IMAGES: 0})
    accumulator.Reload()
    assert sorted(accumulator.Tags()["images"]) == ["chefer/overlays", "rollout/overlays"]
    events = accumulator.Images("rollout/overlays")
    assert [event.step for event in events] == [0, 5]
    for event in events:
        assert (event.width, event.height) == (10, 6)
        decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(decoded, images[event.step])
    (chefer,) = accumulator.Images("chefer/overlays")
    assert (chefer.width, chefer.height) == (8, 4)


def test_tensorboard_sink_writes_jpeg_by_default(tmp_path):
    writer = SummaryWriter(log_dir=str(tmp_path))
    smooth = np.repeat(np.repeat(_image(4, 4, seed=3), 8, axis=0), 8, axis=1)  # 32 x 32 blocks
    TensorBoardImageSink(writer).log_image("rollout/overlays", smooth, step=1)
    writer.close()
    accumulator = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={event_accumulator.IMAGES: 0})
    accumulator.Reload()
    (event,) = accumulator.Images("rollout/overlays")
    assert event.encoded_image_string[:3] == b"\xff\xd8\xff"
    decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")).astype(float)
    assert np.abs(decoded - smooth).mean() < 12, "close (colour subsampling blurs the block edges); unrelated: ~85"
    with pytest.raises(ValueError, match=r"`image_format` must be one of \['jpeg', 'png'\], got 'gif'"):
        TensorBoardImageSink(writer, image_format="gif")


def test_png_sink_writes_readable_files(tmp_path):
    sink = PNGImageSink(tmp_path / "pngs")
    assert sink.root == tmp_path / "pngs"
    image = _image(5, 7, seed=3)
    sink.log_image("rollout/sample 0", image, step=12)
    path = tmp_path / "pngs" / "rollout" / "sample_0" / "step_00000012.png"
    assert path.is_file()
    with Image.open(path) as png:
        assert png.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(png), image)


def test_png_sink_overwrites_the_same_step(tmp_path):
    sink = PNGImageSink(str(tmp_path))
    sink.log_image("tag", _image(2, 2, seed=0), step=1)
    second = _image(2, 2, seed=1)
    sink.log_image("tag", second, step=1)
    with Image.open(tmp_path / "tag" / "step_00000001.png") as png:
        np.testing.assert_array_equal(np.asarray(png), second)


@pytest.mark.parametrize(
    ("tag", "folder"),
    [
        ("a/b/c", "a/b/c"),
        ("/lead//double/", "lead/double"),
        ("odd:na*me?", "odd_na_me_"),
        ("../escape", "_/escape"),
        ("ok-name_1.0", "ok-name_1.0"),
    ],
)
def test_png_sink_maps_tags_to_folders(tmp_path, tag, folder):
    PNGImageSink(tmp_path).log_image(tag, _image(1, 1, seed=0), step=0)
    assert (tmp_path / folder / "step_00000000.png").is_file()


@pytest.mark.parametrize(
    ("tag", "image", "step", "error", "match"),
    [
        ("", np.zeros((1, 1, 3), np.uint8), 0, ValueError, "`tag` must be a non-empty str"),
        ("t", [[0]], 0, TypeError, "`image` must be a numpy array"),
        ("t", np.zeros((1, 1, 3), np.float32), 0, ValueError, r"`image` must be uint8 .* float32 \(1, 1, 3\)"),
        ("t", np.zeros((1, 1), np.uint8), 0, ValueError, r"`image` must be uint8 .* \(1, 1\)"),
        ("t", np.zeros((1, 1, 3), np.uint8), -1, ValueError, "`step` must be an int >= 0, got -1"),
    ],
    ids=["tag", "image-type", "image-dtype", "image-shape", "step"],
)
def test_sink_errors(tmp_path, tag, image, step, error, match):
    for sink in (PNGImageSink(tmp_path), TensorBoardImageSink(_RecordingWriter())):
        with pytest.raises(error, match=match):
            sink.log_image(tag, image, step)


def test_tensorboard_sink_rejects_writers_without_add_image():
    with pytest.raises(TypeError, match="`writer` must have an `add_image` method .* got object"):
        TensorBoardImageSink(object())
