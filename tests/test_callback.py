"""AttentionRolloutCallback in real Trainer runs, read back from the TensorBoard event files."""

import os

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning_helpers import RandomScenes, make_module_class, read_events

import lightning_rollout.monitor.side_pass as side_pass
from lightning_rollout import AttentionRolloutCallback

ALL_METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
Module = make_module_class(pl.LightningModule)


def _trainer(tmp_path, callbacks, **kwargs):
    options = dict(
        max_epochs=2,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        deterministic=True,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=callbacks, **options)


def _steps(events, tag):
    return [event.step for event in events.Images(tag)]


def _hooks_and_flags(model):
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return hooks, [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]


def test_fit_logs_every_method_per_epoch_with_initial_maps(tmp_path):
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(methods=ALL_METHODS, num_samples=6, mean=[0.5] * 3, std=[0.5] * 3)
    trainer = _trainer(tmp_path, [callback], max_epochs=2)
    trainer.fit(Module())
    events = read_events(trainer.logger.log_dir)
    for method in ALL_METHODS:
        # step 0: the untrained model (after the sanity check, before training); then each epoch's end
        assert _steps(events, f"attention/{method}/samples") == [0, 4, 8]
        film = events.Images(f"attention/{method}/filmstrip")
        assert [e.step for e in film] == [0, 4, 8]
        assert film[1].width > film[0].width and film[2].width > film[1].width, "a column per logged epoch"
        assert len({(e.width, e.height) for e in events.Images(f"attention/{method}/samples")}) == 1
        for name in ("entropy", "energy", "pointing_game"):
            values = [s.value for s in events.Scalars(f"attention/{method}/{name}")]
            assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert events.Scalars("attention/mask_area")[0].value == pytest.approx(64 / 256)
    # 6 samples in panels of 4 columns: 2 rows, each at least 128 px; the filmstrip: a 96 px row per sample
    samples = events.Images("attention/rollout/samples")[0]
    assert samples.width > 4 * 2 * 128 and 2 * 128 < samples.height < 3 * 128 + 100
    assert events.Images("attention/rollout/filmstrip")[0].height >= 6 * 96


class NoMasks(Module):
    """Validation batches of images and labels only, as on a user's real data."""

    def val_dataloader(self):
        scenes = RandomScenes(16, seed=2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(scenes.images, scenes.labels), batch_size=4)


def test_faithfulness_scalars_without_masks(tmp_path):
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(methods=["rollout", "chefer"], num_samples=4, faithfulness_steps=4)
    off = AttentionRolloutCallback(methods=["rollout"], num_samples=4, faithfulness_steps=0, tag_prefix="off")
    zero = AttentionRolloutCallback(
        methods=["rollout"], num_samples=4, faithfulness_steps=4, faithfulness_baseline=0.0, tag_prefix="zero"
    )
    trainer = _trainer(tmp_path, [callback, off, zero], max_epochs=1)
    trainer.fit(NoMasks())
    events = read_events(trainer.logger.log_dir)
    scalars = events.Tags()["scalars"]
    for method in ("rollout", "chefer"):
        for name in ("deletion_auc", "insertion_auc"):
            values = [(s.step, s.value) for s in events.Scalars(f"attention/{method}/{name}")]
            assert [step for step, _ in values] == [0, 4] and all(0 < v < 1 for _, v in values)
        assert f"attention/{method}/energy" not in scalars
    assert not [tag for tag in scalars if tag.startswith("off/") and tag.endswith("_auc")]
    assert "off/rollout/entropy" in scalars
    # Same model, same maps, another baseline: the curves, hence the AUCs, differ.
    for name in ("deletion_auc", "insertion_auc"):
        default = [s.value for s in events.Scalars(f"attention/rollout/{name}")]
        to_zero = [s.value for s in events.Scalars(f"zero/rollout/{name}")]
        assert len(to_zero) == 2 and all(abs(a - b) > 1e-4 for a, b in zip(default, to_zero))


