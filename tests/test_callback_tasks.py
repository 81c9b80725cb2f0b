"""The callback's tasks in real Trainer runs: multi-label panels and class discrimination, label-free runs, and
the errors that stop a run before training."""

import lightning.pytorch as pl
import pytest
import timm
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning_helpers import read_events
from torch.utils.data import DataLoader, Dataset

from lightning_rollout import AttentionRolloutCallback

CLASSES = ["a", "b", "c"]


class TwoClassScenes(Dataset):
    """16 x 16 random images; sample i holds classes i % 3 and (i + 1) % 3, class c's object in quadrant c."""

    def __init__(self, size: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.images = torch.randn(size, 3, 16, 16, generator=generator)
        self.labels = torch.zeros(size, 3)
        self.masks = torch.zeros(size, 3, 16, 16, dtype=torch.bool)
        for i in range(size):
            for c in (i % 3, (i + 1) % 3):
                self.labels[i, c] = 1.0
                top, left = 8 * (c // 2), 8 * (c % 2)
                self.masks[i, c, top : top + 8, left : left + 8] = True
                self.images[i, c, top : top + 8, left : left + 8] += 2.0

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index):
        return self.images[index], self.labels[index], self.masks[index]


class MultiLabelViT(pl.LightningModule):
    def __init__(self, num_classes: int = 3) -> None:
        super().__init__()
        self.model = timm.create_model(
            "vit_tiny_patch16_224",
            img_size=16,
            patch_size=4,
            depth=2,
            embed_dim=16,
            num_heads=2,
            num_classes=num_classes,
        )

    def forward(self, x):
        return self.model(x)

    def _loss(self, batch):
        images, labels = batch[:2]
        if labels.dim() == 2:
            return torch.nn.functional.binary_cross_entropy_with_logits(self(images), labels)
        return torch.nn.functional.cross_entropy(self(images), labels)

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self._loss(batch))

    def train_dataloader(self):
        return DataLoader(TwoClassScenes(16, seed=1), batch_size=8)

    def val_dataloader(self):
        return DataLoader(TwoClassScenes(8, seed=2), batch_size=4)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _trainer(tmp_path, callback, **kwargs):
    options = dict(
        max_epochs=1,
        accelerator="cpu",
        logger=TensorBoardLogger(str(tmp_path), name="tb"),
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    )
    options.update(kwargs)
    return pl.Trainer(callbacks=[callback], **options)


def test_multilabel_explains_each_positive_label_against_its_class_mask(tmp_path):
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(
        methods=["rollout", "grad_rollout"],
        task="multilabel",
        num_samples=4,
        class_names=CLASSES,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        faithfulness_steps=2,
    )
    trainer = _trainer(tmp_path, callback)
    trainer.fit(MultiLabelViT())
    events = read_events(trainer.logger.log_dir)
    # Every sample holds two classes, each its own quadrant (a quarter of the image).
    assert [s.value for s in events.Scalars("attention/mask_area")] == [0.25, 0.25]
    # Rollout gives one map for both classes of a scene: one of the two pairs wins, so exactly one half.
    assert [s.value for s in events.Scalars("attention/rollout/class_discrimination")] == [0.5, 0.5]
    for method in ("rollout", "grad_rollout"):
        values = [s.value for s in events.Scalars(f"attention/{method}/class_discrimination")]
        assert len(values) == 2 and all(v in (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0) for v in values)
        for name in ("energy", "pointing_game", "deletion_auc", "insertion_auc"):
            assert all(0 <= s.value <= 1 for s in events.Scalars(f"attention/{method}/{name}"))
        # SaCo reads each panel's class through its sigmoid, like the AUCs
        assert len(events.Scalars(f"attention/{method}/saco")) == 2
        assert all(-1 <= s.value <= 1 for s in events.Scalars(f"attention/{method}/saco"))
    # 4 samples x 2 labels = 8 panels, 4 per row: two rows; the filmstrip has a row per panel.
    samples = events.Images("attention/rollout/samples")[0]
    film = events.Images("attention/rollout/filmstrip")[-1]
    assert samples.width > 4 * 2 * 128 and 2 * 128 < samples.height < 3 * 128 + 100
    assert film.height >= 8 * 96


