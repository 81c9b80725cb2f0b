"""Each Hugging Face vision family in one table: what its head reads (the read-out of relevance maps), the
head itself applied to a block's tokens, and its final norm and classifier applied to one pooled token
(LeGrad's two read-outs), keyed by the model class.

A class not in the table reads the class token and has no head to apply (a bare encoder such as `ViTModel`).
"""

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional

import torch
from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models.hf.video import DIVIDED_ATTENTION
from lightning_rollout.models.readout import Readout, patch_mean_readout, token_readout

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ReadoutRule = Callable[[TokenGeometry, Any], Optional[Readout]]
"""`rule(geometry, config)`: the read-out, or `None` for the class token."""
HeadRule = Callable[["PreTrainedModel"], Callable[[Tensor], Tensor]]
"""`rule(model)`: the model's head as a function of a block's tokens `(B, N, C)` (a head rule), or of one pooled
token `(B, C)` (a pooled-head rule)."""

GLOBAL_ATTENTION = {"vit", "deit", "beit", "dinov2", "dinov2_with_registers", "clip_vision_model", "clip"}
"""`config.model_type` of the families whose geometry and head the adapter knows."""

SWIN = {"swin", "swinv2"}
"""Hierarchical families whose last stage Grad-CAM reads."""

TIMM_INSIDE = {"timm_wrapper", "timm_backbone"}
"""Hugging Face wrappers around a timm model: left to the timm adapters, which find the model inside."""

WHY_NOT: Dict[str, str] = {
    **{
        model_type: "it attends within shifted local windows, and its token grid shrinks between stages"
        for model_type in ("swin", "swinv2", "donut-swin", "maskformer-swin")
    },
    "timesformer": DIVIDED_ATTENTION,
}
"""Families without a global token attention, and why."""


@dataclass(frozen=True)
class Family:
    """How one model class reads its encoder's tokens."""

    readout: ReadoutRule
    head: Optional[HeadRule] = None
    pooled_head: Optional[HeadRule] = None


def _base(model: "PreTrainedModel", name: str) -> nn.Module:
    """The submodule ``name`` of the base model inside a task model (``layernorm``: ``vit.layernorm`` of a ViT)."""
    return model.get_submodule(f"{model.base_model_prefix}.{name}")


def _class_token(geometry: TokenGeometry, config: Any) -> Optional[Readout]:
    return None


def _patch_mean(geometry: TokenGeometry, config: Any) -> Optional[Readout]:
    return patch_mean_readout(geometry)


def _beit_pooling(geometry: TokenGeometry, config: Any) -> Optional[Readout]:
    return patch_mean_readout(geometry) if config.use_mean_pooling else None


def _normed_class_token_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    return lambda tokens: model.get_submodule("classifier")(_base(model, "layernorm")(tokens)[:, 0])


def _teacher_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(tokens: Tensor) -> Tensor:
        normed = _base(model, "layernorm")(tokens)
        cls_logits = model.get_submodule("cls_classifier")(normed[:, 0])
        distillation_logits = model.get_submodule("distillation_classifier")(normed[:, 1])
        return (cls_logits + distillation_logits) / 2

    return head


def _beit_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(tokens: Tensor) -> Tensor:
        pooled = _base(model, "pooler")(_base(model, "layernorm")(tokens))
        return model.get_submodule("classifier")(pooled)

    return head


def _dinov2_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    first_patch = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    def head(tokens: Tensor) -> Tensor:
        normed = _base(model, "layernorm")(tokens)
        features = torch.cat([normed[:, 0], normed[:, first_patch:].mean(dim=1)], dim=1)
        return model.get_submodule("classifier")(features)

    return head


def _videomae_readout(geometry: TokenGeometry, config: Any) -> Optional[Readout]:
    # No class token: `fc_norm(mean of the tokens)`, or (without mean pooling) the normed token 0, a patch.
    return patch_mean_readout(geometry) if config.use_mean_pooling else token_readout(geometry.num_tokens)


def _videomae_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(tokens: Tensor) -> Tensor:
        fc_norm = model.fc_norm  # a norm with mean pooling, else None
        if isinstance(fc_norm, nn.Module):
            return model.get_submodule("classifier")(fc_norm(tokens.mean(dim=1)))
        return model.get_submodule("classifier")(_base(model, "layernorm")(tokens)[:, 0])

    return head


