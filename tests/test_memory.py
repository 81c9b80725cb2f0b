"""Memory stays flat: ``explain`` of every method on every adapter family, and epochs of the callback.

Two signals, both exact and independent of the machine's allocator:

- every tensor a module of the model output during the side pass is dead once ``explain`` (or the
  callback's epoch) is over: a leaked autograd graph keeps its activations alive, also when
  ``gc.collect()`` runs, since a Python tensor hook that reaches the hooked tensors forms a cycle through
  autograd's C++ nodes that the collector cannot see;
- the bytes of all live tensors do not grow over repeated calls (or epochs).

The heap is frozen (``gc.freeze``) around each test, so that the collector and the census only walk the
objects the test makes: fast, and blind to the tensors of earlier tests.
"""

import gc
import weakref
from typing import Callable, Iterator, List, Set

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from conftest import tiny_vit
from lightning_helpers import RandomScenes, make_module_class
from lightning_rollout import AttentionRolloutCallback, explain
from lightning_rollout.methods import METHODS

transformers = pytest.importorskip("transformers")
torchvision_models = pytest.importorskip("torchvision.models")


@pytest.fixture(autouse=True)
def frozen_heap():
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _tensors(value) -> Iterator[torch.Tensor]:
    """The tensors in a module's output (a tensor, a tuple/list, a dict or a transformers ``ModelOutput``)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)


class OutputWatch:
    """Weak references to every tensor any submodule of ``model`` outputs while armed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.refs: List[weakref.ref] = []
        self.handles = []

    def __enter__(self) -> "OutputWatch":
        self.refs = []
        self.handles = [module.register_forward_hook(self._hook) for module in self.model.modules()]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []

    def _hook(self, module: nn.Module, args, output) -> None:
        self.refs.extend(weakref.ref(tensor) for tensor in _tensors(output))

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.refs)


def live_tensor_bytes(exclude: Set[int] = frozenset()) -> int:
    """Bytes of the storages of every live tensor Python can see, each storage counted once.

    Args:
        exclude: ``data_ptr()`` of storages not to count.
    """
    gc.collect()
    seen, total = set(exclude), 0
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor):  # not isinstance: some module proxies warn on `__class__`
            storage = obj.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


class MHAClassifier(nn.Module):
    """A user's own ViT built from ``nn.MultiheadAttention`` (generic adapter, geometry passed explicitly)."""

    def __init__(self, dim: int = 32, patch: int = 8, num_patches: int = 16, num_classes: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 1 + num_patches, dim))
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, 2, batch_first=True) for _ in range(2))
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos
        for attn in self.attn:
            x = x + attn(x, x, x, need_weights=False)[0]
        return self.head(x[:, 0])


def _hf_vit() -> nn.Module:
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                    image_size=32, patch_size=8, num_labels=5)
    return transformers.ViTForImageClassification(config).eval()


def _torchvision_vit() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision_models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                                 mlp_dim=64, num_classes=5)
    nn.init.normal_(model.heads.head.weight, std=0.1)  # torchvision zero-initialises its head: no gradients at init
    return model.eval()


def _mha() -> nn.Module:
    torch.manual_seed(0)
    return MHAClassifier().eval()


FAMILIES = {
    "timm": (lambda: tiny_vit(depth=2), {}),
    "hf": (_hf_vit, {}),
    "torchvision": (_torchvision_vit, {}),
    "mha": (_mha, dict(num_prefix_tokens=1, grid_size=(4, 4))),
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_explain_leaves_nothing_alive(family, method):
    build, options = FAMILIES[family]
    model = build()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    call: Callable[[], torch.Tensor] = lambda: explain(model, images, method, **options)  # noqa: E731
    call()  # first-call caches are not growth
    before = live_tensor_bytes()
    call()
    with OutputWatch(model) as watch:
        maps = call()
    assert maps.shape == (2, 4, 4)
    del maps
    grown = live_tensor_bytes() - before
    alive = watch.alive()
    assert watch.refs, "the watch saw no module output"
    assert alive == 0, f"{alive} of {len(watch.refs)} module outputs of the side pass outlived `explain`"
    assert grown == 0, f"live tensors grew by {grown} bytes over 2 calls"


class _EpochProbe(pl.Callback):
    """Watches the rollout callback's side pass of each epoch; measures what outlives it.

    Placed before the rollout callback, it arms the watch in ``on_validation_epoch_end`` (the rollout
    callback's side pass runs right after) and reads it in ``on_train_epoch_end`` (after validation).
    """

    def __init__(self, rollout: AttentionRolloutCallback) -> None:
        self.rollout = rollout
        self.watch: OutputWatch = None
        self.alive: List[int] = []
        self.bytes: List[int] = []

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.watch = OutputWatch(pl_module).__enter__()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.watch.__exit__()
        self.alive.append(self.watch.alive())
        kept = {tensor.untyped_storage().data_ptr() for tensor in _state_tensors(self.rollout.state_dict())}
        self.bytes.append(live_tensor_bytes(exclude=kept))


def _state_tensors(value) -> Iterator[torch.Tensor]:
    """The tensors in the callback's checkpointed state (its own business; bounded by other tests)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _state_tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _state_tensors(item)


def test_callback_epochs_leave_memory_flat(tmp_path):
    epochs = 8
    rollout = AttentionRolloutCallback(methods=list(METHODS), num_samples=4, filmstrip_columns=3, log_initial_maps=False,
                                       faithfulness_steps=2)
    probe = _EpochProbe(rollout)
    pl.seed_everything(0)
    module = make_module_class(pl.LightningModule)()
    module.train_dataloader = lambda: torch.utils.data.DataLoader(RandomScenes(8, seed=1), batch_size=8)
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=epochs, callbacks=[probe, rollout], logger=pl.loggers.TensorBoardLogger(tmp_path),
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=1,
    )
    trainer.fit(module)
    assert len(probe.alive) == epochs
    assert probe.alive == [0] * epochs, f"module outputs of the side pass alive after each epoch: {probe.alive}"
    grown = probe.bytes[-1] - probe.bytes[2]
    assert grown == 0, f"live tensors (besides the callback's state) grew by {grown} bytes from epoch 3 to {epochs}: " \
                       f"{probe.bytes}"