def test_multilabel_caption_names_the_explained_class_and_its_score(tmp_path, monkeypatch):
    import lightning_rollout.monitor.step as step

    seen = []
    real = step.captions
    monkeypatch.setattr(step, "captions", lambda *args, **kw: seen.append(real(*args, **kw)) or seen[-1])
    callback = AttentionRolloutCallback(
        task="multilabel",
        num_samples=2,
        class_names=CLASSES,
        faithfulness_steps=0,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    _trainer(tmp_path, callback, limit_train_batches=1).fit(MultiLabelViT())
    lines = seen[-1]
    # Sample 0 holds a and b, sample 1 holds b and c.
    assert [line[0].split(" (")[0] for line in lines] == ["a", "b", "b", "c"]
    assert [line[1] for line in lines] == ["true: a, b", "true: a, b", "true: b, c", "true: b, c"]
    assert all(0 < float(line[0].split("(")[1].rstrip(")")) < 1 for line in lines)


def test_multi_hot_labels_with_multiclass_stop_the_run_before_training(tmp_path):
    module = MultiLabelViT()
    before = [p.detach().clone() for p in module.parameters()]
    with pytest.raises(ValueError, match=r"multi-hot labels: pass `task`='multilabel'"):
        _trainer(tmp_path, AttentionRolloutCallback(methods=["grad_rollout"])).fit(module)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters())), "no training step ran"


def test_label_free_run_logs_maps_without_predictions_or_faithfulness(tmp_path):
    """A model returning embeddings (timm num_classes=0): rollout runs; no class scalars."""
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(methods=["rollout"], task="none", num_samples=4, mean=[0.0] * 3, std=[1.0] * 3)
    module = MultiLabelViT(num_classes=0)
    module._loss = lambda batch: module(batch[0]).pow(2).mean()
    trainer = _trainer(tmp_path, callback)
    trainer.fit(module)
    events = read_events(trainer.logger.log_dir)
    assert len(events.Images("attention/rollout/samples")) == 2
    scalars = set(events.Tags()["scalars"])
    assert "attention/rollout/entropy" in scalars
    assert (
        not {"attention/rollout/deletion_auc", "attention/rollout/saco", "attention/rollout/class_discrimination"}
        & scalars
    )
    assert "attention/mask_area" not in scalars, "per-class masks without classes to pick them are not scored"


def test_label_free_gradient_method_needs_a_callable_target():
    with pytest.raises(ValueError, match=r"`task`='none' has no classes, so the gradient methods \['chefer'\]"):
        AttentionRolloutCallback(methods=["rollout", "chefer"], task="none")


class DictOutputViT(MultiLabelViT):
    """Returns ``{"emb": (B, 16) embeddings, "aux": (B,)}``: no logits anywhere."""

    def __init__(self) -> None:
        super().__init__(num_classes=0)

    def forward(self, x):
        embedding = self.model(x)
        return {"emb": embedding, "aux": embedding.sum(dim=1)}

    def _loss(self, batch):
        return self(batch[0])["emb"].pow(2).mean()


def test_callable_target_on_a_dict_output_explains_its_score(tmp_path, monkeypatch):
    import lightning_rollout.monitor.step as step
    from lightning_rollout.targets import EmbeddingSimilarity

    seen = []
    real = step.captions
    monkeypatch.setattr(step, "captions", lambda *args, **kw: seen.append(real(*args, **kw)) or seen[-1])
    pl.seed_everything(0)
    references = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    target = EmbeddingSimilarity(references, index=1)  # the callback may run any subset of the samples
    callback = AttentionRolloutCallback(
        methods=["rollout", "grad_rollout", "chefer"],
        task="none",
        target=target,
        output_key="emb",
        num_samples=4,
        mean=[0.0] * 3,
        std=[1.0] * 3,
    )
    module = DictOutputViT()
    trainer = _trainer(tmp_path, callback)
    trainer.fit(module)
    events = read_events(trainer.logger.log_dir)
    for method in ("rollout", "grad_rollout", "chefer"):
        assert len(events.Images(f"attention/{method}/samples")) == 2
    assert not {"attention/chefer/deletion_auc", "attention/chefer/saco"} & set(events.Tags()["scalars"]), (
        "no class probability to read"
    )
    # The captions carry the target's score: the cosine similarity of each sample's embedding to its reference.
    images = callback.fixed_batch.images
    with torch.no_grad():
        expected = target(module.eval()(images)["emb"])
    shown = [float(lines[-1].removeprefix("target: ")) for lines in seen[-1]]
    assert all(line[-1].startswith("target: ") and len(line) == 1 for line in seen[-1])
    assert shown == pytest.approx(expected.tolist(), abs=1e-3)


