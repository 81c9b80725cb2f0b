"""Every other timm model: Grad-CAM on the last feature map, and a reason why not the attention methods.

Hierarchical and windowed transformers (Swin, SwinV2, MaxViT, SAM-ViT, LeViT, MViTv2, PVTv2, ...), XCiT
and convolutional networks have no single token-to-token attention over the whole image that a rollout
could chain: their attention runs inside local windows, over channels, or over a grid that shrinks
between stages. What they all have is a last spatial feature map (timm's ``feature_info``), which is
what Grad-CAM reads.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, cast

from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models.base import ModelAdapter, UnsupportedModelError
from lightning_rollout.models.registry import register_adapter
from lightning_rollout.models.timm_vit import timm_input_channels

_WHY_NOT: Dict[str, str] = {
    "SwinTransformer": "it attends within shifted local windows, and its token grid shrinks between stages",
    "SwinTransformerV2": "it attends within shifted local windows, and its token grid shrinks between stages",
    "SwinTransformerV2Cr": "it attends within shifted local windows, and its token grid shrinks between stages",
    "MaxxVit": "it alternates window and dilated-grid attention on a feature map that shrinks between stages",
    "MaxxVitStage": "it alternates window and dilated-grid attention on a feature map that shrinks between stages",
    "Xcit": "its blocks attend across channels (cross-covariance attention), not across tokens",
    "VisionTransformerSAM": "most of its blocks attend within local windows",
    "Levit": "its attention runs on a token grid that shrinks between stages",
    "LevitDistilled": "its attention runs on a token grid that shrinks between stages",
    "MultiScaleVit": "its attention pools keys and queries onto grids that shrink between stages",
    "PyramidVisionTransformerV2": "its attention reads spatially reduced keys on grids that shrink between stages",
}


@register_adapter(first=False)
class TimmSpatialAdapter(ModelAdapter):
    """Any timm model with ``feature_info`` that the global-attention adapters did not take."""

    family = "timm-spatial"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        for module in model.modules():
            if getattr(module, "pretrained_cfg", None) is not None and getattr(module, "feature_info", None):
                if type(module).__module__.startswith("timm."):
                    return module
        return None

    def _last_feature(self) -> Dict[str, Any]:
        # timm models list their stages' outputs in `feature_info`: dicts of module, num_chs and reduction.
        return cast(Sequence[Dict[str, Any]], self.root.feature_info)[-1]

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        if image_size is None:
            pretrained_cfg = cast(Dict[str, Any], self.root.pretrained_cfg)  # a dict in timm (`find` checked it)
            image_size = tuple(pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
        reduction = int(self._last_feature()["reduction"])
        return TokenGeometry(0, False, (image_size[0] // reduction, image_size[1] // reduction))

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        name = type(self.root).__name__
        why = _WHY_NOT.get(name, "it has no self-attention over the image's tokens")
        raise UnsupportedModelError(f"{name} has no global token attention: {why}; Grad-CAM reads its last feature map")

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        name = self._last_feature()["module"]
        return name, self.root.get_submodule(name)

    def gradcam_layout(self, activation: Tensor, fill: float) -> Tensor:
        channels = int(self._last_feature()["num_chs"])
        if activation.dim() == 4 and activation.shape[1] != channels and activation.shape[-1] == channels:
            return activation.permute(0, 3, 1, 2)  # NHWC (Swin, SAM-ViT) to NCHW
        return activation

    def input_channels(self) -> Optional[int]:
        return timm_input_channels(self.root)
