"""timm Vision Transformers with global token self-attention.

Covers ``VisionTransformer`` (ViT, DeiT/DeiT3, CLIP, SigLIP, DINOv2 with or without registers,
FlexiViT, distilled DeiT), ``Eva`` (EVA, EVA02, timm's DINOv3 ViTs), ``Beit`` (BEiT, BEiTv2),
``VisionTransformerRelPos`` (vit_relpos/srelpos) and ``NaFlexVit`` fed plain images.

- Attention: each block's ``attn.attn_drop`` outputs the post-softmax attention in eval mode, once timm's
  fused kernel (``fused_attn``, which never calls ``attn_drop``) is switched off per module.
- Geometry: ``num_prefix_tokens``, ``cls_token``, ``patch_embed.grid_size`` (``dynamic_feat_size`` of the
  input for ``dynamic_img_size`` models and for NaFlexViT, whose ``embeds`` cut any image into patches).
- Read-out by ``global_pool``: ``token`` → the class token (a distilled DeiT averages its class and
  distillation heads); ``avg``/``avgmax``/``max`` → the mean of the patch tokens (also when a class token
  exists, as in BEiT and EVA); ``map`` → the pooling attention's weights over the tokens it pools.
- Grad-CAM: the last block's ``norm1`` (the tokens its attention reads).
- Head (LeGrad): ``forward_head(norm(tokens))``, the model's own final norm, pooling (class token, average,
  attention pooling), ``fc_norm`` and classifier. Pooled head (LeGrad's released rule, on the mean token):
  ``norm`` → ``fc_norm`` → ``head_drop`` → ``head``, the pooling skipped; a distilled DeiT averages ``head``
  and ``head_dist`` on the pooled token (its ``forward_head`` with the pooled token in both places); an
  attention-pooling head (``global_pool="map"``) runs its pooler on the pooled token as a one-token sequence.
"""

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, List, Optional, Protocol, Tuple, Union, cast

import torch
from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.core.hooks import fused_attention_disabled
from lightning_rollout.models.base import ModelAdapter, UnsupportedModelError
from lightning_rollout.models.readout import Readout, patch_mean_readout, token_readout
from lightning_rollout.models.registry import register_adapter

if TYPE_CHECKING:
    from timm.layers import AttentionPoolLatent
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.naflexvit import NaFlexVit
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    TimmViT = Union[VisionTransformer, Eva, Beit, VisionTransformerRelPos, NaFlexVit]
    """The classes of `_global_attention_classes`: what `TimmViTAdapter.find` returns."""


def _global_attention_classes() -> Tuple[type, ...]:
    from timm.models.beit import Beit
    from timm.models.eva import Eva
    from timm.models.naflexvit import NaFlexVit
    from timm.models.vision_transformer import VisionTransformer
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    return VisionTransformer, Eva, Beit, VisionTransformerRelPos, NaFlexVit


class _PatchEmbedding(Protocol):
    """What every timm patch embedding (``PatchEmbed``, ``HybridEmbed``, NaFlexViT's ``NaFlexEmbeds``) answers."""

    def dynamic_feat_size(self, img_size: Tuple[int, int]) -> Tuple[int, int]:
        """The patch grid ``(grid_h, grid_w)`` of inputs of ``img_size`` ``(H, W)``."""
        ...


def timm_input_channels(model: nn.Module) -> Optional[int]:
    """The input channels of a timm model: its first convolution's (the patch embedding's, for ViTs)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None:
        return conv.in_channels
    channels = getattr(model, "in_chans", None)
    return channels if isinstance(channels, int) else None


def _pool_attention(pool: "AttentionPoolLatent", tokens: Tensor) -> Tensor:
    """The head-averaged weights ``(B, N)`` with which timm's ``AttentionPoolLatent`` pools ``tokens``."""
    batch, num_tokens, channels = tokens.shape
    if pool.pos_embed is not None:
        tokens = tokens + pool.pos_embed.unsqueeze(0).to(tokens.dtype)
    query = pool.q(pool.latent.expand(batch, -1, -1))
    query = query.reshape(batch, pool.latent_len, pool.num_heads, pool.head_dim).transpose(1, 2)
    key = pool.kv(tokens).reshape(batch, num_tokens, 2, pool.num_heads, pool.head_dim)[:, :, 0].transpose(1, 2)
    query, key = pool.q_norm(query), pool.k_norm(key)
    weights = ((query * pool.scale) @ key.transpose(-2, -1)).softmax(dim=-1)
    return weights.float().mean(dim=(1, 2))


