"""Every config in configs/ parses; the demo pipeline runs end to end and logs images and scalars."""

import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lightning_helpers import read_events

import train_demo
from lightning_rollout import AttentionRolloutCallback
from lightning_rollout.data.linking import LinkedLightningCLI
from lightning_rollout.methods import METHODS

# LightningCLI configs of train_demo.py (hf_trainer_demo.yaml configures examples/hf_trainer_demo.py instead).
CONFIGS = sorted(c for c in glob.glob(os.path.join(ROOT, "configs", "*.yaml")) if "hf_trainer" not in c)


def test_the_required_configs_exist():
    names = {os.path.basename(path) for path in CONFIGS}
    assert {
        "demo.yaml",
        "registers.yaml",
        "distilled.yaml",
        "non_square.yaml",
        "vit_s16_gpu.yaml",
        "image_folder.yaml",
    } <= names


@pytest.mark.parametrize("config", CONFIGS, ids=os.path.basename)
def test_print_config(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_demo.main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "lightning_rollout.AttentionRolloutCallback" in printed and "class_path" in printed


@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if "gpu" not in c and "image_folder" not in c], ids=os.path.basename
)
def test_configs_instantiate(config, tmp_path):
    cli = LinkedLightningCLI(
        args=["--config", config, f"--trainer.default_root_dir={tmp_path}"], run=False, auto_configure_optimizers=False
    )
    callbacks = [c for c in cli.trainer.callbacks if isinstance(c, AttentionRolloutCallback)]
    assert len(callbacks) == 1
    assert set(callbacks[0].settings.methods) == {"rollout", "grad_rollout", "chefer", "gradcam"}
    assert cli.model.hparams.num_classes == getattr(cli.datamodule, "num_classes", 4) == 4
    callbacks[0].setup(cli.trainer, cli.model, "fit")  # the model check the callback runs before training


def test_short_demo_run_logs_images_and_scalars(tmp_path, capsys):
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    cli = train_demo.main(
        [
            "fit",
            "--config",
            demo,
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--data.init_args.num_train=128",
            "--data.init_args.num_val=16",
            "--data.init_args.batch_size=16",
        ]
    )
    assert "tensorboard --logdir" in capsys.readouterr().out
    events = read_events(cli.trainer.logger.log_dir)
    for method in ("rollout", "grad_rollout", "chefer", "gradcam"):
        assert [e.step for e in events.Images(f"attention/{method}/samples")] == [0, 8]
        assert [e.step for e in events.Images(f"attention/{method}/filmstrip")] == [0, 8]
        assert len(events.Scalars(f"attention/{method}/energy")) == 2
        assert len(events.Scalars(f"attention/{method}/pointing_game")) == 2
        assert len(events.Scalars(f"attention/{method}/deletion_auc")) == 2
    # The demo keeps last.ckpt; the evaluation command explains validation samples with it.
    checkpoint = os.path.join(cli.trainer.logger.log_dir, "checkpoints", "last.ckpt")
    out_dir = tmp_path / "evaluation"
    rows = train_demo.main(
        [
            "evaluate",
            "--config",
            demo,
            "--ckpt_path",
            checkpoint,
            "--num_samples",
            "12",
            "--steps",
            "4",
            f"--out_dir={out_dir}",
            "--data.init_args.num_train=16",
            "--data.init_args.num_val=16",
            "--data.init_args.batch_size=8",
        ]
    )
    # every registered method, not only the four the config's callback logs; SaCo with the callback's 10 groups
    assert [row["name"] for row in rows] == [*METHODS, "random", "uniform"]
    assert "legrad" in METHODS
    assert all(row["energy"] is not None and row["saco"] is not None for row in rows)
    printed = capsys.readouterr().out
    assert "12 validation samples" in printed and "| grad_rollout |" in printed
    assert "baseline 0.0, SaCo 10 groups" in printed  # the demo config's callback's faithfulness_baseline
    assert (out_dir / "evaluation.md").read_text() in printed


