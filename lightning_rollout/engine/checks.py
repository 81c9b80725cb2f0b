"""Checks made before any model runs: the methods asked for, and whether they can serve a model."""

from typing import List, Optional, Sequence, Type

from torch import nn

from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.engine.run import attention_layers
from lightning_rollout.methods import Method, method_class, method_names
from lightning_rollout.models.base import ModelAdapter


def method_classes(methods: Sequence[str]) -> List[Type[Method]]:
    """The registered classes of ``methods``.

    Raises:
        ValueError: naming ``methods`` when it is empty, not a list/tuple, repeats a name or names an unknown
            method.
    """
    if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(
            f"`methods` must be a non-empty list or tuple of method names from {method_names()}, got {methods!r}"
        )
    if len(set(methods)) != len(methods):
        raise ValueError(f"`methods` must name each method once, got {list(methods)}")
    return [method_class(name) for name in methods]


def check_model(model: nn.Module, methods: Sequence[str], options: Optional[ExplainOptions] = None) -> ModelAdapter:
    """Checks, without running the model, that `explain` can serve ``methods`` on ``model``.

    Returns:
        The adapter ``explain`` will use.

    Raises:
        ValueError: (or `UnsupportedModelError`) with the reason, as
            ``explain`` would raise it.
    """
    options = options or ExplainOptions()
    adapter = options.resolve_adapter(model)
    adapter.geometry(None)
    classes = method_classes(methods)
    if any(method.uses_attention for method in classes):
        attention_layers(adapter, classes)
    if any(method.uses_gradcam for method in classes):
        adapter.gradcam_layer()
    method_options = options.resolved_method_options()
    for method in classes:
        method.check_adapter(adapter, method_options)
    return adapter
