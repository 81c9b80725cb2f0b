"""Token geometry of a Vision Transformer: prefix tokens, class token, the patch grid and, for video
models, the temporal token count.

Each model family's adapter (`lightning_rollout.models`) reads it from the model, never guessing it
from ``sqrt(N)``; this module holds the record, what a video model takes (`VideoInput`) and the
checks of the user's overrides.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


@dataclass(frozen=True)
class TokenGeometry:
    """How a ViT (or a video transformer) lays out its tokens.

    Image models: the patch tokens follow the prefix tokens row by row, ``grid_h × grid_w`` of them. Video
    models (``temporal_size`` set): ``temporal_size × grid_h × grid_w`` patch tokens, time slowest (all of
    the first temporal slice, row by row, then the next), as VideoMAE and ViViT order their tubelets; an
    adapter whose model orders them otherwise lays them out in this order before a method reads them.

    Attributes:
        num_prefix_tokens: leading tokens that are not patches (class, distillation and register tokens).
        has_class_token: whether token 0 is a class token.
        grid_size: ``(grid_h, grid_w)`` of the patch tokens (of each temporal slice, for video).
        temporal_size: ``T'``, the number of temporal token slices of a video model (``T // tubelet`` for
            ``T`` input frames); ``None`` for image models.
        tubelet: input frames per temporal slice (1 for images).
    """

    num_prefix_tokens: int
    has_class_token: bool
    grid_size: Tuple[int, int]
    temporal_size: Optional[int] = None
    tubelet: int = 1

    @property
    def is_video(self) -> bool:
        """Whether the patch tokens span time (``temporal_size`` is set)."""
        return self.temporal_size is not None

    @property
    def map_shape(self) -> Tuple[int, ...]:
        """The shape of one map: ``(grid_h, grid_w)``, or ``(temporal_size, grid_h, grid_w)`` for video."""
        return self.grid_size if self.temporal_size is None else (self.temporal_size, *self.grid_size)

    @property
    def num_tokens(self) -> int:
        """Total sequence length ``N``."""
        patches = self.grid_size[0] * self.grid_size[1] * (1 if self.temporal_size is None else self.temporal_size)
        return self.num_prefix_tokens + patches


@dataclass(frozen=True)
class VideoInput:
    """What a video model takes: clips ``(B, T, C, H, W)`` cut into tubelets of ``tubelet`` frames.

    Attributes:
        tubelet: input frames per temporal token slice (VideoMAE and ViViT: 2; TimeSformer: 1).
        num_frames: the clip length the model needs (fixed temporal position embeddings), or ``None`` when
            any length of at least ``tubelet`` frames works.
    """

    tubelet: int
    num_frames: Optional[int] = None


def check_overrides(num_prefix_tokens: Optional[int], grid_size: Optional[Sequence[int]]) -> None:
    """Raises ``ValueError`` unless the geometry overrides are ``None`` or well formed."""
    if num_prefix_tokens is not None and (
        not isinstance(num_prefix_tokens, int) or isinstance(num_prefix_tokens, bool) or num_prefix_tokens < 0
    ):
        raise ValueError(f"`num_prefix_tokens` must be an int >= 0, got {num_prefix_tokens!r}")
    if grid_size is not None:
        check_grid_size(grid_size)


def check_grid_size(grid_size: Sequence[int]) -> Tuple[int, int]:
    """Returns ``grid_size`` as a tuple of two ints; raises ``ValueError`` unless it is two positive ints."""
    if (
        not isinstance(grid_size, (tuple, list))
        or len(grid_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid_size)
    ):
        raise ValueError(f"`grid_size` must be two positive ints (grid_h, grid_w), got {grid_size!r}")
    return int(grid_size[0]), int(grid_size[1])
