"""The demo's LightningModule: any timm model by name, batches as tuples or dicts, AdamW + warm-up + cosine."""

import math

import pytest
import timm
import torch
from lightning.pytorch import Trainer

from lightning_rollout.demo import SyntheticScenesDataModule, TimmClassifier

TINY = dict(img_size=32, patch_size=8, depth=1, embed_dim=32, num_heads=2)


def _module(**kwargs):
    options = dict(model_name="vit_tiny_patch16_224", model_kwargs=TINY, num_classes=4)
    options.update(kwargs)
    torch.manual_seed(0)
    return TimmClassifier(**options)


def _trainer(tmp_path, **kwargs):
    options = dict(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    return Trainer(**options)


def test_forward_returns_logits_and_keeps_the_timm_model():
    module = _module()
    assert isinstance(module.model, timm.models.vision_transformer.VisionTransformer)
    assert module.model.patch_embed.grid_size == (4, 4)
    assert module(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert module.hparams.model_name == "vit_tiny_patch16_224" and module.hparams.model_kwargs == TINY


@pytest.mark.parametrize(
    "batch",
    [
        (torch.zeros(2, 3, 32, 32), torch.tensor([0, 1])),
        [torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]), torch.zeros(2, 32, 32, dtype=torch.bool)],
        {"image": torch.zeros(2, 3, 32, 32), "label": torch.tensor([0, 1]), "mask": None},
    ],
    ids=["tuple", "list-with-mask", "dict"],
)
def test_unpack_batch(batch):
    images, labels = TimmClassifier.unpack_batch(batch)
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]


def test_unpack_batch_errors():
    with pytest.raises(KeyError, match="'image' and 'label'"):
        TimmClassifier.unpack_batch({"img": torch.zeros(1)})
    with pytest.raises(TypeError, match="a batch must be"):
        TimmClassifier.unpack_batch(torch.zeros(2, 3, 32, 32))


@pytest.mark.parametrize(
    ("argument", "value", "match"),
    [
        ("num_classes", 0, "`num_classes` must be >= 1"),
        ("lr", 0.0, "`lr` must be > 0"),
        ("weight_decay", -1.0, "`weight_decay` must be >= 0"),
        ("warmup_epochs", -1.0, "`warmup_epochs` must be >= 0"),
        ("min_lr_factor", 2.0, "`min_lr_factor` must be in"),
        ("warmup_start_factor", 0.0, "`warmup_start_factor` must be in"),
        ("label_smoothing", 1.0, "`label_smoothing` must be in"),
        ("schedule_interval", "batch", "`schedule_interval` must be 'step' or 'epoch'"),
    ],
)
def test_argument_errors(argument, value, match):
    with pytest.raises(ValueError, match=match):
        _module(**{argument: value})


def test_weight_decay_only_on_matrices():
    module = _module(weight_decay=0.1)
    decay, no_decay = module.parameter_groups()
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    named = dict(module.model.named_parameters())
    for name in ("cls_token", "pos_embed", "blocks.0.norm1.weight", "blocks.0.attn.qkv.bias", "head.bias"):
        assert id(named[name]) not in decay_ids, name
    for name in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight", "head.weight"):
        assert id(named[name]) in decay_ids, name
    assert len(decay["params"]) + len(no_decay["params"]) == len(named)


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    module = _module(warmup_start_factor=0.1, min_lr_factor=0.0)
    factor = module.lr_factor
    assert factor(0, warmup=10, total=110) == pytest.approx(0.1)
    assert factor(5, warmup=10, total=110) == pytest.approx(0.55)
    assert factor(10, warmup=10, total=110) == pytest.approx(1.0)
    assert factor(60, warmup=10, total=110) == pytest.approx(0.5)
    assert factor(110, warmup=10, total=110) == pytest.approx(0.0, abs=1e-12)
    assert factor(500, warmup=10, total=110) == pytest.approx(0.0, abs=1e-12)
    assert factor(0, warmup=0, total=10) == pytest.approx(1.0)
    assert factor(5, warmup=0, total=10) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("interval", ["step", "epoch"])
def test_short_fit_is_finite_and_follows_the_schedule(tmp_path, interval):
    data = SyntheticScenesDataModule(image_size=32, num_train=32, num_val=8, batch_size=8, target_area=(0.09, 0.15))
    module = _module(lr=1e-3, warmup_epochs=1.0, schedule_interval=interval, warmup_start_factor=0.01)
    trainer = _trainer(tmp_path, max_epochs=2, limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(module, data)

    metrics = trainer.callback_metrics
    for key in ("train/loss", "train/acc", "val/loss", "val/acc"):
        assert key in metrics and torch.isfinite(metrics[key]), key
    (config,) = trainer.lr_scheduler_configs
    assert config.interval == interval
    (optimizer,) = trainer.optimizers
    assert isinstance(optimizer, torch.optim.AdamW) and len(optimizer.param_groups) == 2
    # 2 epochs of 2 steps, 1 epoch of warm-up: after the run the schedule is at its end (cosine at 1.0),
    # or, stepped per epoch, at the start of the cosine after the warm-up epoch.
    expected = module.lr_factor(4.0, 2.0, 4.0) if interval == "step" else module.lr_factor(2.0, 1.0, 2.0)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * expected)


def test_fast_dev_run_with_dict_batches(tmp_path):
    class DictScenes(torch.utils.data.Dataset):
        def __init__(self):
            self.scenes = SyntheticScenesDataModule(image_size=32, num_train=4, num_val=4).val_set

        def __len__(self):
            return len(self.scenes)

        def __getitem__(self, index):
            image, label, mask = self.scenes[index]
            return {"image": image, "label": label, "mask": mask}

    loader = torch.utils.data.DataLoader(DictScenes(), batch_size=2)
    module = _module()
    trainer = _trainer(tmp_path, fast_dev_run=True)
    trainer.fit(module, loader, loader)
    assert torch.isfinite(trainer.callback_metrics["train/loss"])


def test_checkpoint_path_loads_weights_through_timm(tmp_path):
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=4, **TINY)
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)

    module = _module(checkpoint_path=str(path))
    assert module.hparams.checkpoint_path == str(path)
    loaded = module.model.state_dict()
    for name, value in source.state_dict().items():
        if not name.startswith("head."):  # timm drops a head whose size differs from its pretrained config
            assert torch.equal(loaded[name], value), name
