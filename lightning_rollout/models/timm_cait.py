"""timm CaiT: self-attention over the patches, then class-attention stages that read them.

CaiT's patch blocks attend among the patch tokens only (``(B, heads, P, P)``; talking heads mix the heads
after the softmax, and the mixed weights are what multiply the values, so they are what is read). The
class token joins only in the class-attention blocks at the end, where it alone queries
``[class, patches]`` (``(B, heads, 1, 1 + P)``) while the patches pass through unchanged.

Both kinds are laid out on the ``1 + P`` tokens the head sees, so one relevance chain covers the whole
model: a patch block becomes ``diag(1, A)`` (the class token does not exist yet, so it keeps itself), a
class-attention block becomes the identity with its class row replaced by the attention row. Gradients
are laid out the same way with zeros in the added places. The map is then the class-token row of the
chain: what the class-attention stages read from the patches, carried back through the patch blocks.
"""

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Tuple, cast

import torch
from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.core.hooks import forward_hooks, fused_attention_disabled
from lightning_rollout.models.base import CaptureCallback, ModelAdapter, UnsupportedModelError
from lightning_rollout.models.readout import Readout, token_readout
from lightning_rollout.models.registry import register_adapter
from lightning_rollout.models.timm_vit import timm_input_channels

if TYPE_CHECKING:
    from timm.models.cait import Cait


def _patch_block_layout(tensor: Tensor, corner: float) -> Tensor:
    """``(B, H, P, P)`` → ``(B, H, 1 + P, 1 + P)``: ``corner`` at ``[0, 0]``, zeros elsewhere in row/column 0."""
    out = tensor.new_zeros(*tensor.shape[:2], tensor.shape[2] + 1, tensor.shape[3] + 1)
    out[:, :, 1:, 1:] = tensor
    out[:, :, 0, 0] = corner
    return out


def _class_block_layout(tensor: Tensor, diagonal: float) -> Tensor:
    """``(B, H, 1, 1 + P)`` → ``(B, H, 1 + P, 1 + P)``: row 0 is ``tensor``, the patch rows ``diagonal · I``."""
    size = tensor.shape[-1]
    out = torch.diag_embed(tensor.new_full((size,), diagonal)).expand(*tensor.shape[:2], size, size).clone()
    out[:, :, 0] = tensor[:, :, 0]
    out[:, :, 1:, 0] = 0
    return out


@register_adapter(first=False)
class TimmCaiTAdapter(ModelAdapter):
    """timm ``Cait`` (see the module docstring)."""

    family = "timm-cait"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        from timm.models.cait import Cait

        return next((module for module in model.modules() if isinstance(module, Cait)), None)

    @property
    def cait(self) -> "Cait":
        """The root, typed as the timm ``Cait`` `find` found."""
        return cast("Cait", self.root)

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        grid = cast(Tuple[int, int], self.cait.patch_embed.grid_size)  # timm's PatchEmbed: a tuple of two ints
        return TokenGeometry(1, True, (int(grid[0]), int(grid[1])))

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        cait = self.cait
        patch = [f"blocks.{i}.attn.attn_drop" for i in range(len(cait.blocks))]
        token = [f"blocks_token_only.{i}.attn.attn_drop" for i in range(len(cait.blocks_token_only))]
        return [(name, cait.get_submodule(name)) for name in patch + token]

    def attention_settings(self):
        return fused_attention_disabled(self.root)

    @contextmanager
    def capture_attention(self, layers: List[Tuple[str, nn.Module]], on_capture: CaptureCallback) -> Iterator[None]:
        names = {module: name for name, module in layers}

        def hook(module: nn.Module, inputs: tuple, attention: Tensor) -> None:
            layout = _class_block_layout if attention.shape[-2] == 1 else _patch_block_layout
            on_capture(names[module], attention, layout)

        with forward_hooks([module for _, module in layers], hook):
            yield

    def readout(self, geometry: TokenGeometry) -> Readout:
        return token_readout(geometry.num_tokens)

    def head(self) -> Callable[[Tensor], Tensor]:
        raise UnsupportedModelError(
            "method 'legrad' scores the tokens after every block with the model's own head, and CaiT's head reads "
            "the class token, which its patch blocks do not carry (it joins only in the class-attention stages); "
            "use 'grad_rollout' or 'chefer'"
        )

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        name = f"blocks.{len(self.cait.blocks) - 1}.norm1"
        return name, self.cait.get_submodule(name)

    def gradcam_layout(self, activation: Tensor, fill: float) -> Tensor:
        # The patch blocks carry no class token: an empty slot goes in front for the shared geometry.
        return torch.cat([activation.new_full((activation.shape[0], 1, activation.shape[2]), fill), activation], dim=1)

    def input_channels(self) -> Optional[int]:
        return timm_input_channels(self.root)
