"""``lightning-rollout explain`` and ``replay`` on checkpoints of a tiny run, against ``explain`` and the callback."""

import io
import os
import subprocess
import sys

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

from lightning_helpers import read_events
from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.cli import HEAD_FUSION_NAMES, METHOD_NAMES, main
from lightning_rollout.demo import SyntheticScenes, SyntheticScenesDataModule, TimmClassifier
from lightning_rollout.rendering import to_display_images
from lightning_rollout.report import overlays

CLASS_NAMES = ["red", "green", "blue"]
CALLBACK = dict(methods=["rollout", "gradcam"], num_samples=4, log_initial_maps=False, mean=[0.5] * 3,
                std=[0.5] * 3, class_names=CLASS_NAMES)
MODEL = dict(model_name="vit_tiny_patch16_224", num_classes=3, lr=0.003, warmup_epochs=0.0,
             model_kwargs=dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2))
DATA = dict(image_size=32, num_classes=3, num_train=48, num_val=8, batch_size=16)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-epoch run with the callback logging live to TensorBoard and a checkpoint per epoch, and its config."""
    root = tmp_path_factory.mktemp("run")
    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 3, "callbacks": [
            {"class_path": "lightning_rollout.AttentionRolloutCallback", "init_args": CALLBACK}]},
        "model": {"class_path": "lightning_rollout.demo.TimmClassifier", "init_args": MODEL},
        "data": {"class_path": "lightning_rollout.demo.SyntheticScenesDataModule", "init_args": DATA},
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    pl.seed_everything(0)
    checkpoints = ModelCheckpoint(dirpath=str(root / "checkpoints"), save_top_k=-1, every_n_epochs=1)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=3, logger=TensorBoardLogger(str(root), name="live", version=""),
        callbacks=[AttentionRolloutCallback(**CALLBACK), checkpoints], enable_progress_bar=False,
        enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(TimmClassifier(**MODEL), datamodule=SyntheticScenesDataModule(**DATA))
    paths = sorted(str(root / "checkpoints" / name) for name in os.listdir(root / "checkpoints"))
    assert len(paths) == 3
    return {"root": root, "config": str(config_path), "checkpoints": paths, "live": trainer.logger.log_dir}


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """Three demo scenes (32x32) as PNG, PNG and JPEG files in a folder with a sub-folder."""
    folder = tmp_path_factory.mktemp("images")
    (folder / "more").mkdir()
    scenes = SyntheticScenes(3, image_size=32, num_classes=3, split="test")
    names = ["a.png", "more/b.png", "c.jpg"]
    for index, name in enumerate(names):
        options = {"quality": 95} if name.endswith(".jpg") else {}
        Image.fromarray(scenes.render(index)[0]).save(folder / name, **options)
    return folder, names


def _expected_inputs(files):
    """The files read as the model's input (32 px, mean = std = 0.5)."""
    arrays = [np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255 for path in files]
    return (torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) - 0.5) / 0.5


def _expected_overlays(module, files, method):
    """The overlays ``explain`` gives for the files."""
    images = _expected_inputs(files)
    maps = explain(module, images, method)
    return overlays(to_display_images(images, [0.5] * 3, [0.5] * 3), maps, "jet", 0.5)


def test_explain_writes_rgb_overlays_equal_to_explain(run, image_files, tmp_path, capsys):
    folder, names = image_files
    checkpoint = run["checkpoints"][-1]
    status = main(["explain", str(folder), "--checkpoint", checkpoint, "--config", run["config"],
                   "--method", "rollout", "gradcam", "--crop-pct", "1", "--output", str(tmp_path), "--top-k", "2"])
    assert status == 0
    module = TimmClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    files = [folder / name for name in sorted(names)]  # the CLI's order: sorted paths under the folder
    for method in ("rollout", "gradcam"):
        expected = _expected_overlays(module, files, method)
        for name, overlay in zip(sorted(names), expected):
            written = tmp_path / os.path.dirname(name) / f"{os.path.splitext(os.path.basename(name))[0]}_{method}.png"
            with Image.open(written) as png:
                assert png.mode == "RGB"
                pixels = np.asarray(png)
            factor = pixels.shape[0] // 32
            assert factor >= 7 and pixels.shape == (32 * factor, 32 * factor, 3)
            np.testing.assert_array_equal(pixels[::factor, ::factor], overlay)
    captured = capsys.readouterr()
    assert "random weights" not in captured.err  # trained weights from the checkpoint: no warning
    lines = captured.out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(file) for file in files]
    for line, file in zip(lines, files):  # top-2 with the config's class names and their probabilities
        images = _expected_inputs([file])
        top = module(images).softmax(-1)[0].topk(2)
        names = [CLASS_NAMES[i] for i in top.indices.tolist()]
        assert line == f"{file}: {names[0]} {top.values[0]:.3f}, {names[1]} {top.values[1]:.3f}"


