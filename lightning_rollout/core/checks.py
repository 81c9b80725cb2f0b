"""Argument checks shared by the engine, the metrics and the callbacks.

Each check raises ``ValueError`` naming the argument, the value received and what is allowed.
"""

from typing import Any, Optional

import torch
from torch import Tensor

from lightning_rollout.core.geometry import VideoInput
from lightning_rollout.core.outputs import Target


def check_int(argument: str, value: Any, minimum: int) -> None:
    """Raises unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}, got {value!r}")


_FORMS = {False: "(B, C, H, W)", True: "(B, T, C, H, W) (a batch of clips)", None: "(B, C, H, W)"}


def check_images(images: Any, video: Optional[bool] = False) -> None:
    """Raises unless ``images`` is a float tensor ``(B, C, H, W)``; with ``video=True`` a float batch of clips
    ``(B, T, C, H, W)``; with ``video=None`` either (the model's adapter decides later, `check_clips`)."""
    dims = {False: (4,), True: (5,), None: (4, 5)}[video]
    if not isinstance(images, Tensor) or images.dim() not in dims or not images.is_floating_point():
        got = (
            f"a {images.dim()}-D {images.dtype} tensor of shape {tuple(images.shape)}"
            if isinstance(images, Tensor)
            else type(images).__name__
        )
        clips = " (a video model takes clips: (B, T, C, H, W))" if video is None else ""
        raise ValueError(f"`images` must be a float tensor of shape {_FORMS[video]}, got {got}{clips}")


def check_clips(images: Tensor, video: Optional[VideoInput], model_name: str) -> None:
    """Raises unless the batch's form fits the model: clips ``(B, T, C, H, W)`` of a length the model can
    cut into tubelets for a video model (``video`` given), images ``(B, C, H, W)`` otherwise.

    Raises:
        ValueError: naming ``images``, its shape and what the model takes.
    """
    shape = tuple(images.shape)
    if video is None:
        if images.dim() == 5:
            raise ValueError(
                f"`images` is a 5-D batch of clips of shape {shape}, but {model_name} takes images (B, C, H, W); "
                "explain the frames one by one (flatten T into the batch) or use a video model"
            )
        return
    if images.dim() != 5:
        raise ValueError(
            f"`images` must be a batch of clips (B, T, C, H, W) for the video model {model_name}, got a "
            f"{images.dim()}-D tensor of shape {shape}; put the frames on dim 1"
        )
    frames = shape[1]
    if frames < video.tubelet:
        raise ValueError(
            f"`images` holds clips of {frames} frame(s), fewer than one tubelet of {model_name} "
            f"({video.tubelet} frames per temporal token): no temporal token can be formed; give clips of "
            f"{video.num_frames or video.tubelet} frames"
        )
    if video.num_frames is not None and frames != video.num_frames:
        raise ValueError(
            f"`images` holds clips of {frames} frames, but {model_name} takes clips of num_frames="
            f"{video.num_frames} (its temporal position embeddings have that length); resample the clips to "
            f"{video.num_frames} frames"
        )


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
