"""Token geometry of a Vision Transformer: prefix tokens, class token and the patch grid.

The geometry is read from the model (timm attributes), never guessed from ``sqrt(N)``.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from torch import nn

from lightning_rollout.capture import uncompiled


@dataclass(frozen=True)
class TokenGeometry:
    """How a ViT lays out its tokens.

    Attributes:
        num_prefix_tokens: leading tokens that are not patches (class, distillation and register tokens).
        has_class_token: whether token 0 is a class token (read-out from its row) or not (mean of the
            patch-token rows).
        grid_size: ``(grid_h, grid_w)`` of the patch tokens.
    """

    num_prefix_tokens: int
    has_class_token: bool
    grid_size: Tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """Total sequence length ``N``."""
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]


def find_vit(model: nn.Module) -> Optional[nn.Module]:
    """Returns the first submodule (or ``model`` itself) that looks like a timm ViT, else ``None``.

    A timm ViT is recognised by its ``patch_embed`` and ``num_prefix_tokens`` attributes; a
    ``torch.compile``-d one is returned unwrapped (its ``OptimizedModule`` only forwards attributes).
    """
    for module in model.modules():
        if hasattr(module, "patch_embed") and isinstance(getattr(module, "num_prefix_tokens", None), int):
            return uncompiled(module)
    return None


def check_overrides(num_prefix_tokens: Optional[int], grid_size: Optional[Sequence[int]]) -> None:
    """Raises ``ValueError`` unless the geometry overrides are ``None`` or well formed."""
    if num_prefix_tokens is not None and (
        not isinstance(num_prefix_tokens, int) or isinstance(num_prefix_tokens, bool) or num_prefix_tokens < 0
    ):
        raise ValueError(f"`num_prefix_tokens` must be an int >= 0, got {num_prefix_tokens!r}")
    if grid_size is not None:
        _check_grid_size(grid_size)


def _check_grid_size(grid_size: Sequence[int]) -> Tuple[int, int]:
    if (
        not isinstance(grid_size, (tuple, list))
        or len(grid_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in grid_size)
    ):
        raise ValueError(f"`grid_size` must be two positive ints (grid_h, grid_w), got {grid_size!r}")
    return int(grid_size[0]), int(grid_size[1])


def resolve_geometry(
    model: nn.Module,
    image_size: Optional[Tuple[int, int]] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> TokenGeometry:
    """Reads the token geometry of ``model`` for inputs of ``image_size``.

    Args:
        model: a timm ViT, a module containing one, or any model when both overrides are given.
        image_size: ``(H, W)`` of the input; used for ``dynamic_img_size`` models.
        num_prefix_tokens: override of the number of prefix tokens. For models without a timm ViT inside,
            token 0 is taken as a class token when this is positive.
        grid_size: override of ``(grid_h, grid_w)``.

    Returns:
        The resolved :class:`TokenGeometry`.

    Raises:
        ValueError: if an override is malformed, or the geometry cannot be read from the model and no
            override provides it.
    """
    check_overrides(num_prefix_tokens, grid_size)
    grid = _check_grid_size(grid_size) if grid_size is not None else None
    vit = find_vit(model)
    if vit is None:
        if num_prefix_tokens is None or grid is None:
            raise ValueError(
                f"cannot read the token geometry of {type(model).__name__}: it contains no timm ViT (a module "
                "with `patch_embed` and `num_prefix_tokens`); pass both `num_prefix_tokens` and `grid_size`"
            )
        return TokenGeometry(num_prefix_tokens, num_prefix_tokens > 0, grid)

    prefix = vit.num_prefix_tokens if num_prefix_tokens is None else num_prefix_tokens
    if num_prefix_tokens is None:
        has_class_token = getattr(vit, "cls_token", None) is not None
    else:
        has_class_token = prefix > 0
    if grid is None:
        patch_embed = vit.patch_embed
        if getattr(vit, "dynamic_img_size", False) and image_size is not None:
            grid = tuple(int(v) for v in patch_embed.dynamic_feat_size(tuple(image_size)))
        else:
            grid = tuple(int(v) for v in patch_embed.grid_size)
    return TokenGeometry(prefix, has_class_token, grid)
