"""Token geometry of a Vision Transformer: prefix tokens, class token and the patch grid.

Each model family's adapter (:mod:`lightning_rollout.models`) reads it from the model, never guessing it
from ``sqrt(N)``; this module holds the record and the checks of the user's overrides.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple


@dataclass(frozen=True)
class TokenGeometry:
    """How a ViT lays out its tokens.

    Attributes:
        num_prefix_tokens: leading tokens that are not patches (class, distillation and register tokens).
        has_class_token: whether token 0 is a class token.
        grid_size: ``(grid_h, grid_w)`` of the patch tokens.
    """

    num_prefix_tokens: int
    has_class_token: bool
    grid_size: Tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """Total sequence length ``N``."""
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]


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