def test_saco_scalar_every_logged_epoch_and_off_with_zero_groups(tmp_path):
    from lightning_rollout.metrics import saco

    pl.seed_everything(0)
    callback = AttentionRolloutCallback(methods=["rollout", "chefer"], num_samples=4, faithfulness_steps=0)
    off = AttentionRolloutCallback(methods=["rollout"], num_samples=4, saco_groups=0, tag_prefix="off")
    four = AttentionRolloutCallback(
        methods=["chefer"], num_samples=4, faithfulness_steps=0, saco_groups=4, tag_prefix="four"
    )
    trainer = _trainer(tmp_path, [callback, off, four], max_epochs=2)
    module = NoMasks()
    trainer.fit(module)
    events = read_events(trainer.logger.log_dir)
    scalars = events.Tags()["scalars"]
    batch = callback.fixed_batch
    for method in ("rollout", "chefer"):
        values = [(s.step, s.value) for s in events.Scalars(f"attention/{method}/saco")]
        assert [step for step, _ in values] == [0, 4, 8] and all(-1 <= v <= 1 for _, v in values)
        # the last value is SaCo (10 groups) of the last logged maps, read back from the history
        _, maps, _ = callback.history.columns(method)[-1]
        expected = saco(module.eval(), batch.images, maps, batch.labels, groups=10).mean()
        assert values[-1][1] == pytest.approx(float(expected), abs=1e-5)
    assert not [tag for tag in scalars if tag.startswith("off/") and tag.endswith("/saco")]
    assert "off/rollout/deletion_auc" in scalars, "SaCo off leaves the AUCs on"
    assert not [tag for tag in scalars if tag.endswith("_auc") and not tag.startswith("off/")]
    _, maps, _ = four.history.columns("chefer")[-1]
    expected = saco(module.eval(), batch.images, maps, batch.labels, groups=4).mean()
    assert events.Scalars("four/chefer/saco")[-1].value == pytest.approx(float(expected), abs=1e-5)


def test_more_saco_groups_than_pixels_stop_the_run_before_training(tmp_path):
    module = Module()
    with pytest.raises(ValueError, match=r"`saco_groups`=300 needs at least that many pixels.*has 256 \(16x16\)"):
        _trainer(tmp_path, [AttentionRolloutCallback(num_samples=4, saco_groups=300)], max_epochs=1).fit(module)


def test_fixed_batch_is_the_first_validation_samples_and_never_changes(tmp_path):
    callback = AttentionRolloutCallback(num_samples=6, sample_selection="first")
    module = Module()
    trainer = _trainer(tmp_path, [callback], max_epochs=3)
    trainer.fit(module)
    dataset = module.val_dataloader().dataset
    torch.testing.assert_close(callback.fixed_batch.images, dataset.images[:6])
    torch.testing.assert_close(callback.fixed_batch.labels, dataset.labels[:6])
    torch.testing.assert_close(callback.fixed_batch.masks, dataset.masks[:6])


def test_nothing_from_sanity_check_and_every_n_epochs(tmp_path):
    callback = AttentionRolloutCallback(every_n_epochs=2, log_initial_maps=False)
    trainer = _trainer(tmp_path, [callback], max_epochs=4)
    trainer.fit(Module())
    assert _steps(read_events(trainer.logger.log_dir), "attention/rollout/samples") == [8, 16]


def test_initial_maps_need_the_sanity_check(tmp_path):
    callback = AttentionRolloutCallback()
    trainer = _trainer(tmp_path, [callback], max_epochs=1, num_sanity_val_steps=0)
    with pytest.warns(UserWarning, match="needs the sanity check"):
        trainer.fit(Module())
    assert _steps(read_events(trainer.logger.log_dir), "attention/rollout/samples") == [4]


def _final_weights(tmp_path, callbacks, **kwargs):
    pl.seed_everything(7)
    module = Module(drop_rate=0.3, attn_drop_rate=0.3)
    trainer = _trainer(tmp_path, callbacks, max_epochs=2, **kwargs)
    trainer.fit(module)
    return module.state_dict()


def test_zero_observer_effect_bit_identical_weights(tmp_path):
    # Dropout in the model and a shuffling loader: any extra RNG draw would change the weights.
    without = _final_weights(tmp_path / "a", [])
    with_callback = _final_weights(tmp_path / "b", [AttentionRolloutCallback(methods=ALL_METHODS)])
    assert without.keys() == with_callback.keys()
    for key in without:
        assert torch.equal(without[key], with_callback[key]), key


def test_no_hooks_or_flags_leak_after_training(tmp_path):
    module = Module()
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    before = _hooks_and_flags(module)
    _trainer(tmp_path, [AttentionRolloutCallback(methods=ALL_METHODS)], max_epochs=3).fit(module)
    assert _hooks_and_flags(module) == before == (0, [True, True])


