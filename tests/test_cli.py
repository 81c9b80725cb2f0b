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
from torch.utils.data import DataLoader, Subset

from lightning_helpers import read_events
from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.cli import main
from lightning_rollout.cli.replay_cmd import keep_samples, replay_runtime, validation_batches
from lightning_rollout.demo import SyntheticScenes, SyntheticScenesDataModule, TimmClassifier
from lightning_rollout.methods import HEAD_FUSIONS, METHODS, method_class, method_summaries
from lightning_rollout.rendering.images import to_display_images
from lightning_rollout.monitor.step import MapLogger
from lightning_rollout.rendering.figures import overlays

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
         "argument --method: invalid choice: 'attention_map' (choose from 'rollout', 'grad_rollout'"),
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
        (["{ckpt}", "--config", "{config}", "--method", "no_such_method"],
         "argument --method: invalid choice: 'no_such_method'"),
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
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _help_in_a_fresh_process(command):
    """`python -m lightning_rollout COMMAND --help`: its output and the top-level packages it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "lightning_rollout", *command, "--help"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "usage: lightning-rollout" in result.stdout
    imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines() if "|" in line}
    assert "lightning_rollout" in imported
    return result.stdout, imported


def test_top_level_help_imports_no_heavy_package():
    text, imported = _help_in_a_fresh_process([])
    assert "explain" in text and "replay" in text
    assert not imported & set(HEAVY), f"--help imported {sorted(imported & set(HEAVY))}"


@pytest.mark.parametrize("command", ["explain", "replay"])
def test_sub_command_help_imports_the_method_registry_but_no_framework(command):
    """A sub-command's help lists the registry's methods (torch), yet stays clear of Lightning, timm and
    transformers, which only running it needs."""
    text, imported = _help_in_a_fresh_process([command])
    assert "torch" in imported
    framework = imported & {"lightning", "pytorch_lightning", "timm", "transformers"}
    assert not framework, f"{command} --help imported {sorted(framework)}"
    text = " ".join(text.split())
    for method in METHODS:  # the built-in methods, as a fresh process registers them
        assert f"{method} {' '.join(method_class(method).summary.split())}" in text


def test_help_lists_every_method_with_its_summary_and_the_head_fusions(capsys):
    texts = {}
    for command in ("explain", "replay"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        texts[command] = " ".join(capsys.readouterr().out.split())
        for method, summary in method_summaries().items():  # those registered now, not only the built-in ones
            assert f"{method} {' '.join(summary.split())}" in texts[command], f"{command} --help lacks {method!r}"
    assert f"--head-fusion {{{','.join(HEAD_FUSIONS)}}}" in texts["explain"]
    assert f"how rollout fuses the heads: {', '.join(HEAD_FUSIONS)} (default: mean)" in texts["explain"]


RENAMED_ROLLOUT = """
import sys
from lightning_rollout.cli import main
from lightning_rollout.methods import method_class, register_method


class RenamedRollout(method_class("rollout")):
    name = "cli_test_rollout"
    summary = "rollout under another name, registered at run time by tests/test_cli.py"


register_method(RenamedRollout)
try:
    main(["explain", "--help"])
except SystemExit:
    pass
sys.exit(main(["explain", sys.argv[1], "--model", "vit_tiny_patch16_224", "--image-size", "32", "--num-classes", "3",
               "--method", "rollout", "cli_test_rollout", "--output", sys.argv[2]]))
