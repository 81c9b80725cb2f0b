"""Context managers for the hooked side pass: every change to model or global state is undone on exit.

The side pass puts the model in eval mode, chooses the autograd mode, keeps the RNG streams, runs
compiled code eagerly and hooks modules; a model's adapter adds what its family needs (timm's fused
attention off: a fused kernel never materialises the attention matrix, so nothing could be captured).
Each of these lives in its own context manager that restores the previous state in a ``finally`` block,
also when the forward raises.
"""

import random
from contextlib import contextmanager
from fnmatch import fnmatchcase
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn


def find_modules(model: nn.Module, pattern: str) -> List[Tuple[str, nn.Module]]:
    """Returns ``(name, module)`` for every submodule whose qualified name matches ``pattern``.

    Args:
        model: the model to search.
        pattern: an `fnmatch` pattern over names as `torch.nn.Module.named_modules` gives them.

    Returns:
        The matches in registration order (forward order for timm ViTs).
    """
    return [(name, module) for name, module in model.named_modules() if fnmatchcase(name, pattern)]


def require_modules(model: nn.Module, pattern: str, argument: str) -> List[Tuple[str, nn.Module]]:
    """Like `find_modules`, but raises when nothing matches.

    Raises:
        ValueError: naming ``argument``, the pattern and a few module names of the model.
    """
    matches = find_modules(model, pattern)
    if not matches:
        names = [name for name, _ in model.named_modules() if name][:8]
        raise ValueError(
            f"`{argument}`={pattern!r} matches no module of {type(model).__name__}; "
            f"give an fnmatch pattern over module names such as {names}"
        )
    return matches


@contextmanager
def fused_attention_disabled(model: nn.Module) -> Iterator[None]:
    """Sets ``fused_attn = False`` on every submodule that has a bool ``fused_attn``; restores each after."""
    saved: Dict[Any, bool] = {}  # modules of any class that has a `fused_attn` (timm's attention layers)
    for module in model.modules():
        flag = getattr(module, "fused_attn", None)
        if isinstance(flag, bool):
            saved[module] = flag
    try:
        for module in saved:
            module.fused_attn = False
        yield
    finally:
        for module, flag in saved.items():
            module.fused_attn = flag


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Puts ``model`` in eval mode; restores every submodule's own ``training`` flag after."""
    saved = {module: module.training for module in model.modules()}
    try:
        model.eval()
        yield
    finally:
        for module, training in saved.items():
            module.training = training


@contextmanager
def grad_mode(enabled: bool) -> Iterator[None]:
    """Autograd on (also inside ``torch.inference_mode()``) when ``enabled``, off otherwise."""
    if not enabled:
        with torch.no_grad():
            yield
        return
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Restores the global RNG states on exit: torch's CPU generator (and ``device``'s, when it is an
    accelerator), Python's `random` and NumPy's (a dataset or a user's `input_transform` may draw from them)."""
    devices = [device] if device.type != "cpu" else []
    device_type = device.type if device.type != "cpu" else "cuda"
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices, device_type=device_type):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)


@contextmanager
def forward_hooks(modules: Sequence[nn.Module], hook: Callable) -> Iterator[None]:
    """Registers ``hook`` as a forward hook on each module; removes all of them on exit."""
    handles = []
    try:
        for module in modules:
            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eager_side_pass() -> Iterator[None]:
    """Runs compiled modules and functions eagerly, without looking up or adding compiled graphs.

    A graph compiled without hooks would be reused after hooks are added (dynamo skips hook guards by
    default) and capture nothing; a hooked side pass compiled on its own would add recompilations to the
    training's. ``torch.compiler.set_stance("force_eager")`` avoids both and is restored on exit.
    """
    with torch.compiler.set_stance("force_eager"):
        yield


@contextmanager
def side_pass(model: nn.Module, device: torch.device, needs_grad: bool) -> Iterator[None]:
    """Everything a side pass changes in any model, undone on exit: RNG, module modes, grad mode; compiled
    code runs eagerly inside it (`eager_side_pass`)."""
    with preserved_rng(device), eval_mode(model), grad_mode(needs_grad), eager_side_pass():
        yield
