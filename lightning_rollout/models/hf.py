"""Hugging Face ``transformers`` vision models (5.x): ViT, DeiT, BEiT, DINOv2, CLIP vision, Swin (Grad-CAM).

``transformers`` is optional: nothing here imports it at import time. :meth:`HFAdapter.find` looks at
``sys.modules`` only; a user holding a Hugging Face model has imported it already.

- Attention: the modules each model class declares as its ``attentions`` outputs
  (``_can_record_outputs``, what ``output_attentions=True`` collects: ``ViTAttention``,
  ``Dinov2Attention``, ``CLIPAttention``, ...). They return ``(output, attn_weights)``; under the eager
  implementation ``attn_weights`` is the post-softmax attention that is multiplied with the values, so
  it is on the gradient path. The default implementation (SDPA) returns no weights, so the side pass
  switches the model to this module's own eager attention (:func:`attention_forward`, registered in
  transformers' attention interface as ``"lightning_rollout_eager"``) with ``set_attn_implementation``,
  and afterwards writes every config's previous value back (the config and the outputs are then
  bit-identical to before).
- Geometry (from ``config``): one class token, plus DeiT's distillation token and DINOv2-with-registers'
  ``num_register_tokens``; the grid is ``(H // patch_size, W // patch_size)`` of the input. Swin: no
  prefix tokens and the grid of its last stage (the input's patch grid, halved, rounded up, at each of
  the ``len(depths) - 1`` patch mergings), which is where Grad-CAM reads it.
- Read-out, as each head reads the tokens: ViT, DeiT, CLIP vision (``pooler_output``) → the class token;
  ``DeiTForImageClassificationWithTeacher`` (mean of the class and distillation heads) → both tokens;
  BEiT with ``use_mean_pooling`` and ``CLIPForImageClassification`` → the mean of the patch tokens;
  ``Dinov2(WithRegisters)ForImageClassification`` (``concat(CLS, mean(patches))``) → half class token,
  half patch mean.
- Head (LeGrad), as each classification model reads its encoder's tokens: the base model's final
  ``layernorm`` then the class token (ViT, DeiT), the mean of the class and distillation heads (DeiT with
  teacher), BEiT's pooler, DINOv2's ``concat(CLS, mean(patches))``, CLIP's mean of the patch tokens (no
  norm); ``CLIPVisionModelWithProjection``'s ``post_layernorm`` of the class token then ``visual_projection``
  (its ``image_embeds``, for a similarity ``target`` with ``output_key="image_embeds"``). Base models
  without a head (``ViTModel``, ``CLIPVisionModel``, ...) have none to apply.
- Grad-CAM: the tokens the last attention layer reads (the output of its input norm:
  ``layernorm_before``, ``norm1``, ``layer_norm1``); Swin: the output of the final ``layernorm``.
- Swin (also SwinV2, Donut-Swin, MaskFormer-Swin) has no global token attention: the attention methods
  refuse with the reason; Grad-CAM works for Swin and SwinV2.

Other Hugging Face models whose attention modules return ``(output, attn_weights)`` work with the
``num_prefix_tokens`` and ``grid_size`` arguments.
"""

import sys
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models.registry import register_adapter
from lightning_rollout.models.base import (
    AttentionSink,
    ModelAdapter,
    Readout,
    UnsupportedModelError,
    patch_mean_readout,
    token_readout,
)
from lightning_rollout.models.layer_input import layer_input

_GLOBAL_ATTENTION = {"vit", "deit", "beit", "dinov2", "dinov2_with_registers", "clip_vision_model", "clip"}
"""``config.model_type`` of the families whose geometry and head this adapter knows."""

_SWIN = {"swin", "swinv2"}

_TIMM_INSIDE = {"timm_wrapper", "timm_backbone"}
"""Hugging Face wrappers around a timm model: left to the timm adapters, which find the model inside."""

_WHY_NOT: Dict[str, str] = {
    model_type: "it attends within shifted local windows, and its token grid shrinks between stages"
    for model_type in ("swin", "swinv2", "donut-swin", "maskformer-swin")
}
"""Families without a global token attention, and why."""


def _vision_config(config):
    """The config holding the image geometry (``vision_config`` of a vision-text model such as CLIP)."""
    return getattr(config, "vision_config", None) or config


def _pair(value) -> Tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _configs(root: nn.Module) -> list:
    """Every config object of ``root``'s Hugging Face models, sub-configs included (each once)."""
    from transformers import PreTrainedModel

    found, pending = {}, [m.config for m in root.modules() if isinstance(m, PreTrainedModel)]
    while pending:
        config = pending.pop()
        if id(config) in found:
            continue
        found[id(config)] = config
        pending.extend(getattr(config, key) for key in getattr(config, "sub_configs", {}) if getattr(config, key, None))
    return list(found.values())


ATTENTION_IMPLEMENTATION = "lightning_rollout_eager"
"""The name :func:`attention_forward` is registered under in transformers' attention interface."""


def attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    **kwargs,
) -> Tuple[Tensor, Tensor]:
    """Eager attention for the side pass, in transformers' attention-interface signature.

    Computes what transformers' ``eager_attention_forward`` computes, with fewer passes over the
    ``(B, heads, N, N)`` tensors: the scale is applied to the queries (the ``(B·heads, N, d)`` copy that a
    batched product of the head-split views makes anyway) instead of to the scores, and both products
    are ``bmm`` on ``(B·heads, ·, ·)`` views. The post-softmax attention it returns is the tensor
    multiplied with the values, so gradients of the output reach it. For a power-of-two scale
    (``head_dim`` 16, 64, 256, ...) every output is bit-identical to transformers' eager attention; other
    scales differ by float rounding.

    Args:
        module: the attention module (unused; part of the interface).
        query, key, value: ``(B, heads, N, d)`` (keys and values: ``(B, heads, S, d)``).
        attention_mask: additive mask broadcastable to ``(B, heads, N, S)``, or ``None``.
        scaling: factor of the scores; ``None`` gives ``d ** -0.5``.
        dropout: must be 0 (the side pass runs in eval mode).

    Returns:
        ``(output (B, N, heads, d), attention (B, heads, N, S))``.

    Raises:
        ValueError: if ``dropout`` is not 0.
    """
    if dropout:
        raise ValueError(f"the side pass's attention takes no dropout (it runs in eval mode), got dropout={dropout}")
    batch, heads, length, head_dim = query.shape
    keys = key.shape[2]
    scaling = head_dim**-0.5 if scaling is None else scaling
    queries = query.reshape(batch * heads, length, head_dim) * scaling
    # Keys copied as (B·heads, d, S), the layout ``torch.matmul`` gives them: the same product kernel.
    scores = torch.bmm(queries, key.transpose(2, 3).reshape(batch * heads, head_dim, keys))
    scores = scores.view(batch, heads, length, keys)
    if attention_mask is not None:
        scores = scores + attention_mask
    if scores.dtype == torch.float32:
        attention = scores.softmax(dim=-1)
    else:  # as transformers' eager attention: the softmax in float32, the result in the queries' dtype
        attention = scores.softmax(dim=-1, dtype=torch.float32).to(query.dtype)
    output = torch.bmm(attention.view(batch * heads, length, keys), value.reshape(batch * heads, keys, head_dim))
    return output.view(batch, heads, length, head_dim).transpose(1, 2).contiguous(), attention