"""


def test_a_method_registered_at_run_time_is_listed_and_accepted(image_files, tmp_path):
    """In a fresh process, so that the method does not stay registered for the other tests (the registry has
    no public way to remove one)."""
    folder, _ = image_files
    result = subprocess.run([sys.executable, "-c", RENAMED_ROLLOUT, str(folder / "a.png"), str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "cli_test_rollout rollout under another name, registered at run time by tests/test_cli.py" in text
    with Image.open(tmp_path / "a_cli_test_rollout.png") as ours, Image.open(tmp_path / "a_rollout.png") as theirs:
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_the_package_is_lazy_and_explain_stays_the_function():
    code = ("import sys, types, lightning_rollout; assert 'torch' not in sys.modules; "
            "import lightning_rollout.callbacks; from lightning_rollout import AttentionRolloutCallback, explain; "
            "assert not isinstance(explain, types.ModuleType) and explain.__name__ == 'explain'; "
            "assert lightning_rollout.explain is explain")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
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


class ClassSortedScenes(SyntheticScenesDataModule):
    """The demo scenes with the validation set sorted by class: every sample of class 0 first, then class 1..."""

    def val_dataloader(self):
        order = sorted(range(len(self.val_set)), key=lambda index: self.val_set[index][1])
        return DataLoader(Subset(self.val_set, order), batch_size=self.batch_size)


SORTED_DATA = dict(image_size=32, num_classes=3, num_train=4, num_val=24, batch_size=4)
SORTED_CALLBACK = dict(methods=["rollout"], num_samples=6, log_initial_maps=False, mean=[0.5] * 3, std=[0.5] * 3)


def test_replay_keeps_the_samples_the_callback_keeps_on_a_class_sorted_validation_set(tmp_path):
    """The sanity check (2 batches of 4) meets class 0 only: the callback waits for the first validation
    epoch and spreads its 6 samples over the 3 classes; replay must keep the same, not six of class 0."""
    data = ClassSortedScenes(**SORTED_DATA)
    sanity_labels = [label for _, labels, _ in list(data.val_dataloader())[:2] for label in labels.tolist()]
    assert set(sanity_labels) == {0}, "the test needs a sanity check that meets one class"
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(**SORTED_CALLBACK)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, logger=TensorBoardLogger(str(tmp_path), name="live", version=""),
        callbacks=[callback, ModelCheckpoint(dirpath=str(tmp_path / "checkpoints"))], enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(TimmClassifier(**MODEL), datamodule=data)
    assert callback.fixed_batch.labels.tolist() == [0, 1, 2, 0, 1, 2]

    config = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "max_epochs": 1, "callbacks": [
            {"class_path": "lightning_rollout.AttentionRolloutCallback", "init_args": SORTED_CALLBACK}]},
        "model": {"class_path": "lightning_rollout.demo.TimmClassifier", "init_args": MODEL},
        "data": {"class_path": f"{__name__}.ClassSortedScenes", "init_args": SORTED_DATA},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (checkpoint,) = (tmp_path / "checkpoints").iterdir()
    log_dir = tmp_path / "replay"
    assert main(["replay", str(checkpoint), "--config", str(tmp_path / "config.yaml"), "--log-dir", str(log_dir)]) == 0
    ours, theirs = read_events(str(log_dir)).Images("attention/rollout/samples"), read_events(trainer.log_dir).Images(
        "attention/rollout/samples")
    assert len(ours) == len(theirs) == 1 and ours[0].step == theirs[0].step
    decoded = [np.asarray(Image.open(io.BytesIO(e.encoded_image_string))) for e in (ours[0], theirs[0])]
    np.testing.assert_array_equal(*decoded)

    maps = MapLogger(AttentionRolloutCallback(**SORTED_CALLBACK).settings)  # replay's collection, step by step
    maps.setup(TimmClassifier(**MODEL), data.class_names)
    keep_samples(maps, data.val_dataloader(), config["trainer"])
    assert maps.keeper.batch.labels.tolist() == callback.fixed_batch.labels.tolist()
    torch.testing.assert_close(maps.keeper.batch.images, callback.fixed_batch.images)


@pytest.mark.parametrize(
    "trainer, expected",
    [
        ({}, (2, 5)),
        ({"num_sanity_val_steps": -1}, (5, 5)),
        ({"num_sanity_val_steps": 0}, (0, 5)),
        ({"limit_val_batches": 3}, (2, 3)),
        ({"limit_val_batches": 1, "num_sanity_val_steps": 4}, (1, 1)),
        ({"limit_val_batches": 0.5}, (2, 2)),
        ({"limit_val_batches": 1.0, "num_sanity_val_steps": 9}, (5, 5)),
        ({"limit_val_batches": 0}, (0, 0)),
    ],
)
def test_replay_takes_the_batches_lightning_takes(trainer, expected):
    assert validation_batches(DataLoader(range(10), batch_size=2), trainer) == expected


def test_replay_runs_under_the_configs_precision():
    model = torch.nn.Linear(2, 2)
    assert replay_runtime(None, torch.device("cpu"), model).forward_context is replay_runtime(
        "32-true", torch.device("cpu"), model).forward_context
    runtime = replay_runtime("bf16-mixed", torch.device("cpu"), model)
    with runtime.forward_context():
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    assert model(torch.ones(1, 2)).dtype == torch.float32  # mixed precision leaves the weights alone
    with pytest.raises(ValueError, match="precision 'no_such_precision' is not one replay knows"):
        replay_runtime("no_such_precision", torch.device("cpu"), model)
