"""Awkward batches: validation batch size 1, uint8 images, 1-channel models, constant (degenerate) maps."""

from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning_helpers import RandomScenes, make_module_class, make_trainer, read_events
from torch.utils.data import DataLoader, TensorDataset

from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.rendering.figures import constant_maps, overlays, render_filmstrips, render_samples

GRADIENT_METHODS = ["grad_rollout", "chefer", "gradcam"]
Module = make_module_class(pl.LightningModule)


_trainer = partial(make_trainer, max_epochs=1)


def _steps(events, tag):
    return [event.step for event in events.Images(tag)]


# ------------------------------------------------------------------------------------ batch size 1


class OneByOne(Module):
    def val_dataloader(self):
        return DataLoader(RandomScenes(8, seed=2), batch_size=1)


def test_batch_size_one_fills_num_samples_in_the_first_epoch_and_skips_a_partial_init(tmp_path):
    callback = AttentionRolloutCallback(num_samples=6, sample_selection="first")
    trainer = _trainer(tmp_path, [callback], max_epochs=2)  # the sanity check sees 2 samples
    with pytest.warns(UserWarning, match=r"captured only 2 of `num_samples`=6.*`num_sanity_val_steps` >= 6"):
        trainer.fit(OneByOne())
    dataset = RandomScenes(8, seed=2)
    torch.testing.assert_close(callback.fixed_batch.images, dataset.images[:6])
    assert [label for label, *_ in callback.history.columns("rollout")] == ["e0 s4", "e1 s8"]
    assert all(maps.shape[0] == 6 for _, maps, _ in callback.history.columns("rollout"))
    events = read_events(trainer.logger.log_dir)
    assert _steps(events, "attention/rollout/samples") == [4, 8]
    # 6 panels in rows of 4: two rows of panels at least 128 px high
    assert events.Images("attention/rollout/samples")[0].height > 2 * 128


def test_a_sanity_check_long_enough_logs_the_initial_maps_of_all_samples(tmp_path):
    callback = AttentionRolloutCallback(num_samples=3, sample_selection="first")
    trainer = _trainer(tmp_path, [callback], num_sanity_val_steps=3)
    trainer.fit(OneByOne())
    assert [maps.shape[0] for _, maps, _ in callback.history.columns("rollout")] == [3, 3]
    assert _steps(read_events(trainer.logger.log_dir), "attention/rollout/samples") == [0, 4]


def test_a_validation_set_smaller_than_num_samples_says_why(tmp_path):
    callback = AttentionRolloutCallback(num_samples=6, log_initial_maps=False)
    trainer = _trainer(tmp_path, [callback], limit_val_batches=3)
    with pytest.warns(UserWarning, match=r"the first validation epoch gave only 3 samples for `num_samples`=6"):
        trainer.fit(OneByOne())
    assert len(callback.fixed_batch) == 3 and callback.history.columns("rollout")[0][1].shape[0] == 3


# ------------------------------------------------------------------------------------ uint8 images


def to_float(images):
    """uint8 [0, 255] → float in [-1, 1] (module level: importable by path, picklable)."""
    return images.float().div(255).sub(0.5).div(0.5)


class Uint8Module(Module):
    """uint8 images on disk; the training step converts them."""

    reached_training = False

    def _loss(self, batch):
        images, labels = batch[:2]
        return torch.nn.functional.cross_entropy(self(to_float(images)), labels)

    def training_step(self, batch, batch_idx):
        type(self).reached_training = True
        return self._loss(batch)

    def _loader(self, size, seed, **kwargs):
        scenes = RandomScenes(size, seed=seed)
        images = (scenes.images.clamp(-1, 1) * 127.5 + 127.5).round().to(torch.uint8)
        return DataLoader(TensorDataset(images, scenes.labels), batch_size=4, **kwargs)

    def train_dataloader(self):
        return self._loader(32, 1, shuffle=True)

    def val_dataloader(self):
        return self._loader(16, 2)


def test_uint8_images_without_input_transform_fail_before_training(tmp_path):
    Uint8Module.reached_training = False
    with pytest.raises(ValueError, match=r"got a 4-D torch.uint8 tensor; pass `input_transform`"):
        _trainer(tmp_path, [AttentionRolloutCallback()]).fit(Uint8Module())
    assert not Uint8Module.reached_training


def test_uint8_images_with_input_transform_give_the_maps_of_the_model_input(tmp_path):
    callback = AttentionRolloutCallback(
        methods=["rollout", "gradcam"], num_samples=4, input_transform=to_float, mean=[0.5], std=[0.5]
    )
    module = Uint8Module()
    _trainer(tmp_path, [callback]).fit(module)
    assert callback.fixed_batch.images.dtype == torch.uint8
    inputs = to_float(callback.fixed_batch.images)
    for method in ["rollout", "gradcam"]:
        _, maps, _ = callback.history.columns(method)[-1]
        torch.testing.assert_close(maps, explain(module, inputs, method, target=callback.fixed_batch.labels))


