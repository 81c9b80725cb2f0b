"""Sharded models: detection from the parameters and the one broadcast the side pass needs.

A sharded model (FSDP1, FSDP2, DeepSpeed ZeRO-3, tensor parallel DTensors) all-gathers its parameters in
every forward, so every rank must run the side pass, on the same batch. Data parallel models (DDP) hold
full copies: rank 0 runs the side pass alone.
"""

from typing import Any, Tuple

import torch
from torch import nn


def is_sharded(model: nn.Module) -> bool:
    """Whether ``model``'s parameters are spread over ranks, so that a forward needs every rank.

    Recognises FSDP2 (``fully_shard``: ``FSDPModule`` / ``DTensor`` parameters, also tensor parallelism),
    FSDP1 (``FullyShardedDataParallel`` modules, flat parameters) and DeepSpeed ZeRO-3 (parameters
    carrying ``ds_id``).
    """
    if not torch.distributed.is_available():
        return False
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    sharded_types: Tuple[type, ...] = (FullyShardedDataParallel,)
    try:
        from torch.distributed.fsdp import FSDPModule

        sharded_types += (FSDPModule,)
    except ImportError:  # torch < 2.6
        pass
    if any(isinstance(module, sharded_types) for module in model.modules()):
        return True
    return any(
        isinstance(parameter, DTensor) or getattr(parameter, "_is_flat_param", False) or hasattr(parameter, "ds_id")
        for parameter in model.parameters()
    )


def broadcast_from_rank_zero(value: Any) -> Any:
    """Rank 0's ``value`` (any picklable object, tensors included) on every rank; a collective call.

    Raises:
        RuntimeError: if no default process group is initialised (the sharded side pass needs one).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        raise RuntimeError(
            "AttentionRolloutCallback: the model is sharded, so every rank must take part in the side pass, "
            "but no torch.distributed process group is initialised to share the batch; use a strategy that "
            "initialises one (fsdp, deepspeed, ddp) or an unsharded model"
        )
    objects = [value]
    torch.distributed.broadcast_object_list(objects, src=0)
    return objects[0]
