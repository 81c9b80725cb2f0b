"""The adapter of Hugging Face ``transformers`` vision models (5.x): ViT, DeiT, BEiT, DINOv2, CLIP vision, Swin (Grad-CAM),
and the video models VideoMAE, ViViT and TimeSformer (Grad-CAM; `video`).

``transformers`` is optional: nothing here imports it at import time. `HFAdapter.find` looks at
``sys.modules`` only; a user holding a Hugging Face model has imported it already.

- Attention: the modules each model class declares as its ``attentions`` outputs
  (``_can_record_outputs``, what ``output_attentions=True`` collects: ``ViTAttention``,
  ``Dinov2Attention``, ``CLIPAttention``, ...). They return ``(output, attn_weights)``; under the eager
  implementation ``attn_weights`` is the post-softmax attention that is multiplied with the values, so
  it is on the gradient path. The default implementation (SDPA) returns no weights, so the side pass
  switches the model to our own eager attention (`attention`, registered in
  transformers' attention interface as ``"lightning_rollout_eager"``) with ``set_attn_implementation``,
  and afterwards writes every config's previous value back (the config and the outputs are then
  bit-identical to before).
- Geometry (from ``config``): one class token, plus DeiT's distillation token and DINOv2-with-registers'
  ``num_register_tokens``; the grid is ``(H // patch_size, W // patch_size)`` of the input. Swin: no
  prefix tokens and the grid of its last stage (the input's patch grid, halved, rounded up, at each of
  the ``len(depths) - 1`` patch mergings), which is where Grad-CAM reads it.
- Read-out and head: one row per model class in `families`.
  Read-out, as each head reads the tokens: ViT, DeiT, CLIP vision (``pooler_output``) → the class token;
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
- Pooled head (LeGrad's released rule, on the mean token): the same norms and classifiers on one pooled
  token, the pooling skipped: ``layernorm`` then ``classifier`` (ViT, DeiT), the mean of both DeiT-with-teacher
  heads, BEiT's ``layernorm`` and its pooler's norm, DINOv2's classifier on ``concat(p, p)`` of the normed
  token, CLIP's classifier (no norm), and ``post_layernorm`` then ``visual_projection`` (the released CLIP
  rule itself).
- Grad-CAM: the tokens the last attention layer reads (the output of its input norm:
  ``layernorm_before``, ``norm1``, ``layer_norm1``); Swin: the output of the final ``layernorm``.
- Swin (also SwinV2, Donut-Swin, MaskFormer-Swin) has no global token attention: the attention methods
  refuse with the reason; Grad-CAM works for Swin and SwinV2.
- Video (`video`): clips ``(B, T, C, H, W)``; the geometry adds the temporal
  token count ``T // tubelet``. VideoMAE and ViViT serve every method; TimeSformer's divided attention
  refuses the attention methods with the reason, and Grad-CAM reads its last spatial attention's tokens.

Other Hugging Face models whose attention modules return ``(output, attn_weights)`` work with the
``num_prefix_tokens`` and ``grid_size`` arguments.
"""

import sys
from typing import TYPE_CHECKING, Callable, List, Optional, Tuple, Type, cast

from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry, VideoInput
from lightning_rollout.models.base import CaptureCallback, ModelAdapter, UnsupportedModelError
from lightning_rollout.models.hf.attention import eager_attention
from lightning_rollout.models.hf.families import GLOBAL_ATTENTION, SWIN, TIMM_INSIDE, WHY_NOT, family_of
from lightning_rollout.models.hf.video import VIDEO, timesformer_tokens, video_geometry, video_input
from lightning_rollout.models.layer_input import layer_input
from lightning_rollout.models.readout import Readout
from lightning_rollout.models.registry import register_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def _vision_config(config):
    """The config holding the image geometry (``vision_config`` of a vision-text model such as CLIP)."""
    return getattr(config, "vision_config", None) or config


def _pair(value) -> Tuple[int, int]:
    return (int(value[0]), int(value[1])) if isinstance(value, (tuple, list)) else (int(value), int(value))