def test_explain_module_class_and_category(run, image_files, tmp_path):
    folder, _ = image_files
    main(["explain", str(folder / "a.png"), "--checkpoint", run["checkpoints"][0], "--module-class",
          "lightning_rollout.demo.TimmClassifier", "--method", "grad_rollout", "--category", "2", "--crop-pct", "1",
          "--output", str(tmp_path)])
    module = TimmClassifier.load_from_checkpoint(run["checkpoints"][0], map_location="cpu").eval()
    images = _expected_inputs([folder / "a.png"])
    maps = explain(module, images, "grad_rollout", target=2)
    expected = overlays(to_display_images(images, [0.5] * 3, [0.5] * 3), maps, "jet", 0.5)[0]
    with Image.open(tmp_path / "a_grad_rollout.png") as png:
        pixels = np.asarray(png)
    np.testing.assert_array_equal(pixels[:: pixels.shape[0] // 32, :: pixels.shape[0] // 32], expected)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{bad}", "--checkpoint", "{ckpt}", "--config", "{config}"], "{bad}' is not a readable image"),
        (["{good}", "--checkpoint", "{ckpt}", "--config", "{config}", "--category", "3"],
         "--category 3 is out of range: the model has 3 classes"),
        (["{good}", "--checkpoint", "{config}", "--config", "{config}"], "--checkpoint '{config}' cannot be read"),
        (["{good}", "--checkpoint", "{ckpt}", "--model", "vit_tiny_patch16_224", "--num-classes", "3"],
         "--checkpoint '{ckpt}' does not fit the model"),
        (["{good}", "--checkpoint", "{ckpt}"], "say how to build its model"),
        (["{good}"], "give the model"),
        (["{good}", "--model", "no_such_model"], "--model 'no_such_model' is not a timm model name"),
        (["{missing}", "--model", "vit_tiny_patch16_224"], "PATH '{missing}' does not exist"),
        (["{good}", "--model", "resnet18", "--method", "rollout"],
         "--method rollout: ResNet has no global token attention"),
        (["{good}", "--model", "vit_tiny_patch16_224", "--method", "rollout", "attention_map"],
         "--method 'attention_map' is not a method; choose from rollout, grad_rollout"),
        (["{good}", "--model", "vit_tiny_patch16_224", "--head-fusion", "sum"],
         "argument --head-fusion: invalid choice: 'sum'"),
        (["{good}", "--model", "vit_tiny_patch16_224", "--top-k", "0"], "argument --top-k: must be an int >= 1, got 0"),
        (["--model", "vit_tiny_patch16_224"], "the following arguments are required: PATH"),
        (["{good}", "--model", "vit_tiny_patch16_224", "--image-size", "32", "--output", "{file}"],
         "--output '{file}' cannot be created"),
    ],
)
def test_explain_errors_are_one_line_with_exit_status_2(run, image_files, tmp_path, capsys, arguments, message):
    folder, _ = image_files
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    values = dict(bad=str(bad), good=str(folder / "a.png"), ckpt=run["checkpoints"][0], config=run["config"],
                  missing=str(tmp_path / "missing.png"), file=run["config"])
    arguments = [argument.format(**values) for argument in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_info:
        main(["explain"] + arguments)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("lightning-rollout explain: error: ") and message.format(**values) in err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["{ckpt}"], "the following arguments are required: --config"),
        (["{ckpt}", "--config", "{missing}"], "--config '{missing}' cannot be read"),
        (["{ckpt}", "--config", "{config}", "--method", "no_such_method"], "--method 'no_such_method' is not a method"),
    ],
)
def test_replay_errors_are_one_line_with_exit_status_2(run, tmp_path, capsys, arguments, message):
    values = dict(ckpt=run["checkpoints"][0], config=run["config"], missing=str(tmp_path / "missing.yaml"))
    with pytest.raises(SystemExit) as exit_info:
        main(["replay"] + [argument.format(**values) for argument in arguments] + ["--log-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("lightning-rollout replay: error: ")
    assert message.format(**values) in err


def test_explain_warns_about_random_weights(image_files, tmp_path, capsys):
    folder, _ = image_files
    assert main(["explain", str(folder / "a.png"), "--model", "vit_tiny_patch16_224", "--image-size", "32",
                 "--num-classes", "3", "--output", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: --model vit_tiny_patch16_224 without --pretrained or --checkpoint has random weights" in err
    assert (tmp_path / "a_rollout.png").is_file()


HEAVY = ("torch", "lightning", "pytorch_lightning", "timm", "transformers", "numpy", "matplotlib", "PIL")


@pytest.mark.parametrize("command", [[], ["explain"], ["replay"]])
def test_help_imports_no_heavy_package(command):
    # What keeps --help quick: it loads none of the heavy packages. Its time is measured, not asserted, by
    # benchmarks/bench_cli.py (bar 2 s of wall time on an idle machine).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lightning_rollout", *command, "--help"],
                            capture_output=True, text=True, cwd=root, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: lightning-rollout" in result.stdout
    if not command:
        assert "explain" in result.stdout and "replay" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "lightning_rollout" in imported
    assert not imported & set(HEAVY), f"--help imported {sorted(imported & set(HEAVY))}"


def test_help_lists_every_method_and_head_fusion(capsys):
    from lightning_rollout.methods import HEAD_FUSIONS, METHODS

    with pytest.raises(SystemExit):
        main(["explain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for method in METHODS:
        assert method in text, f"--method's help does not name {method!r}: add it to cli.METHOD_NAMES"
    assert set(METHOD_NAMES) <= set(METHODS)
    assert tuple(HEAD_FUSION_NAMES) == tuple(HEAD_FUSIONS)


def test_the_package_is_lazy_and_explain_stays_the_function():
    code = ("import sys, types, lightning_rollout; assert 'torch' not in sys.modules; "
            "import lightning_rollout.callback; from lightning_rollout import AttentionRolloutCallback, explain; "
            "assert not isinstance(explain, types.ModuleType) and explain.__name__ == 'explain'; "
            "assert lightning_rollout.explain is explain")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0, result.stderr


def test_replay_logs_what_the_live_callback_logged(run, tmp_path):
    log_dir = tmp_path / "replay"
    shuffled = [run["checkpoints"][i] for i in (2, 0, 1)]
    assert main(["replay", *shuffled, "--config", run["config"], "--log-dir", str(log_dir)]) == 0
    live, replay = read_events(run["live"]), read_events(str(log_dir))
    for method in CALLBACK["methods"]:
        for kind in ("samples", "filmstrip"):
            tag = f"attention/{method}/{kind}"
            ours, theirs = replay.Images(tag), live.Images(tag)
            assert [e.step for e in ours] == [e.step for e in theirs] == [3, 6, 9]
            for mine, reference in zip(ours, theirs):
                decoded = [np.asarray(Image.open(io.BytesIO(e.encoded_image_string))) for e in (mine, reference)]
                np.testing.assert_array_equal(*decoded)
        widths = [e.width for e in replay.Images(f"attention/{method}/filmstrip")]
        assert widths[0] < widths[1] < widths[2], "one filmstrip column per checkpoint"
        for name in ("entropy", "energy", "pointing_game"):
            tag = f"attention/{method}/{name}"
            assert [(s.step, s.value) for s in replay.Scalars(tag)] == [(s.step, s.value) for s in live.Scalars(tag)]


def test_replay_rejects_a_file_that_is_no_checkpoint(run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["replay", run["config"], "--config", run["config"], "--log-dir", str(tmp_path)])
    assert f"CHECKPOINT '{run['config']}' cannot be read" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["state_dict", "lightning_prefixed"])
def test_explain_plain_state_dict_with_a_timm_name(image_files, tmp_path, layout):
    import timm

    folder, _ = image_files
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32, depth=2).eval()
    state = model.state_dict()
    if layout == "lightning_prefixed":  # a LightningModule holding the timm model as `self.model`
        state = {"state_dict": {f"model.{key}": value for key, value in state.items()}, "global_step": 3}
    torch.save(state, tmp_path / "weights.pth")
    # depth is not a CLI option: a 12-block model with the 2-block weights must not load
    with pytest.raises(SystemExit):
        main(["explain", str(folder / "a.png"), "--checkpoint", str(tmp_path / "weights.pth"), "--model",
              "vit_tiny_patch16_224", "--num-classes", "3", "--image-size", "32", "--output", str(tmp_path)])
    model12 = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=32).eval()
    state = model12.state_dict()
    if layout == "lightning_prefixed":
        state = {"state_dict": {f"model.{key}": value for key, value in state.items()}, "global_step": 3}
    torch.save(state, tmp_path / "weights.pth")
    assert main(["explain", str(folder / "a.png"), "--checkpoint", str(tmp_path / "weights.pth"), "--model",
                 "vit_tiny_patch16_224", "--num-classes", "3", "--image-size", "32", "--crop-pct", "1",
                 "--mean", "0.5", "0.5", "0.5", "--std", "0.5", "0.5", "0.5", "--output", str(tmp_path)]) == 0
    expected = _expected_overlays(model12, [folder / "a.png"], "rollout")[0]
    with Image.open(tmp_path / "a_rollout.png") as png:
        pixels = np.asarray(png)
    np.testing.assert_array_equal(pixels[:: pixels.shape[0] // 32, :: pixels.shape[0] // 32], expected)