def _register_attention() -> None:
    """Registers :func:`attention_forward` (and the eager mask format it adds) with transformers, once."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if ATTENTION_IMPLEMENTATION not in ALL_ATTENTION_FUNCTIONS.valid_keys():
        ALL_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_IMPLEMENTATION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def eager_attention(root: nn.Module) -> Iterator[None]:
    """Switches ``root`` to :func:`attention_forward`; writes every config's previous value back on exit.

    Raises:
        UnsupportedModelError: if the model cannot switch (its attention does not follow transformers'
            attention interface).
    """
    saved = [(config, config.__dict__.get("_attn_implementation_internal")) for config in _configs(root)]
    try:
        _register_attention()
        root.set_attn_implementation(ATTENTION_IMPLEMENTATION)
        if root.config._attn_implementation != ATTENTION_IMPLEMENTATION:
            raise UnsupportedModelError(
                f"{type(root).__name__} cannot switch to an eager attention implementation, so its "
                "attention weights are never materialised; use method 'gradcam'"
            )
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation


def _attention_classes(root: nn.Module) -> Tuple[type, ...]:
    """The module classes whose second output is the attention (what ``output_attentions`` collects)."""
    from transformers.utils.output_capturing import OutputRecorder

    specs = getattr(type(root), "_can_record_outputs", None) or {}
    specs = specs.get("attentions", [])
    classes = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if isinstance(spec, type):
            classes.append(spec)
        elif isinstance(spec, OutputRecorder) and spec.index == 1 and spec.layer_name is None and spec.target_class:
            classes.append(spec.target_class)
    return tuple(classes)


def _hidden_states(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["hidden_states"]


class HFAdapter(ModelAdapter):
    """Hugging Face ``PreTrainedModel`` vision transformers (see the module docstring)."""

    family = "hf"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        modeling = sys.modules.get("transformers.modeling_utils")
        if modeling is None:  # no Hugging Face model can exist
            return None
        for module in model.modules():
            if isinstance(module, modeling.PreTrainedModel) and module.config.model_type not in _TIMM_INSIDE:
                return module
        return None

    @property
    def model_type(self) -> str:
        return str(getattr(self.root.config, "model_type", ""))

    # ------------------------------------------------------------------------------------- geometry

    def geometry(self, image_size: Optional[Tuple[int, int]]) -> TokenGeometry:
        config = _vision_config(self.root.config)
        if image_size is None:
            image_size = _pair(config.image_size)
        patch = _pair(config.patch_size)
        height, width = int(image_size[0]), int(image_size[1])
        if self.model_type in _SWIN:
            grid = (-(-height // patch[0]), -(-width // patch[1]))  # the input is padded to whole patches
            for _ in range(len(config.depths) - 1):
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
            return TokenGeometry(0, False, grid)
        if self.model_type not in _GLOBAL_ATTENTION:
            raise ValueError(
                f"cannot read the token geometry of {type(self.root).__name__} (model_type "
                f"{self.model_type!r}); pass `num_prefix_tokens` and `grid_size`"
            )
        prefix = 1 + (self.model_type == "deit") + int(getattr(config, "num_register_tokens", 0) or 0)
        return TokenGeometry(prefix, True, (height // patch[0], width // patch[1]))

    # ------------------------------------------------------------------------------------ attention

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        name = type(self.root).__name__
        if self.model_type in _WHY_NOT:
            raise UnsupportedModelError(
                f"{name} has no global token attention for the attention methods (rollout, grad_rollout, "
                f"chefer, legrad, attention): {_WHY_NOT[self.model_type]}. Use method 'gradcam'"
                + (", which reads its last stage's tokens" if self.model_type in _SWIN else "")
            )
        classes = _attention_classes(self.root)
        # A vision-text model (CLIP) also has text attention layers: only the vision tower's count.
        tower = getattr(self.root, "vision_model", self.root)
        in_tower = {id(m) for m in tower.modules()}
        layers = [(n, m) for n, m in self.root.named_modules() if isinstance(m, classes) and id(m) in in_tower]
        if not layers:
            raise UnsupportedModelError(
                f"{name} declares no attention modules that output their attention weights "
                "(`_can_record_outputs['attentions']`); use method 'gradcam' with a `gradcam_layer`"
            )
        return layers

    def attention_settings(self):
        return eager_attention(self.root)

    def attention_from_output(self, module: nn.Module, output) -> Tensor:
        attention = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if attention is None:
            raise UnsupportedModelError(
                f"{type(module).__name__} returned no attention weights: the eager attention implementation "
                "was not active"
            )
        return attention

    # ------------------------------------------------------------------------------------- read-out

    def readout(self, geometry: TokenGeometry) -> Readout:
        name, config = type(self.root).__name__, self.root.config
        if name == "DeiTForImageClassificationWithTeacher":
            return token_readout(geometry.num_tokens, (0, 1))
        if name in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
            return patch_mean_readout(geometry, class_weight=0.5)
        if name == "CLIPForImageClassification" or (self.model_type == "beit" and config.use_mean_pooling):
            return patch_mean_readout(geometry)
        return super().readout(geometry)

    # --------------------------------------------------------------------------------------- head

    def head(self) -> Callable[[Tensor], Tensor]:
        model, name = self.root, type(self.root).__name__
        base = getattr(model, model.base_model_prefix, None)
        if name == "CLIPForImageClassification":
            return lambda tokens: model.classifier(tokens[:, 1:].mean(dim=1))
        if name == "CLIPVisionModelWithProjection":  # gives `image_embeds`: explain with output_key and a target
            return lambda tokens: model.visual_projection(model.vision_model.post_layernorm(tokens[:, 0]))
        if name in ("ViTForImageClassification", "DeiTForImageClassification"):
            return lambda tokens: model.classifier(base.layernorm(tokens)[:, 0])
        if name == "DeiTForImageClassificationWithTeacher":
            def teacher_head(tokens: Tensor) -> Tensor:
                normed = base.layernorm(tokens)
                return (model.cls_classifier(normed[:, 0]) + model.distillation_classifier(normed[:, 1])) / 2

            return teacher_head
        if name == "BeitForImageClassification":
            return lambda tokens: model.classifier(base.pooler(base.layernorm(tokens)))
        if name in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
            first_patch = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

            def dinov2_head(tokens: Tensor) -> Tensor:
                normed = base.layernorm(tokens)
                return model.classifier(torch.cat([normed[:, 0], normed[:, first_patch:].mean(dim=1)], dim=1))

            return dinov2_head
        return super().head()

    # ------------------------------------------------------------------------------------- Grad-CAM

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        """Swin: the final ``layernorm``; others: the last attention layer (Grad-CAM reads its input)."""
        if self.model_type in _SWIN:
            prefix = self.root.base_model_prefix
            base = getattr(self.root, prefix, self.root)
            return (f"{prefix}.layernorm" if base is not self.root else "layernorm"), base.layernorm
        if self.model_type in _WHY_NOT:
            raise UnsupportedModelError(
                f"{type(self.root).__name__} has no built-in Grad-CAM layer: pass `gradcam_layer` (a module "
                "outputting tokens (B, N, C) or a map (B, C, h, w)) and `grid_size`"
            )
        return self.attention_layers()[-1]

    def capture_gradcam(self, sink: AttentionSink):
        if self.model_type in _SWIN:
            return super().capture_gradcam(sink)
        name, module = self.gradcam_layer()
        return layer_input(name, module, sink, _hidden_states, sequence_first=False)

    # -------------------------------------------------------------------------------------- display

    def input_channels(self) -> Optional[int]:
        channels = getattr(_vision_config(self.root.config), "num_channels", None)
        return channels if isinstance(channels, int) else None

    def num_classes(self) -> Optional[int]:
        labels = getattr(self.root, "num_labels", None)
        return labels if isinstance(labels, int) else None


register_adapter(HFAdapter, first=False)
