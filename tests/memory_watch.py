"""Watches for leaks: weak references to every tensor a model's modules output, and the bytes of all live tensors."""

import gc
import weakref
from typing import Iterator, List, Set

import torch
from torch import nn


def tensors_in(value) -> Iterator[torch.Tensor]:
    """The tensors in a module's output or a state dict (a tensor, tuples/lists, dicts, ``ModelOutput``)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


class OutputWatch:
    """Weak references to every tensor any submodule of ``model`` outputs between ``start`` and ``stop``."""

    def __init__(self, model: nn.Module) -> None:
        self.refs: List[weakref.ref] = []
        self.handles = [module.register_forward_hook(self._hook) for module in model.modules()]

    def _hook(self, module: nn.Module, args, output) -> None:
        self.refs.extend(weakref.ref(tensor) for tensor in tensors_in(output))

    def stop(self) -> None:
        for handle in self.handles:
            handle.remove()

    def alive(self) -> int:
        """How many of the watched outputs are still alive after a full collection."""
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
