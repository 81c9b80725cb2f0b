"""The callback's pictures in W&B (offline run files) and MLflow (SQLite store), read back with the real clients."""

import glob
import json
import os
import re
from collections import defaultdict

import lightning.pytorch as pl
import numpy as np
import pytest
from lightning.pytorch.loggers import CSVLogger
from lightning_helpers import finished_wandb_records, make_module_class
from PIL import Image

from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.sinks import MLflowImageSink, TensorBoardImageSink, WandbImageSink, sink_for_logger

Module = make_module_class(pl.LightningModule)
METHODS = ["rollout", "gradcam"]
STEPS = [0, 4, 8]  # the untrained model, then the end of each of 2 epochs of 4 steps


@pytest.fixture
def wandb(monkeypatch, tmp_path):
    """wandb, offline and silent, with the run finished after the test (a run left open is reused)."""
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    yield wandb
    wandb.finish()


def _wandb_logger(tmp_path):
    from lightning.pytorch.loggers import WandbLogger

    return WandbLogger(offline=True, save_dir=str(tmp_path), project="lightning-rollout-test")


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    """One SQLite store for the module: creating its tables takes several seconds."""
    pytest.importorskip("mlflow")
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


def _mlflow_logger(tmp_path, uri):
    from lightning.pytorch.loggers import MLFlowLogger

    return MLFlowLogger(
        experiment_name=tmp_path.name, tracking_uri=uri, artifact_location=str(tmp_path / "mlflow-artifacts")
    )


def _fit(tmp_path, loggers):
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(methods=METHODS, num_samples=3, mean=[0.5] * 3, std=[0.5] * 3)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=loggers,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(Module())
    return trainer