def test_output_key_selecting_nothing_stops_the_run_before_training(tmp_path):
    module = DictOutputViT()
    before = [p.detach().clone() for p in module.parameters()]
    callback = AttentionRolloutCallback(task="none", output_key="logits", methods=["rollout"], num_samples=2)
    with pytest.raises(ValueError, match=r"`output_key`='logits' selects no tensor .* its keys are \['emb', 'aux'\]"):
        _trainer(tmp_path, callback).fit(module)
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters())), "no training step ran"


def test_callable_target_giving_the_wrong_shape_stops_the_run_before_training(tmp_path):
    callback = AttentionRolloutCallback(task="none", target=whole_output, output_key="emb", num_samples=2)
    message = r"must map the model's output to one score per sample, shape \(1,\), got shape \(1, 16\)"
    with pytest.raises(ValueError, match=message):
        _trainer(tmp_path, callback).fit(DictOutputViT())


def whole_output(output):
    """A faulty target: the whole (B, D) output instead of one score per sample."""
    return output


def test_lightning_cli_takes_a_target_as_dotted_path_or_class_path():
    from jsonargparse import ArgumentParser

    from lightning_rollout.targets import RegressionOutput

    parser = ArgumentParser()
    parser.add_class_arguments(AttentionRolloutCallback, "callback")
    label_free = ["--callback.task=none", "--callback.methods=[grad_rollout]"]
    by_path = parser.instantiate_classes(
        parser.parse_args(["--callback.target=test_callback_tasks.whole_output"] + label_free)
    )
    assert by_path.callback.target is whole_output
    by_class = parser.instantiate_classes(
        parser.parse_args(
            [
                '--callback.target={"class_path": "lightning_rollout.targets.RegressionOutput", "init_args": {"index": 1}}'
            ]
            + label_free
        )
    )
    assert isinstance(by_class.callback.target, RegressionOutput) and by_class.callback.target.index == 1
    assert parser.instantiate_classes(parser.parse_args([])).callback.target == "label"


def test_label_free_attention_per_head_panel(tmp_path):
    """DINO's figure: method "attention" on an embedding model, a row per sample with one overlay per head."""
    pl.seed_everything(0)
    callback = AttentionRolloutCallback(
        methods=["attention"], task="none", attention_heads=True, num_samples=3, mean=[0.0] * 3, std=[1.0] * 3
    )
    module = MultiLabelViT(num_classes=0)
    module._loss = lambda batch: module(batch[0]).pow(2).mean()
    trainer = _trainer(tmp_path, callback, limit_val_batches=1, num_sanity_val_steps=1)
    trainer.fit(module)
    events = read_events(trainer.logger.log_dir)
    heads = events.Images("attention/attention/heads")
    samples = events.Images("attention/attention/samples")
    assert [e.step for e in heads] == [e.step for e in samples] == [0, 2]
    # 3 rows of 96-px frames (16-px inputs upscaled 6x) under a label strip; 1 input + 2 heads per row.
    assert 3 * 96 <= heads[0].height < 3 * (96 + 40) and 3 * 96 <= heads[0].width < 3 * 96 + 3 * 10
    with pytest.raises(ValueError, match=r"`attention_heads`=True needs 'attention' in `methods`"):
        AttentionRolloutCallback(methods=["rollout"], attention_heads=True)
