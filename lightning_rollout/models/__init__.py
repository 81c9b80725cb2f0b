"""Model adapters: what the engine needs to know about a model, one small module per family.

:func:`find_adapter` walks the registered adapters in order and returns the first that finds its family
inside the user's model (a LightningModule holding a timm, Hugging Face or torchvision model works as
is). A new family is one file: subclass :class:`ModelAdapter`, then :func:`register_adapter` it.

Example::

    from lightning_rollout.models import ModelAdapter, register_adapter

    @register_adapter
    class MyViTAdapter(ModelAdapter):
        family = "my_vit"
        ...
"""

from typing import List, Optional, Type

from torch import nn

from lightning_rollout.models.base import (
    AttentionSink,
    ModelAdapter,
    Readout,
    UnsupportedModelError,
    patch_mean_readout,
    token_readout,
)

_ADAPTERS: List[Type[ModelAdapter]] = []


def register_adapter(adapter: Type[ModelAdapter], *, first: bool = True) -> Type[ModelAdapter]:
    """Registers an adapter class (usable as a decorator); by default it is tried before the built-in ones.

    Raises:
        TypeError: if ``adapter`` is not a :class:`ModelAdapter` subclass.
    """
    if not (isinstance(adapter, type) and issubclass(adapter, ModelAdapter)):
        raise TypeError(f"`adapter` must be a ModelAdapter subclass, got {adapter!r}")
    if adapter in _ADAPTERS:
        _ADAPTERS.remove(adapter)
    if first:
        _ADAPTERS.insert(0, adapter)
    else:
        _ADAPTERS.append(adapter)
    return adapter


def registered_adapters() -> List[Type[ModelAdapter]]:
    """The adapter classes in the order they are tried."""
    return list(_ADAPTERS)


def find_adapter(model: nn.Module) -> Optional[ModelAdapter]:
    """The first registered adapter whose family is found in ``model``, built on that part; else ``None``."""
    for adapter in _ADAPTERS:
        root = adapter.find(model)
        if root is not None:
            return adapter(root)
    return None


__all__ = [
    "AttentionSink",
    "ModelAdapter",
    "Readout",
    "UnsupportedModelError",
    "find_adapter",
    "patch_mean_readout",
    "register_adapter",
    "registered_adapters",
    "token_readout",
]

# The built-in adapters register themselves (after any user-registered ones), in this order.
from lightning_rollout.models import hf, mha  # noqa: E402,F401  (isort: skip)