def test_tensorboard_serves_the_demo_images_and_scalars(tmp_path):
    """A real TensorBoard server on loopback, started on a short demo run's log directory."""
    import json
    import socket
    import subprocess
    import time
    import urllib.parse
    import urllib.request

    train_demo.main(
        [
            "fit",
            "--config",
            os.path.join(ROOT, "configs", "demo.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.max_epochs=1",
            "--data.init_args.num_train=64",
            "--data.init_args.num_val=8",
            "--data.init_args.batch_size=16",
        ]
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorboard.main",
            "--logdir",
            str(tmp_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--samples_per_plugin",
            "images=100",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tags = None
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/tags", timeout=2) as reply:
                    tags = json.load(reply)
                if tags:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert tags, "TensorBoard did not answer"
        (run_tags,) = tags.values()
        assert {"attention/grad_rollout/samples", "attention/grad_rollout/filmstrip"} <= set(run_tags)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as reply:
            (scalar_tags,) = json.load(reply).values()
        assert {"attention/grad_rollout/energy", "attention/grad_rollout/pointing_game"} <= set(scalar_tags)
        (run,) = tags
        query = urllib.parse.urlencode({"run": run, "tag": "attention/grad_rollout/filmstrip", "sample": 0})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/images/images?{query}", timeout=5) as reply:
            images = json.load(reply)
        assert [image["step"] for image in images] == [0, 4]
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/data/plugin/images/individualImage?{images[-1]['query']}", timeout=5
        ) as reply:
            assert reply.read(3) == b"\xff\xd8\xff"  # JPEG, as the callback logs it
    finally:
        server.terminate()
        server.wait(timeout=30)


# ---------------------------------------------------------------- issue 19, defect 6: the class count is linked

FOLDERS = ["ant", "bee", "cat", "dog", "eel"]


def _image_folder(root, classes=FOLDERS, per_class=2):
    """``root/{train,val}/<class>/*.png``: tiny random pictures, a few per class."""
    import numpy as np
    from PIL import Image

    for split in ("train", "val"):
        for number, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.random.default_rng((number, i)).integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _tiny_image_folder_run(root, log_dir, *extra):
    """`configs/image_folder.yaml` as a new user runs it (only `--data.root`), made tiny and fast."""
    return [
        "fit",
        "--config",
        os.path.join(ROOT, "configs", "image_folder.yaml"),
        f"--data.root={root}",
        "--data.image_size=16",
        "--data.batch_size=4",
        "--data.num_workers=0",
        "--model.model_kwargs={img_size: 16, patch_size: 4, depth: 1, embed_dim: 16, num_heads: 2}",
        f"--trainer.default_root_dir={log_dir}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks.init_args.num_samples=5",
        "--trainer.callbacks.init_args.faithfulness_steps=0",
        *extra,
    ]


def test_image_folder_config_trains_with_only_the_root(tmp_path):
    root = _image_folder(tmp_path / "images")
    cli = train_demo.main(_tiny_image_folder_run(root, tmp_path / "logs"))
    assert cli.trainer.state.finished and cli.trainer.global_step == 2
    assert cli.model.hparams.num_classes == 5, "the class count comes from the folders, not the config"
    assert cli.model.model.get_classifier().out_features == 5
    (callback,) = [c for c in cli.trainer.callbacks if isinstance(c, AttentionRolloutCallback)]
    assert callback.maps.class_names == FOLDERS, "the captions name the folders"
    assert sorted(callback.fixed_batch.labels.tolist()) == [0, 1, 2, 3, 4]
    events = read_events(cli.trainer.logger.log_dir)
    assert [e.step for e in events.Images("attention/grad_rollout/samples")] == [0, 2]  # untrained, then epoch 0


def test_the_template_names_no_class_count():
    import yaml

    with open(os.path.join(ROOT, "configs", "image_folder.yaml")) as handle:
        config = yaml.safe_load(handle)
    assert "num_classes" not in config["model"]["init_args"]


def test_a_missing_image_folder_is_named_before_anything_is_built(tmp_path):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(FileNotFoundError, match=rf"`root`='{missing}' must hold a `train/` folder"):
        train_demo.main(_tiny_image_folder_run(missing, tmp_path / "logs"))


def test_the_link_follows_the_data_and_is_skipped_where_data_or_model_lack_num_classes(tmp_path):
    demo = os.path.join(ROOT, "configs", "demo.yaml")
    boring = "lightning.pytorch.demos.boring_classes"
    common = [f"--trainer.default_root_dir={tmp_path}", "--trainer.callbacks=[]", "--trainer.logger=false"]

    def build(*args):
        return LinkedLightningCLI(args=["--config", demo, *common, *args], run=False, auto_configure_optimizers=False)

    assert build().model.hparams.num_classes == 4
    assert build("--data.init_args.num_classes=3").model.hparams.num_classes == 3
    # A data module without `num_classes`: the model keeps the config's value.
    kept = build(f"--data={boring}.BoringDataModule", "--model.init_args.num_classes=7")
    assert kept.model.hparams.num_classes == 7
    # A model without a `num_classes` argument: nothing to link into.
    assert type(build(f"--model={boring}.BoringModel").model).__name__ == "BoringModel"