def _clip_classifier_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    return lambda tokens: model.get_submodule("classifier")(tokens[:, 1:].mean(dim=1))


def _clip_projection_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    # Gives `image_embeds`: explain with output_key and a similarity target.
    return lambda tokens: model.get_submodule("visual_projection")(
        model.get_submodule("vision_model.post_layernorm")(tokens[:, 0])
    )


# Pooled heads: the same norms and classifiers on one pooled token `(B, C)`, the pooling skipped; where a head
# reads two places (DeiT's class and distillation tokens, DINOv2's class token and patch mean) the pooled token
# stands in both.


def _normed_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    return lambda pooled: model.get_submodule("classifier")(_base(model, "layernorm")(pooled))


def _teacher_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(pooled: Tensor) -> Tensor:
        normed = _base(model, "layernorm")(pooled)
        cls_logits = model.get_submodule("cls_classifier")(normed)
        distillation_logits = model.get_submodule("distillation_classifier")(normed)
        return (cls_logits + distillation_logits) / 2

    return head


def _beit_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(pooled: Tensor) -> Tensor:
        normed = _base(model, "layernorm")(pooled)  # Identity with mean pooling
        pooler_norm = _base(model, "pooler").layernorm  # the pooler's norm of the patch mean, or None (class token)
        if isinstance(pooler_norm, nn.Module):
            normed = pooler_norm(normed)
        return model.get_submodule("classifier")(normed)

    return head


def _dinov2_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(pooled: Tensor) -> Tensor:
        normed = _base(model, "layernorm")(pooled)
        return model.get_submodule("classifier")(torch.cat([normed, normed], dim=1))

    return head


def _clip_classifier_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    return lambda pooled: model.get_submodule("classifier")(pooled)


def _clip_projection_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    # LeGrad's released CLIP rule: ln_post of the mean token, then the projection.
    return lambda pooled: model.get_submodule("visual_projection")(
        model.get_submodule("vision_model.post_layernorm")(pooled)
    )


def _videomae_pooled_head(model: "PreTrainedModel") -> Callable[[Tensor], Tensor]:
    def head(pooled: Tensor) -> Tensor:
        fc_norm = model.fc_norm  # a norm with mean pooling, else None
        if isinstance(fc_norm, nn.Module):
            return model.get_submodule("classifier")(fc_norm(pooled))
        return model.get_submodule("classifier")(_base(model, "layernorm")(pooled))

    return head


FAMILIES: Dict[str, Family] = {
    "ViTForImageClassification": Family(_class_token, _normed_class_token_head, _normed_pooled_head),
    "DeiTForImageClassification": Family(_class_token, _normed_class_token_head, _normed_pooled_head),
    "DeiTForImageClassificationWithTeacher": Family(
        lambda geometry, config: token_readout(geometry.num_tokens, (0, 1)), _teacher_head, _teacher_pooled_head
    ),
    "BeitModel": Family(_beit_pooling),
    "BeitForImageClassification": Family(_beit_pooling, _beit_head, _beit_pooled_head),
    "Dinov2ForImageClassification": Family(
        lambda geometry, config: patch_mean_readout(geometry, class_weight=0.5), _dinov2_head, _dinov2_pooled_head
    ),
    "Dinov2WithRegistersForImageClassification": Family(
        lambda geometry, config: patch_mean_readout(geometry, class_weight=0.5), _dinov2_head, _dinov2_pooled_head
    ),
    "CLIPForImageClassification": Family(_patch_mean, _clip_classifier_head, _clip_classifier_pooled_head),
    "CLIPVisionModelWithProjection": Family(_class_token, _clip_projection_head, _clip_projection_pooled_head),
    "VideoMAEForVideoClassification": Family(_videomae_readout, _videomae_head, _videomae_pooled_head),
    "VivitForVideoClassification": Family(_class_token, _normed_class_token_head, _normed_pooled_head),
    "TimesformerForVideoClassification": Family(_class_token, _normed_class_token_head, _normed_pooled_head),
}
"""Model class name → how it reads its tokens (see the module docstring)."""


def family_of(model: nn.Module) -> Family:
    """The table's row for `model`'s class, or the bare encoder's (class token, no head)."""
    return FAMILIES.get(type(model).__name__, Family(_class_token))