def _attention_classes(root: nn.Module) -> Tuple[Type[nn.Module], ...]:
    """The module classes whose second output is the attention (what ``output_attentions`` collects)."""
    from transformers.utils.output_capturing import OutputRecorder

    specs = getattr(type(root), "_can_record_outputs", None) or {}
    specs = specs.get("attentions", [])
    classes: List[Type[nn.Module]] = []
    for spec in specs if isinstance(specs, list) else [specs]:
        if isinstance(spec, type) and issubclass(spec, nn.Module):
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
            if isinstance(module, modeling.PreTrainedModel) and module.config.model_type not in TIMM_INSIDE:
                return module
        return None

    @property
    def pretrained(self) -> "PreTrainedModel":
        """The root, typed as the ``PreTrainedModel`` `find` found it to be."""
        return cast("PreTrainedModel", self.root)

    @property
    def model_type(self) -> str:
        return str(getattr(self.pretrained.config, "model_type", ""))

    # ------------------------------------------------------------------------------------- geometry

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        config = _vision_config(self.pretrained.config)
        if self.model_type in VIDEO:
            return video_geometry(self.model_type, config, image_size)
        if image_size is None:
            image_size = _pair(config.image_size)
        patch = _pair(config.patch_size)
        height, width = int(image_size[0]), int(image_size[1])
        if self.model_type in SWIN:
            grid = (-(-height // patch[0]), -(-width // patch[1]))  # the input is padded to whole patches
            for _ in range(len(config.depths) - 1):
                grid = ((grid[0] + 1) // 2, (grid[1] + 1) // 2)
            return TokenGeometry(0, False, grid)
        if self.model_type not in GLOBAL_ATTENTION:
            raise ValueError(
                f"cannot read the token geometry of {type(self.root).__name__} (model_type "
                f"{self.model_type!r}); pass `num_prefix_tokens` and `grid_size`"
            )
        prefix = 1 + (self.model_type == "deit") + int(getattr(config, "num_register_tokens", 0) or 0)
        return TokenGeometry(prefix, True, (height // patch[0], width // patch[1]))

    def video_input(self) -> Optional[VideoInput]:
        return video_input(self.model_type, self.pretrained.config) if self.model_type in VIDEO else None

    # ------------------------------------------------------------------------------------ attention

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        name = type(self.root).__name__
        if self.model_type in WHY_NOT:
            raise UnsupportedModelError(
                f"{name} has no global token attention for the attention methods (rollout, grad_rollout, "
                f"chefer, legrad, attention): {WHY_NOT[self.model_type]}. Use method 'gradcam'"
                + (", which reads its last stage's tokens" if self.model_type in SWIN else "")
                + (", which reads the tokens of its last block's spatial attention" if self._timesformer else "")
            )
        classes = _attention_classes(self.root)
        # A vision-text model (CLIP) also has text attention layers: only the vision tower's count.
        tower = getattr(self.root, "vision_model", self.root)
        in_tower = {id(m) for m in tower.modules()}
        layers: List[Tuple[str, nn.Module]] = [
            (n, m) for n, m in self.root.named_modules() if isinstance(m, classes) and id(m) in in_tower
        ]
        if not layers:
            raise UnsupportedModelError(
                f"{name} declares no attention modules that output their attention weights "
                "(`_can_record_outputs['attentions']`); Grad-CAM works with a `gradcam_layer`"
            )
        return layers

    def attention_settings(self):
        return eager_attention(self.pretrained)

    def attention_from_output(self, module: nn.Module, output) -> Tensor:
        attention = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if attention is None:
            raise UnsupportedModelError(
                f"{type(module).__name__} returned no attention weights: the eager attention implementation "
                "was not active"
            )
        return attention

    # ---------------------------------------------------------------------------- read-out and head

    def readout(self, geometry: TokenGeometry) -> Readout:
        readout = family_of(self.root).readout(geometry, self.pretrained.config)
        return super().readout(geometry) if readout is None else readout

    def head(self) -> Callable[[Tensor], Tensor]:
        rule = family_of(self.root).head
        return super().head() if rule is None else rule(self.pretrained)

    def pooled_head(self) -> Callable[[Tensor], Tensor]:
        rule = family_of(self.root).pooled_head
        return super().pooled_head() if rule is None else rule(self.pretrained)

    # ------------------------------------------------------------------------------------- Grad-CAM

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        """Swin: the final ``layernorm``; others: the last attention layer (Grad-CAM reads its input)."""
        if self.model_type in SWIN:
            prefix = self.pretrained.base_model_prefix  # where a task model holds its base model (`swin`)
            name = f"{prefix}.layernorm" if hasattr(self.root, prefix) else "layernorm"
            return name, self.root.get_submodule(name)
        if self._timesformer:
            name = [n for n, m in self.root.named_modules() if type(m).__name__ == "TimesformerLayer"][-1]
            return f"{name}.attention", self.root.get_submodule(f"{name}.attention")
        if self.model_type in WHY_NOT:
            raise UnsupportedModelError(
                f"{type(self.root).__name__} has no built-in Grad-CAM layer: pass `gradcam_layer` (a module "
                "outputting tokens (B, N, C) or a map (B, C, h, w)) and `grid_size`"
            )
        return self.attention_layers()[-1]

    def capture_gradcam(self, on_capture: CaptureCallback):
        if self.model_type in SWIN:
            return super().capture_gradcam(on_capture)
        name, module = self.gradcam_layer()
        if self._timesformer:  # its tokens, laid out time first (`gradcam_layout`)
            return layer_input(
                name, module, lambda n, tokens: on_capture(n, tokens, self.gradcam_layout), _hidden_states
            )
        return layer_input(name, module, on_capture, _hidden_states, sequence_first=False)

    def gradcam_layout(self, activation: Tensor, fill: float) -> Tensor:
        return timesformer_tokens(self.pretrained.config, activation, fill) if self._timesformer else activation

    @property
    def _timesformer(self) -> bool:
        """A TimeSformer whose attention is divided or joint (``space_only`` runs frames as the batch)."""
        return self.model_type == "timesformer" and self.pretrained.config.attention_type != "space_only"

    # -------------------------------------------------------------------------------------- display

    def input_channels(self) -> Optional[int]:
        channels = getattr(_vision_config(self.pretrained.config), "num_channels", None)
        return channels if isinstance(channels, int) else None

    def num_classes(self) -> Optional[int]:
        """`config.num_labels` of a model with an image or video classification head (a bare encoder has no
        classes)."""
        if not any(kind in type(self.root).__name__ for kind in ("ForImageClassification", "ForVideoClassification")):
            return None
        labels = getattr(self.pretrained.config, "num_labels", None)
        return labels if isinstance(labels, int) else None


register_adapter(HFAdapter, first=False)
