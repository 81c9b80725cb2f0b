"""AttentionRolloutCallback in real Trainer runs on a Hugging Face ViT and on a torchvision ViT module."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning_helpers import make_module_class, read_events
from torch import nn
from torchvision.models import VisionTransformer

from lightning_rollout import AttentionRolloutCallback

transformers = pytest.importorskip("transformers")

ALL_METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
TimmModule = make_module_class(pl.LightningModule)


class HFViTModule(TimmModule):
    """The same data and training steps, around a Hugging Face ``ViTForImageClassification`` with dropout."""

    def __init__(self) -> None:
        super().__init__()
        config = transformers.ViTConfig(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=16,
            patch_size=4,
            num_labels=3,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
        )
        self.model = transformers.ViTForImageClassification(config)

    def forward(self, x):
        return self.model(pixel_values=x).logits


class TorchvisionViTModule(TimmModule):
    """The same data and training steps, around a torchvision ``VisionTransformer`` with dropout."""

    def __init__(self) -> None:
        super().__init__()
        self.model = VisionTransformer(
            image_size=16,
            patch_size=4,
            num_layers=2,
            num_heads=2,
            hidden_dim=16,
            mlp_dim=32,
            num_classes=3,
            dropout=0.1,
            attention_dropout=0.1,
        )
        nn.init.normal_(self.model.heads.head.weight, std=0.1)  # torchvision's zero init gives all-zero gradients


def _fit(path, module_class, callbacks):
    pl.seed_everything(7)
    module = module_class()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=TensorBoardLogger(str(path), name="tb"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        deterministic=True,
        limit_train_batches=2,
        limit_val_batches=1,
    )
    trainer.fit(module)
    return module, trainer


@pytest.mark.parametrize("module_class", [HFViTModule, TorchvisionViTModule])
def test_callback_logs_every_method_and_leaves_training_bit_identical(tmp_path, module_class):
    without, _ = _fit(tmp_path / "without", module_class, [])
    callback = AttentionRolloutCallback(methods=ALL_METHODS, num_samples=4)
    module, trainer = _fit(tmp_path / "with", module_class, [callback])
    expected = without.state_dict()
    for key, value in module.state_dict().items():
        assert torch.equal(value, expected[key]), key

    events = read_events(trainer.logger.log_dir)
    for method in ALL_METHODS:
        samples = events.Images(f"attention/{method}/samples")
        assert [e.step for e in samples] == [0, 2, 4]
        assert len(events.Scalars(f"attention/{method}/energy")) == 3
    if module_class is HFViTModule:
        assert module.model.config._attn_implementation == "sdpa"
    hooks = sum(len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules())
    assert hooks == 0 and all("forward" not in m.__dict__ for m in module.modules())