def _wandb_history(save_dir):
    """{key: [(trainer/global_step, value)]} of the single offline run under ``save_dir``, and its folder."""
    (run_dir,) = glob.glob(os.path.join(save_dir, "wandb", "offline-run-*"))
    (log,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
    history = defaultdict(list)
    for record in finished_wandb_records(log):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        for key, value in row.items():
            history[key].append((row.get("trainer/global_step"), value))
    return history, run_dir


def _read_rgb(path):
    with Image.open(path) as image:
        assert image.mode == "RGB", f"{path} is {image.mode}"
        return np.asarray(image)


def _check_wandb(save_dir):
    history, run_dir = _wandb_history(save_dir)
    for method in METHODS:
        widths = []
        for kind in ("samples", "filmstrip"):
            key = f"attention/{method}/{kind}"
            entries = history[f"{key}/filenames"]
            assert [step for step, _ in entries] == STEPS, key
            captions = [value for _, value in history[f"{key}/captions"]]
            assert len(captions) == 3 and all(len(caption) == 1 for caption in captions)
            for _, (filename,) in entries:
                image = _read_rgb(os.path.join(run_dir, "files", filename))
                if kind == "filmstrip":
                    widths.append(image.shape[1])
        assert widths[0] < widths[1] < widths[2], "a filmstrip column per logged epoch"
        assert [step for step, _ in history[f"attention/{method}/entropy"]] == STEPS
    samples_captions = history["attention/rollout/samples/captions"][0][1][0]
    assert samples_captions.startswith("0: true: ") and "| 2: true: " in samples_captions
    assert history["attention/rollout/filmstrip/captions"][-1][1] == ["input | init | e0 s4 | e1 s8"]


_MLFLOW_IMAGE = re.compile(
    r"^images/(?P<key>.+)\+step\+(?P<step>\d+)\+timestamp\+\d+\+[0-9a-f-]+(?P<preview>\+compressed)?\.jpg$"
)


def _check_mlflow(logger):
    client = logger.experiment
    steps = defaultdict(list)
    previews = defaultdict(list)
    for artifact in client.list_artifacts(logger.run_id, "images"):
        match = _MLFLOW_IMAGE.match(artifact.path)
        assert match, f"{artifact.path} is not named as MLflow's image grid reads it"
        (previews if match["preview"] else steps)[match["key"]].append(int(match["step"]))
        local = client.download_artifacts(logger.run_id, artifact.path)
        with Image.open(local) as image:
            assert image.format == "JPEG" and image.mode == "RGB"
            assert max(image.size) <= 256 or not match["preview"]
    assert previews == steps, "one preview per picture"
    expected = {f"attention~{method}~{kind}": STEPS for method in METHODS for kind in ("samples", "filmstrip")}
    assert {key: sorted(value) for key, value in steps.items()} == expected
    entropy = client.get_metric_history(logger.run_id, "attention/rollout/entropy")
    assert sorted(metric.step for metric in entropy) == STEPS


def test_sink_for_logger_picks_the_native_sink(tmp_path, wandb, mlflow_uri):
    from lightning.pytorch.loggers import TensorBoardLogger

    assert isinstance(sink_for_logger(TensorBoardLogger(str(tmp_path))), TensorBoardImageSink)
    assert isinstance(sink_for_logger(_wandb_logger(tmp_path)), WandbImageSink)
    assert isinstance(sink_for_logger(_mlflow_logger(tmp_path, mlflow_uri)), MLflowImageSink)
    assert sink_for_logger(CSVLogger(str(tmp_path))) is None


def test_wandb_offline_run_holds_the_pictures_at_the_logged_steps(tmp_path, wandb):
    logger = _wandb_logger(tmp_path)
    _fit(tmp_path, logger)
    wandb.finish()
    _check_wandb(str(tmp_path))


def test_mlflow_run_lists_image_artifacts_per_step(tmp_path, mlflow_uri):
    logger = _mlflow_logger(tmp_path, mlflow_uri)
    _fit(tmp_path, logger)
    _check_mlflow(logger)


def test_every_attached_logger_gets_the_pictures(tmp_path, wandb, mlflow_uri):
    csv = CSVLogger(str(tmp_path), name="csv")
    mlflow = _mlflow_logger(tmp_path, mlflow_uri)
    with pytest.warns(UserWarning, match="CSVLogger cannot show images"):
        _fit(tmp_path, [_wandb_logger(tmp_path), mlflow, csv])
    wandb.finish()
    _check_wandb(str(tmp_path))
    _check_mlflow(mlflow)
    folder = os.path.join(csv.log_dir, "attention", "gradcam", "filmstrip")
    assert sorted(os.listdir(folder)) == [f"step_{step:08d}.png" for step in STEPS]


class _RecordingLogger:
    """Stands in for WandbLogger (``log_image``) and MLFlowLogger (``experiment.log_image``, ``run_id``)."""

    run_id = "run"

    def __init__(self):
        self.calls = []
        self.experiment = self

    def log_image(self, *args, **kwargs):
        self.calls.append((args, kwargs))


def test_wandb_and_mlflow_sinks_pass_key_step_and_caption():
    image = np.zeros((2, 3, 3), dtype=np.uint8)
    logger = _RecordingLogger()
    WandbImageSink(logger).log_image("a/b", image, 7, caption="c")
    MLflowImageSink(logger, image_format="png").log_image("a/b", image, 7, caption="ignored")
    (_, wandb_kwargs), ((run_id, mlflow_image), mlflow_kwargs) = logger.calls
    assert wandb_kwargs["key"] == "a/b" and wandb_kwargs["step"] == 7 and wandb_kwargs["caption"] == ["c"]
    assert wandb_kwargs["file_type"] == ["jpg"]
    np.testing.assert_array_equal(wandb_kwargs["images"][0], image)
    assert run_id == "run" and mlflow_kwargs == {"key": "a/b", "step": 7}
    np.testing.assert_array_equal(mlflow_image, image)


def test_wandb_and_mlflow_sinks_reject_bad_arguments():
    with pytest.raises(TypeError, match="must be a WandbLogger"):
        WandbImageSink(object())
    with pytest.raises(TypeError, match="must be an MlflowClient"):
        MLflowImageSink(type("Logger", (), {"experiment": object()})())
    for sink in (WandbImageSink(_RecordingLogger()), MLflowImageSink(_RecordingLogger())):
        with pytest.raises(ValueError, match="uint8 of shape"):
            sink.log_image("tag", np.zeros((2, 2), dtype=np.uint8), 0)
        with pytest.raises(ValueError, match="int >= 0"):
            sink.log_image("tag", np.zeros((2, 2, 3), dtype=np.uint8), -1)