class _FailsInGradientSidePass(Module):
    """Raises only in the callback's gradient side pass (eval mode with autograd on)."""

    def forward(self, x):
        if not self.training and torch.is_grad_enabled():
            raise RuntimeError("boom in side pass")
        return super().forward(x)


def test_exception_inside_side_pass_leaves_model_clean(tmp_path):
    module = _FailsInGradientSidePass()
    before = _hooks_and_flags(module)
    with pytest.raises(RuntimeError, match="boom in side pass"):
        _trainer(tmp_path, [AttentionRolloutCallback(methods=["grad_rollout"])]).fit(module)
    assert _hooks_and_flags(module) == before
    assert all(m.training == module.training for m in module.modules())


def test_nan_maps_warn_and_skip_that_epoch(tmp_path, monkeypatch):
    calls = {"n": 0}
    real_explain_with = side_pass.explain_with

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        result = real_explain_with(*args, **kwargs)
        if calls["n"] == 3:  # 1: the trial on the first samples kept, 2: the initial maps
            result = result._replace(maps={method: maps * float("nan") for method, maps in result.maps.items()})
        return result

    monkeypatch.setattr(side_pass, "explain_with", sometimes_nan)
    trainer = _trainer(tmp_path, [AttentionRolloutCallback()], max_epochs=2)
    with pytest.warns(UserWarning, match=r"maps at step 4 contain NaN/Inf"):
        trainer.fit(Module())
    assert trainer.current_epoch == 2, "training went on"
    assert _steps(read_events(trainer.logger.log_dir), "attention/rollout/samples") == [0, 8]


@pytest.mark.parametrize("method", ALL_METHODS)
def test_validate_and_test_under_inference_mode(tmp_path, method):
    callback = AttentionRolloutCallback(methods=[method])
    trainer = _trainer(tmp_path, [callback])
    module = Module()
    trainer.validate(module)
    trainer.test(module)
    events = read_events(trainer.logger.log_dir)
    assert _steps(events, f"attention/{method}/samples") == [0]
    assert _steps(events, f"attention/test/{method}/samples") == [0]
    assert "attention/test/rollout/filmstrip" not in events.Tags()["images"]
    assert len(events.Scalars(f"attention/test/{method}/energy")) == 1


def test_mid_epoch_validation_and_gradient_accumulation(tmp_path):
    trainer = _trainer(
        tmp_path,
        [AttentionRolloutCallback(log_initial_maps=False)],
        max_epochs=1,
        val_check_interval=0.5,
        accumulate_grad_batches=2,
    )
    trainer.fit(Module())
    # 4 batches per epoch, validation after batches 2 and 4, one optimiser step per 2 batches
    assert _steps(read_events(trainer.logger.log_dir), "attention/rollout/samples") == [1, 2]


def test_bf16_mixed_precision(tmp_path):
    trainer = _trainer(tmp_path, [AttentionRolloutCallback(methods=ALL_METHODS)], max_epochs=1, precision="bf16-mixed")
    trainer.fit(Module())
    events = read_events(trainer.logger.log_dir)
    for method in ALL_METHODS:
        assert _steps(events, f"attention/{method}/samples") == [0, 4]
        assert all(0 <= s.value <= 1 for s in events.Scalars(f"attention/{method}/energy"))