def test_input_transform_is_importable_by_path_from_the_cli(tmp_path):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(AttentionRolloutCallback, "callback")
    config = parser.parse_args(["--callback.input_transform", "test_awkward_batches.to_float"])
    callback = parser.instantiate(config)["callback"]
    assert isinstance(callback, AttentionRolloutCallback) and callback.input_transform is to_float


# ------------------------------------------------------------------------------------ 1-channel


class Gray(Module):
    def __init__(self):
        super().__init__(in_chans=1)

    def _loader(self, size, seed, **kwargs):
        scenes = RandomScenes(size, seed=seed)
        return DataLoader(TensorDataset(scenes.images[:, :1], scenes.labels), batch_size=4, **kwargs)

    def train_dataloader(self):
        return self._loader(32, 1, shuffle=True)

    def val_dataloader(self):
        return self._loader(16, 2)


def test_one_channel_model_without_mean_and_std(tmp_path):
    callback = AttentionRolloutCallback(methods=["rollout", "chefer"], num_samples=4)
    trainer = _trainer(tmp_path, [callback], limit_train_batches=2)
    trainer.fit(Gray())
    assert callback.maps.display_stats == ([0.5], [0.5]), "timm's uniform 3-channel config collapses to 1 channel"
    assert _steps(read_events(trainer.logger.log_dir), "attention/chefer/samples") == [0, 2]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(mean=[0.5, 0.5, 0.5], std=[0.5]), r"`mean` holds 3 values but the model takes 1-channel input; pass 1"),
        (dict(std=[0.2, 0.2, 0.2]), r"`std` holds 3 values but the model takes 1-channel input"),
        (dict(class_names=["a", "b"]), r"`class_names` holds 2 names but the model has 3 classes; pass 3 names"),
    ],
)
def test_arguments_that_do_not_fit_the_model_fail_in_setup(tmp_path, kwargs, match):
    class NeverTrains(Gray):
        def training_step(self, batch, batch_idx):
            pytest.fail("must fail in setup")

    with pytest.raises(ValueError, match=match):
        _trainer(tmp_path, [AttentionRolloutCallback(**kwargs)], num_sanity_val_steps=0).fit(NeverTrains())


# ------------------------------------------------------------------------------------ constant maps


def test_constant_maps_show_the_bare_input_and_say_so():
    display = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    maps = torch.stack([torch.zeros(4, 4), torch.rand(4, 4, generator=torch.Generator().manual_seed(0))])
    assert constant_maps(maps).tolist() == [True, False]
    blended = overlays(display, maps, "jet", 0.5)
    assert np.array_equal(blended[0], display[0]) and not np.array_equal(blended[1], display[1])
    captions = [["pred: 0 (0.50)"], ["pred: 0 (0.50)"]]
    flat = render_samples(display, torch.zeros(2, 4, 4), captions, "jet", 0.5)
    varied = render_samples(display, maps[[1, 1]], captions, "jet", 0.5)
    assert flat.shape[0] > varied.shape[0], "a 'constant map' caption line"
    film = render_filmstrips(display, [("init", torch.zeros(2, 4, 4)), ("e0", maps)], "jet", 0.5)
    assert film.shape[1] == render_filmstrips(display, [("init", maps), ("e0", maps)], "jet", 0.5).shape[1]


class ZeroHead(Module):
    """A zero-initialised classifier head (as torchvision's ViT): every gradient map is 0 at init."""

    def __init__(self):
        super().__init__()
        torch.nn.init.zeros_(self.model.head.weight)
        torch.nn.init.zeros_(self.model.head.bias)


def test_constant_maps_warn_once_per_method_with_the_cause(tmp_path):
    callback = AttentionRolloutCallback(methods=["rollout"] + GRADIENT_METHODS, num_samples=4)
    with pytest.warns(UserWarning) as record:
        _trainer(tmp_path, [callback]).fit(ZeroHead())
    messages = [str(w.message) for w in record if "is constant" in str(w.message)]
    assert len(messages) == 3, messages
    for method, message in zip(GRADIENT_METHODS, messages):
        assert f"every {method} map at step 0 is constant (value 0)" in message
        assert "zero-initialised classifier head" in message
    for method in GRADIENT_METHODS:
        init, later = callback.history.columns(method)[0][1], callback.history.columns(method)[-1][1]
        assert bool(constant_maps(init).all()) and not bool(constant_maps(later).any())


# ------------------------------------------------------------------------------------ observer effect


@pytest.mark.parametrize(
    "module_class, kwargs",
    [
        (OneByOne, {}),
        (Uint8Module, dict(input_transform=to_float)),
        (Gray, {}),
    ],
    ids=["batch_size_1", "uint8", "one_channel"],
)
def test_zero_observer_effect(tmp_path, module_class, kwargs):
    def final_weights(callbacks, folder):
        pl.seed_everything(7)
        module = module_class()
        _trainer(tmp_path / folder, callbacks, max_epochs=2, limit_train_batches=2).fit(module)
        return module.state_dict()

    without = final_weights([], "a")
    callback = AttentionRolloutCallback(methods=["rollout", "grad_rollout"], num_samples=6, **kwargs)
    observed = final_weights([callback], "b")
    for key in without:
        assert torch.equal(without[key], observed[key]), key