@register_adapter(first=False)
class TimmViTAdapter(ModelAdapter):
    """timm ViTs with global token self-attention (see the module docstring)."""

    family = "timm-vit"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        classes = _global_attention_classes()
        for module in model.modules():
            if isinstance(module, classes):
                return module
        return None

    @property
    def vit(self) -> "TimmViT":
        """The root, typed as the timm class `find` found it to be."""
        return cast("TimmViT", self.root)

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        vit = self.vit
        embeds = getattr(vit, "embeds", None)
        embed = embeds if isinstance(embeds, nn.Module) else vit.get_submodule("patch_embed")
        # NaFlexViT's embedding has no fixed grid: it cuts any image into patch_size patches.
        fixed = getattr(embed, "grid_size", None)
        grid: Optional[Tuple[int, int]]
        if image_size is not None and (getattr(vit, "dynamic_img_size", False) or fixed is None):
            grid = cast(_PatchEmbedding, embed).dynamic_feat_size((image_size[0], image_size[1]))
        else:
            grid = fixed if fixed is not None else getattr(embed, "pos_embed_grid_size", None)
        if grid is None:
            raise ValueError(f"cannot read the patch grid of {type(vit).__name__}; pass `grid_size`")
        has_class_token = getattr(vit, "cls_token", None) is not None
        return TokenGeometry(int(vit.num_prefix_tokens), has_class_token, (int(grid[0]), int(grid[1])))

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        layers = [(name, module) for name, module in self.root.named_modules() if name.endswith("attn.attn_drop")]
        if not layers:
            raise UnsupportedModelError(f"{type(self.root).__name__} has no `attn.attn_drop` attention modules")
        return layers

    def attention_settings(self):
        return fused_attention_disabled(self.root)

    def readout(self, geometry: TokenGeometry) -> Readout:
        pool = getattr(self.root, "global_pool", "token")
        if pool == "token" and geometry.has_class_token:
            distilled = getattr(self.root, "dist_token", None) is not None
            return token_readout(geometry.num_tokens, (0, 1) if distilled else (0,))
        return patch_mean_readout(geometry, include_prefix=bool(getattr(self.root, "pool_include_prefix", False)))

    @contextmanager
    def capture_readout(self) -> Iterator[Callable[[TokenGeometry], Readout]]:
        pool = getattr(self.root, "attn_pool", None)
        if getattr(self.root, "global_pool", None) != "map" or pool is None:
            yield self.readout
            return
        captured: List[Tensor] = []

        def hook(module: "AttentionPoolLatent", inputs: tuple) -> None:  # the pool of global_pool="map"
            with torch.no_grad():
                captured.append(_pool_attention(module, inputs[0]))

        handle = pool.register_forward_pre_hook(hook)
        try:
            yield lambda geometry: self._pool_readout(geometry, captured)
        finally:
            handle.remove()

    def _pool_readout(self, geometry: TokenGeometry, captured: List[Tensor]) -> Readout:
        weights = captured[-1]
        if weights.shape[1] != geometry.num_tokens:  # the pool reads the patch tokens only
            weights = torch.cat([weights.new_zeros(weights.shape[0], geometry.num_prefix_tokens), weights], dim=1)
        return Readout(pooled=weights)

    def head(self) -> Callable[[Tensor], Tensor]:
        vit = self.vit
        return lambda tokens: vit.forward_head(vit.norm(tokens))

    def pooled_head(self) -> Callable[[Tensor], Tensor]:
        vit = self.vit
        pool = getattr(vit, "attn_pool", None)
        head_dist = getattr(vit, "head_dist", None)

        def head(pooled: Tensor) -> Tensor:
            x = vit.norm(pooled)
            if pool is not None:
                x = pool(x[:, None])
            if head_dist is not None:  # timm's distilled forward_head: no fc_norm, the two heads averaged
                x = vit.head_drop(x)
                return (vit.head(x) + head_dist(x)) / 2
            return vit.head(vit.head_drop(vit.fc_norm(x)))

        return head

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        layers = [(name, module) for name, module in self.root.named_modules() if name.endswith("norm1")]
        if not layers:
            raise UnsupportedModelError(f"{type(self.root).__name__} has no block `norm1` for Grad-CAM")
        return layers[-1]

    def data_config(self) -> dict:
        if not getattr(self.root, "pretrained_cfg", None):
            return {}
        from timm.data import resolve_model_data_config

        return resolve_model_data_config(self.root)

    def input_channels(self) -> Optional[int]:
        return timm_input_channels(self.root)