def test_pytorch_lightning_namespace(tmp_path):
    import pytorch_lightning

    module = make_module_class(pytorch_lightning.LightningModule)()
    trainer = pytorch_lightning.Trainer(
        max_epochs=1,
        logger=pytorch_lightning.loggers.TensorBoardLogger(str(tmp_path)),
        callbacks=[AttentionRolloutCallback(methods=["chefer"])],
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(module)
    assert _steps(read_events(trainer.logger.log_dir), "attention/chefer/samples") == [0, 4]


def test_dict_batches_and_explicit_keys(tmp_path):
    from lightning_helpers import RandomScenes
    from torch.utils.data import DataLoader

    class DictModule(Module):
        def val_dataloader(self):
            return DataLoader(RandomScenes(16, seed=2, as_dict=True), batch_size=4)

    callback = AttentionRolloutCallback(num_samples=5, image_key="image", label_key="label", mask_key="mask")
    _trainer(tmp_path, [callback], max_epochs=1).fit(DictModule())
    assert len(callback.fixed_batch) == 5 and callback.fixed_batch.masks.shape == (5, 16, 16)


def test_other_logger_writes_pngs_and_warns_once(tmp_path):
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = _trainer(tmp_path, [AttentionRolloutCallback()], max_epochs=2, logger=logger)
    with pytest.warns(UserWarning, match="CSVLogger cannot show images") as record:
        trainer.fit(Module())
    assert sum("cannot show images" in str(w.message) for w in record) == 1
    folder = os.path.join(logger.log_dir, "attention", "rollout", "samples")
    assert sorted(os.listdir(folder)) == ["step_00000000.png", "step_00000004.png", "step_00000008.png"]
    with open(os.path.join(logger.log_dir, "metrics.csv")) as metrics:
        assert "attention/rollout/energy" in metrics.readline()


def test_no_logger_warns_once_and_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(side_pass, "explain_with", lambda *a, **k: pytest.fail("no side pass without a logger"))
    trainer = _trainer(tmp_path, [AttentionRolloutCallback()], max_epochs=2, logger=False)
    with pytest.warns(UserWarning, match="has no logger") as record:
        trainer.fit(Module())
    assert sum("has no logger" in str(w.message) for w in record) == 1


def test_two_instances_checkpoint_and_resume(tmp_path):
    first = AttentionRolloutCallback(methods=["rollout"], num_samples=3)
    second = AttentionRolloutCallback(methods=["gradcam"], num_samples=3)
    assert first.state_key != second.state_key
    trainer = _trainer(tmp_path, [first, second], max_epochs=2)
    trainer.fit(Module())
    path = str(tmp_path / "two.ckpt")
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    assert {first.state_key, second.state_key} <= set(checkpoint["callbacks"])

    resumed_first = AttentionRolloutCallback(methods=["rollout"], num_samples=3)
    resumed_second = AttentionRolloutCallback(methods=["gradcam"], num_samples=3)
    trainer = _trainer(tmp_path, [resumed_first, resumed_second], max_epochs=4)
    trainer.fit(Module(), ckpt_path=path)
    torch.testing.assert_close(resumed_first.fixed_batch.images, first.fixed_batch.images)
    labels = [label for label, *_ in resumed_second.history.columns("gradcam")]
    assert labels == ["init", "e0 s4", "e1 s8", "e2 s12", "e3 s16"], "the filmstrip goes on"
    film = read_events(trainer.logger.log_dir).Images("attention/gradcam/filmstrip")
    assert film[-1].step == 16 and film[-1].width > film[0].width


def test_setup_rejects_a_model_without_attention_before_training(tmp_path):
    class NoAttention(Module):
        def training_step(self, batch, batch_idx):
            pytest.fail("must fail before the first training step")

    callback = AttentionRolloutCallback(attention_pattern="*no_such_module*")
    with pytest.raises(ValueError, match=r"`attention_pattern`='\*no_such_module\*' matches no module"):
        _trainer(tmp_path, [callback]).fit(NoAttention())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(methods="rollout"), r"`methods` must be a non-empty list"),
        (dict(methods=[]), r"`methods` must be a non-empty list"),
        (dict(methods=["rollout", "lrp"]), r"`method` must be one of .*got 'lrp'"),
        (dict(methods=["rollout", "rollout"]), r"`methods` must name each method once"),
        (dict(num_samples=0), r"`num_samples` must be an int >= 1, got 0"),
        (dict(every_n_epochs=1.5), r"`every_n_epochs` must be an int >= 1, got 1.5"),
        (dict(head_fusion="median"), r"`head_fusion` must be one of"),
        (dict(discard_ratio=1), r"`discard_ratio` must be a number in \[0, 1\), got 1"),
        (dict(target="truth"), r"`target` must be one of \['label', 'prediction'\] or a callable .*, got 'truth'"),
        (dict(image_key=1.0), r"`image_key` must be None \(default layout\), an int index or a str key, got 1.0"),
        (dict(mean=[0.5, 0.5]), r"`mean` must be None or a list of 1 or 3 numbers, got \[0.5, 0.5\]"),
        (dict(std=[0.0]), r"`std` values must be > 0"),
        (dict(colormap="nope"), r"`colormap` must be a name in matplotlib.colormaps"),
        (dict(alpha=1.5), r"`alpha` must be a number in \[0, 1\], got 1.5"),
        (dict(class_names=[1, 2]), r"`class_names` must be None or a list of str"),
        (dict(filmstrip_columns=0), r"`filmstrip_columns` must be an int >= 1"),
        (dict(grid_size=(0, 3)), r"`grid_size` must be two positive ints"),
        (dict(tag_prefix=""), r"`tag_prefix` must be a non-empty str"),
        (dict(faithfulness_steps=-1), r"`faithfulness_steps` must be an int >= 0, got -1"),
        (dict(faithfulness_baseline="zeros"), r"`faithfulness_baseline` must be one of \['blur', 'mean'\], a finite"),
        (dict(faithfulness_baseline=float("nan")), r"`faithfulness_baseline` must be .* got nan"),
        (dict(saco_groups=1), r"`saco_groups` must be 0 \(SaCo off\) or an int >= 2 .*got 1"),
        (dict(saco_groups=-2), r"`saco_groups` must be 0 \(SaCo off\) or an int >= 2 .*got -2"),
        (dict(saco_groups=2.5), r"`saco_groups` must be 0 \(SaCo off\) or an int >= 2 .*got 2.5"),
        (dict(saco_groups=True), r"`saco_groups` must be 0 \(SaCo off\) or an int >= 2 .*got True"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AttentionRolloutCallback(**kwargs)


@pytest.mark.parametrize("value, expected", [("0.5", 0.5), ("mean", "mean"), ("blur", "blur")])
def test_faithfulness_baseline_from_the_command_line(value, expected):
    """A number on the LightningCLI command line arrives as a float, a name as a str."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AttentionRolloutCallback, "callback")
    config = parser.parse_args(["--callback.faithfulness_baseline", value])
    assert parser.instantiate(config)["callback"].faithfulness_baseline == expected


def test_label_target_needs_labels(tmp_path):
    class ImagesOnly(Module):
        def validation_step(self, batch, batch_idx):
            pass

        def val_dataloader(self):
            return torch.utils.data.DataLoader(torch.randn(8, 3, 16, 16), batch_size=4)

    with pytest.raises(ValueError, match=r"`target`='label' but the validation batch has no labels"):
        _trainer(tmp_path, [AttentionRolloutCallback()]).fit(ImagesOnly())
    prediction = AttentionRolloutCallback(target="prediction")
    _trainer(tmp_path, [prediction], max_epochs=1).fit(ImagesOnly())
    assert prediction.fixed_batch.labels is None and prediction.history.last_logged is not None


@pytest.mark.parametrize("strategy", ["ddp", "ddp_spawn"])
def test_ddp_two_cpu_processes_log_once_from_rank_zero(tmp_path, strategy):
    import subprocess
    import sys

    script = os.path.join(os.path.dirname(__file__), "ddp_run.py")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, script, strategy, str(tmp_path)], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    event_files = [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith("events.out")]
    assert len(event_files) == 1, "only rank 0 writes"
    events = read_events(str(tmp_path / "ddp" / "version_0"))
    # 32 training samples over 2 ranks, batch 8: 2 steps per epoch
    for method in ["rollout", "grad_rollout", "chefer", "gradcam"]:
        assert _steps(events, f"attention/{method}/samples") == [0, 2, 4]
        assert [s.step for s in events.Scalars(f"attention/{method}/entropy")] == [0, 2, 4]


def test_setup_refuses_attention_methods_on_a_windowed_model_and_serves_gradcam(tmp_path):
    import timm

    class SwinModule(Module):
        def __init__(self):
            super().__init__()
            self.model = timm.create_model(
                "swin_tiny_patch4_window7_224",
                img_size=16,
                patch_size=2,
                window_size=2,
                embed_dim=8,
                depths=(1, 1),
                num_heads=(1, 1),
                num_classes=3,
            )

    with pytest.raises(ValueError, match=r"SwinTransformer has no global token attention.*Use method 'gradcam'"):
        _trainer(tmp_path, [AttentionRolloutCallback(methods=["rollout", "gradcam"])]).fit(SwinModule())
    trainer = _trainer(tmp_path, [AttentionRolloutCallback(methods=["gradcam"], num_samples=2)], max_epochs=1)
    trainer.fit(SwinModule())
    assert _steps(read_events(trainer.logger.log_dir), "attention/gradcam/samples") == [0, 4]
