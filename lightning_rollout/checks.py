"""Argument checks shared by the engine, the metrics and the callback, and the logits in a model's output.

Each check raises ``ValueError`` naming the argument, the value received and what is allowed.
"""

from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor

Target = Union[None, int, Tensor]
"""The class to explain or score: ``None`` (the prediction), an int, or a LongTensor ``(B,)``."""


def check_int(argument: str, value: Any, minimum: int) -> None:
    """Raises unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}, got {value!r}")


def check_images(images: Any) -> None:
    """Raises unless ``images`` is a float tensor ``(B, C, H, W)``."""
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = (
            f"a {images.dim()}-D {images.dtype} tensor of shape {tuple(images.shape)}"
            if isinstance(images, Tensor) else type(images).__name__
        )
        raise ValueError(f"`images` must be a float tensor of shape (B, C, H, W), got {got}")


def check_target(target: Target, batch_size: int) -> None:
    """Raises unless ``target`` is ``None``, an int, or an integer tensor of shape ``(batch_size,)``."""
    if target is None:
        return
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"`target` must hold integer class indices, got dtype {target.dtype}")
        if tuple(target.shape) != (batch_size,):
            raise ValueError(f"`target` must have shape ({batch_size},) for this batch, got {tuple(target.shape)}")
        return
    if isinstance(target, bool) or not isinstance(target, int):
        raise ValueError(f"`target` must be None, an int or a LongTensor of shape (B,), got {type(target).__name__}")


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the output itself, its ``.logits`` (Hugging Face ``ModelOutput``) or
    its ``"logits"`` entry.

    Raises:
        ValueError: when the output is none of these.
    """
    if isinstance(output, Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    raise ValueError(
        "the model must return logits (B, num_classes): a tensor, an output with `.logits` or a dict with "
        f"'logits', got {type(output).__name__}"
    )
