"""Hugging Face video transformers: VideoMAE, ViViT (joint space-time attention) and TimeSformer (divided).

Read in transformers 5.x (``modeling_videomae.py``, ``modeling_vivit.py``, ``modeling_timesformer.py``):

- **VideoMAE** (``model_type`` ``videomae``): a ``Conv3d`` cuts the clip ``(B, T, C, H, W)`` into tubelets of
  ``tubelet_size`` frames × ``patch_size``² pixels, flattened time first: ``(T / tubelet) · (H / p) · (W / p)``
  tokens, **no class token**. Joint attention over all of them (``VideoMAESelfAttention``, transformers'
  attention interface: our eager attention switch covers it). Head: ``fc_norm(mean of the tokens)`` with
  ``use_mean_pooling`` (the default), else the final ``layernorm`` of token 0 (a patch token).
- **ViViT** (``vivit``): ``Conv3d`` tubelets of ``tubelet_size = (t, p_h, p_w)``, time first, after **one class
  token**; joint attention (``VivitAttention``); head: the class token after the final ``layernorm``.
- **TimeSformer** (``timesformer``): a ``Conv2d`` per frame, one class token, then the patch tokens ordered
  **space first, time last** (``(h, w, T)``). Its default ``divided_space_time`` block attends over time
  within each patch position (``(B·h·w, heads, T, T)``, without the class token), then over space within
  each frame (``(B·T, heads, 1 + h·w, 1 + h·w)``, the class token copied into every frame and its T outputs
  averaged back): there is no ``N × N`` attention over the ``1 + T·h·w`` tokens, so the attention-chain
  methods refuse it. Grad-CAM reads the tokens the last block's spatial attention reads (the output of its
  ``layernorm_before``, ``(B·T, 1 + h·w, C)``), laid out as ``1 + T·h·w`` tokens, time first (the class
  token's per-frame copies are left out: Grad-CAM drops prefix tokens). Its attention module returns no
  weights to hooks and follows no attention interface, so ``joint_space_time`` TimeSformers refuse the
  attention methods too; Grad-CAM serves them (tokens reordered time first).

Each model has fixed temporal position embeddings, so it takes clips of exactly ``config.num_frames`` frames.
"""

from typing import Optional, Tuple

import torch
from torch import Tensor

from lightning_rollout.core.geometry import TokenGeometry, VideoInput

VIDEO = {"videomae", "vivit", "timesformer"}
"""`config.model_type` of the video families the adapter knows."""

DIVIDED_ATTENTION = (
    "its divided space-time attention has no single N×N token attention: each block attends over time within "
    "each patch position ((B·h·w, heads, T, T), without the class token), then over space within each frame "
    "((B·T, heads, 1+h·w, 1+h·w), the class token copied into every frame and its outputs averaged back), so "
    "a chain of attention matrices over the 1+T·h·w tokens is not defined by the model (its attention module "
    "also returns no weights to hooks)"
)
"""Why TimeSformer refuses the attention methods."""


def _pair(value) -> Tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def video_input(model_type: str, config) -> VideoInput:
    """The clips a video family takes: its tubelet and ``config.num_frames``."""
    if model_type == "vivit":
        tubelet = int(config.tubelet_size[0])
    elif model_type == "videomae":
        tubelet = int(config.tubelet_size)
    else:  # timesformer: one frame per temporal slice
        tubelet = 1
    return VideoInput(tubelet=tubelet, num_frames=int(config.num_frames))


def video_geometry(model_type: str, config, input_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
    """Token geometry of clips of ``input_size`` ``(T, H, W)`` (``(H, W)``: ``config.num_frames`` frames;
    ``None``: the config's clip)."""
    frames = int(config.num_frames)
    height, width = _pair(config.image_size)
    if input_size is not None:
        if len(input_size) == 3:
            frames = int(input_size[0])
        height, width = int(input_size[-2]), int(input_size[-1])
    patch = _pair(config.tubelet_size[1:]) if model_type == "vivit" else _pair(config.patch_size)
    tubelet = video_input(model_type, config).tubelet
    prefix = 0 if model_type == "videomae" else 1
    return TokenGeometry(prefix, prefix > 0, (height // patch[0], width // patch[1]), frames // tubelet, tubelet)


def timesformer_tokens(config, tokens: Tensor, fill: float) -> Tensor:
    """TimeSformer's tokens at its last block's spatial attention, as ``(B, 1 + T·h·w, C)``, time first.

    ``divided_space_time``: ``(B·T, 1 + h·w, C)`` (the class token repeated per frame) → the frames' patch
    tokens one frame after the other, behind one prefix token filled with ``fill``. ``joint_space_time``:
    ``(B, 1 + h·w·T, C)`` ordered ``(h, w, T)`` → reordered ``(T, h, w)``, the class token kept.
    """
    frames = int(config.num_frames)
    if config.attention_type == "divided_space_time":
        batch_frames, per_frame, channels = tokens.shape
        batch = batch_frames // frames
        patches = tokens[:, 1:].reshape(batch, frames * (per_frame - 1), channels)
        return torch.cat([patches.new_full((batch, 1, channels), fill), patches], dim=1)
    batch, count, channels = tokens.shape
    positions = (count - 1) // frames
    patches = tokens[:, 1:].reshape(batch, positions, frames, channels).transpose(1, 2)
    return torch.cat([tokens[:, :1], patches.reshape(batch, frames * positions, channels)], dim=1)
