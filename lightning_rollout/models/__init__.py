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


def register_adapter(adapter: Optional[Type[ModelAdapter]] = None, *, first: bool = True):
    """Registers an adapter class; usable as ``@register_adapter`` or ``@register_adapter(first=False)``.

    Args:
        adapter: the :class:`ModelAdapter` subclass.
        first: try it before the adapters registered so far (a user's adapter wins over the built-in
            ones); ``False`` appends it.

    Returns:
        ``adapter`` itself.

    Raises:
        TypeError: if ``adapter`` is not a :class:`ModelAdapter` subclass.
    """
    if adapter is None:
        return lambda cls: register_adapter(cls, first=first)
    if not (isinstance(adapter, type) and issubclass(adapter, ModelAdapter)):
        raise TypeError(f"`adapter` must be a ModelAdapter subclass, got {adapter!r}")
    if adapter in _ADAPTERS:
        _ADAPTERS.remove(adapter)
    if first:
        _ADAPTERS.insert(0, adapter)
    else:
        _ADAPTERS.append(adapter)
    return adapter


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
    "token_readout",
]

# The built-in families, in the order they are tried; the generic ones come last (mha.py registers
# torchvision's ViT, then any nn.MultiheadAttention model).
from lightning_rollout.models import hf, timm_vit, timm_cait, timm_spatial, mha  # noqa: E402,F401  (self-registering)
