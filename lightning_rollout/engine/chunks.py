"""A batch explained in chunks of samples, one side pass each, the results joined; maps at input resolution.

Video is why: one VideoMAE-B clip (16 × 224², 1568 tokens) has 12 layers × 12 heads × 1568² attention
entries, 1.4 GB in float32, and a gradient method's backward needs all of them at once. Chunking bounds the
peak to that of ``chunk_size`` samples; each sample's maps are the same whatever the chunk it is in.
"""

from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from lightning_rollout.core.outputs import Target
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.engine.run import input_size, maps_of, run_pass
from lightning_rollout.methods import Method
from lightning_rollout.methods.attention import Attention
from lightning_rollout.methods.core import upsample_maps
from lightning_rollout.models.base import ModelAdapter

OUTPUT_SIZES = (None, "tokens", "input")
"""`output_size` values: `None`/`"tokens"` the token grid, `"input"` the input's frames and pixels."""


def check_output_size(output_size) -> None:
    """Raises ``ValueError`` naming ``output_size`` unless it is one of `OUTPUT_SIZES`."""
    if output_size not in OUTPUT_SIZES:
        raise ValueError(
            f"`output_size` must be None or 'tokens' (maps on the token grid) or 'input' (maps at the input's "
            f"resolution), got {output_size!r}"
        )


def _target_chunk(target: Target, start: int, stop: int) -> Target:
    return target[start:stop] if isinstance(target, Tensor) else target


def chunked_pass(
    model: nn.Module,
    images: Tensor,
    classes: Sequence[Type[Method]],
    adapter: ModelAdapter,
    options: ExplainOptions,
    target: Target,
    return_output: bool,
    per_head: bool,
    output_size: Optional[str] = None,
) -> Tuple[Dict[str, Tensor], Optional[Tensor], Optional[Tensor]]:
    """Side passes over chunks of ``options.chunk_for(video)`` samples; arguments checked by the caller.

    Args:
        output_size: ``"input"``: every map upsampled to the input (`
            upsample_maps`: bilinear in space, nearest in time, each frame taking its tubelet's slice);
            ``None`` or ``"tokens"``: the token grid. Per-head maps stay on the token grid.

    Returns:
        ``(maps, output or None, per-head maps or None)``, each joined over the chunks in batch order.
    """
    chunk = options.chunk_for(images.dim() == 5) or images.shape[0]
    maps: List[Dict[str, Tensor]] = []
    outputs: List[Tensor] = []
    heads: List[Tensor] = []
    for start in range(0, images.shape[0], chunk):
        stop = min(start + chunk, images.shape[0])
        fed, output = run_pass(
            model, images[start:stop], classes, adapter, options, _target_chunk(target, start, stop), return_output
        )
        maps.append(maps_of(fed, images.device))
        if output is not None:
            outputs.append(output)
        if per_head:
            heads.append(next(method for method in fed if isinstance(method, Attention)).per_head_maps())
        del fed
    joined = {name: torch.cat([part[name] for part in maps]) if len(maps) > 1 else maps[0][name] for name in maps[0]}
    if output_size == "input":
        tubelet = adapter.geometry(input_size(images)).tubelet
        size = input_size(images)
        joined = {name: upsample_maps(value, size, tubelet) for name, value in joined.items()}
    output = (torch.cat(outputs) if len(outputs) > 1 else outputs[0]) if return_output and outputs else None
    return joined, output, (torch.cat(heads) if per_head else None)
