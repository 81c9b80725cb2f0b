"""One callback class for both Lightning namespaces.

``lightning.pytorch`` and ``pytorch_lightning`` ship distinct ``Callback`` classes and a ``Trainer`` of
one rejects callbacks of the other; a class deriving from every installed one is accepted by both.
"""

import importlib
from typing import Tuple

_NAMESPACES = ("lightning.pytorch", "pytorch_lightning")


def callback_bases() -> Tuple[type, ...]:
    """The ``Callback`` classes of the installed Lightning namespaces."""
    bases = []
    for namespace in _NAMESPACES:
        try:
            bases.append(importlib.import_module(namespace).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError("lightning_rollout needs `pytorch-lightning` or `lightning` installed")
    return tuple(bases)
