"""Argument checks shared by the engine, the metrics and the callbacks.

Each check raises ``ValueError`` naming the argument, the value received and what is allowed.
"""

from typing import Any

import torch
from torch import Tensor

from lightning_rollout.core.outputs import Target


def check_int(argument: str, value: Any, minimum: int) -> None:
    """Raises unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}, got {value!r}")


def check_images(images: Any) -> None:
    """Raises unless ``images`` is a float tensor ``(B, C, H, W)``."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = (
            f"a {images.dim()}-D {images.dtype} tensor of shape {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        raise ValueError(f"`images` must be a float tensor of shape (B, C, H, W), got {got}")


def check_target(target: Target, batch_size: int, callable_ok: bool = False) -> None:
    """Raises unless ``target`` is ``None``, an int, an integer tensor of shape ``(batch_size,)`` or, with
    ``callable_ok``, a callable."""
    if target is None or (callable_ok and callable(target) and not isinstance(target, Tensor)):
        return
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"`target` must hold integer class indices, got dtype {target.dtype}")
        if tuple(target.shape) != (batch_size,):
            raise ValueError(f"`target` must have shape ({batch_size},) for this batch, got {tuple(target.shape)}")
        return
    if isinstance(target, bool) or not isinstance(target, int):
        allowed = "None, an int, a LongTensor of shape (B,)" + (
            " or a callable output -> (B,) scores" if callable_ok else ""
        )
        raise ValueError(f"`target` must be {allowed}, got {type(target).__name__}")
