"""torch.compile: the side pass runs the uncompiled model eagerly and leaves dynamo's graphs alone."""

import lightning.pytorch as pl
import pytest
import torch
from lightning_helpers import make_module_class
from torch._dynamo.utils import counters

from lightning_rollout import AttentionRolloutCallback, explain

ALL_METHODS = ["rollout", "grad_rollout", "chefer", "gradcam"]
Module = make_module_class(pl.LightningModule)


def _uncompiled(module):
    """The module ``torch.compile`` wrapped."""
    while isinstance(module, torch._dynamo.eval_frame.OptimizedModule):
        module = module._orig_mod
    return module


class CompiledSubmodule(Module):
    """The user's pattern ``self.net = torch.compile(vit)``."""

    def __init__(self):
        super().__init__()
        self.model = torch.compile(self.model, backend="eager")


@pytest.mark.parametrize("method", ALL_METHODS)
def test_explain_on_compiled_model_equals_eager(vit, images, method):
    torch._dynamo.reset()
    compiled = torch.compile(vit, backend="eager")
    compiled(images)  # a graph compiled without hooks exists: it must not be reused by the side pass
    graphs = counters["stats"]["unique_graphs"]
    expected = explain(vit, images, method)
    torch.testing.assert_close(explain(compiled, images, method), expected, rtol=1e-5, atol=1e-5)
    assert counters["stats"]["unique_graphs"] == graphs, "the side pass compiled nothing"
    assert _uncompiled(compiled) is vit


def _fit(tmp_path, module, callbacks):
    torch._dynamo.reset()
    counters.clear()
    pl.seed_everything(0)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=pl.loggers.TensorBoardLogger(str(tmp_path)),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(module)
    return dict(counters["stats"]), sum(counters["recompiles"].values())


def _weights(module):
    return {k: v.detach().clone() for k, v in _uncompiled(module).state_dict().items()}


@pytest.mark.parametrize("compile_whole_module", [False, True], ids=["submodule", "lightning_module"])
def test_fit_with_compiled_model_same_graphs_same_weights_eager_maps(tmp_path, compile_whole_module):
    def make():
        torch.manual_seed(0)
        if compile_whole_module:
            return torch.compile(Module(), backend="eager")
        return CompiledSubmodule()

    plain = make()
    stats_without, recompiles_without = _fit(tmp_path / "a", plain, [])
    callback = AttentionRolloutCallback(methods=ALL_METHODS, num_samples=4)
    observed = make()
    stats_with, recompiles_with = _fit(tmp_path / "b", observed, [callback])
    assert stats_with == stats_without and recompiles_with == recompiles_without
    assert stats_with["unique_graphs"] >= 1
    before, after = _weights(plain), _weights(observed)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    eager = _uncompiled(observed)
    if not compile_whole_module:
        eager = eager.model._orig_mod
    else:
        eager = eager.model
    images = callback.fixed_batch.images
    for method in ALL_METHODS:
        label, maps, _ = callback.history.columns(method)[-1]
        assert label == "e1 s8"
        expected = explain(eager, images, method, target=callback.fixed_batch.labels)
        torch.testing.assert_close(maps, expected, rtol=1e-5, atol=1e-5)
