"""The adapter registry: which families are known, in which order they are tried."""

from typing import Callable, List, Optional, Type, TypeVar, Union, overload

from torch import nn

from lightning_rollout.models.base import ModelAdapter

_ADAPTERS: List[Type[ModelAdapter]] = []

AdapterT = TypeVar("AdapterT", bound=Type[ModelAdapter])


@overload
def register_adapter(adapter: AdapterT, *, first: bool = True) -> AdapterT: ...


@overload
def register_adapter(adapter: None = None, *, first: bool = True) -> Callable[[AdapterT], AdapterT]: ...


def register_adapter(
    adapter: Optional[AdapterT] = None, *, first: bool = True
) -> Union[AdapterT, Callable[[AdapterT], AdapterT]]:
    """Registers an adapter class; usable as ``@register_adapter`` or ``@register_adapter(first=False)``.

    Args:
        adapter: the `ModelAdapter` subclass; ``None`` gives the decorator that registers it with ``first``.
        first: try it before the adapters registered so far (a user's adapter wins over the built-in
            ones); ``False`` appends it.

    Returns:
        ``adapter`` itself (or, without ``adapter``, the decorator).

    Raises:
        TypeError: if ``adapter`` is not a `ModelAdapter` subclass.
    """
    if adapter is None:

        def decorator(cls: AdapterT) -> AdapterT:
            return register_adapter(cls, first=first)

        return decorator
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


def unregister_adapter(adapter: Type[ModelAdapter]) -> None:
    """Removes a registered adapter class, e.g. a test's or a plugin's.

    Raises:
        ValueError: if ``adapter`` is not registered.
    """
    if adapter not in _ADAPTERS:
        raise ValueError(f"`adapter` {adapter!r} is not registered; registered: {[a.__name__ for a in _ADAPTERS]}")
    _ADAPTERS.remove(adapter)


def registered_adapters() -> List[Type[ModelAdapter]]:
    """The registered adapter classes, in the order they are tried (a copy)."""
    return list(_ADAPTERS)
