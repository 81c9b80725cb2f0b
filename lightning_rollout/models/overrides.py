"""The user's overrides on top of a model's adapter (or in place of one, for a model no adapter knows).

``explain``'s ``attention_pattern``, ``gradcam_layer``, ``num_prefix_tokens`` and ``grid_size`` replace the
adapter's answer to the same question and leave the others to it. A model that no registered adapter
finds works from the overrides alone: ``attention_pattern`` names modules whose output *is* the
post-softmax attention ``(B, heads, N, N)``, and the geometry comes from ``num_prefix_tokens`` and
``grid_size`` (token 0 is a class token when ``num_prefix_tokens`` > 0).
"""

from contextlib import contextmanager
from dataclasses import replace
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry, VideoInput, check_grid_size, check_overrides
from lightning_rollout.core.hooks import fused_attention_disabled, require_modules
from lightning_rollout.models.base import CaptureCallback, ModelAdapter, enclosing_blocks
from lightning_rollout.models.readout import Readout
from lightning_rollout.models.registry import find_adapter


class OverriddenAdapter(ModelAdapter):
    """An adapter whose answers are the user's overrides where given, the found adapter's elsewhere.

    It answers every question of the `ModelAdapter` protocol: each one an override does not touch (the
    input channels, the classes, the data config, the head, ...) is the found adapter's answer.

    Args:
        model: the user's model.
        found: the adapter `find_adapter` found, or ``None``.
        attention_pattern: fnmatch pattern of the modules whose output is the attention, or ``None``.
        gradcam_layer: fnmatch pattern; the last match is Grad-CAM's layer, or ``None``.
        num_prefix_tokens: override of the leading non-patch tokens, or ``None``.
        grid_size: override of ``(grid_h, grid_w)``, or ``None``.
    """

    family = "custom"

    def __init__(
        self,
        model: nn.Module,
        found: Optional[ModelAdapter],
        attention_pattern: Optional[str] = None,
        gradcam_layer: Optional[str] = None,
        num_prefix_tokens: Optional[int] = None,
        grid_size: Optional[Sequence[int]] = None,
    ) -> None:
        super().__init__(model if found is None else found.root)
        self.model = model
        self.found = found
        self.attention_pattern = attention_pattern
        self.gradcam_pattern = gradcam_layer
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = None if grid_size is None else check_grid_size(grid_size)
        if found is not None:
            self.family = found.family

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        return None

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        if self.num_prefix_tokens is not None and self.grid_size is not None:
            given = TokenGeometry(self.num_prefix_tokens, self.num_prefix_tokens > 0, self.grid_size)
            if self.found is None or self.found.video_input() is None:
                return given
            found = self.found.geometry(image_size)  # a video model: its temporal slices, the given grid
            return replace(given, temporal_size=found.temporal_size, tubelet=found.tubelet)
        if self.found is None:
            raise ValueError(
                f"cannot read the token geometry of {type(self.model).__name__}: no model adapter knows it "
                "(timm, Hugging Face transformers, torchvision and nn.MultiheadAttention models are known); pass "
                "both `num_prefix_tokens` and `grid_size`, or register an adapter (lightning_rollout.models)"
            )
        try:
            found = self.found.geometry(image_size)
        except ValueError:
            if self.grid_size is None and self.num_prefix_tokens is None:
                raise
            raise ValueError(
                f"cannot read the token geometry of {type(self.found.root).__name__}; pass both "
                "`num_prefix_tokens` and `grid_size`"
            ) from None
        if self.num_prefix_tokens is None:
            return replace(found, grid_size=self.grid_size or found.grid_size)
        return replace(
            found,
            num_prefix_tokens=self.num_prefix_tokens,
            has_class_token=self.num_prefix_tokens > 0,
            grid_size=self.grid_size or found.grid_size,
        )

    def video_input(self) -> Optional[VideoInput]:
        return None if self.found is None else self.found.video_input()

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        if self.attention_pattern is not None:
            return require_modules(self.model, self.attention_pattern, "attention_pattern")
        if self.found is None:
            raise ValueError(
                f"no model adapter knows {type(self.model).__name__}: pass `attention_pattern` (modules whose "
                "output is the post-softmax attention (B, heads, N, N)) with `num_prefix_tokens` and "
                "`grid_size`, or register an adapter (lightning_rollout.models.register_adapter)"
            )
        return self.found.attention_layers()

    def attention_settings(self):
        if self.found is None:
            return fused_attention_disabled(self.model)
        return self.found.attention_settings()

    @contextmanager
    def capture_attention(self, layers: List[Tuple[str, nn.Module]], on_capture: CaptureCallback) -> Iterator[None]:
        if self.attention_pattern is not None or self.found is None:
            with super().capture_attention(layers, on_capture):
                yield
        else:
            with self.found.capture_attention(layers, on_capture):
                yield

    def readout(self, geometry: TokenGeometry) -> Readout:
        if self.found is None or self.num_prefix_tokens is not None:
            return super().readout(geometry)
        return self.found.readout(geometry)

    @contextmanager
    def capture_readout(self) -> Iterator[Callable[[TokenGeometry], Readout]]:
        if self.found is None or self.num_prefix_tokens is not None:
            yield self.readout
            return
        with self.found.capture_readout() as readout:
            yield readout

    def blocks(self) -> List[Tuple[str, nn.Module]]:
        if self.attention_pattern is not None or self.found is None:
            return enclosing_blocks(self.model, self.attention_layers())
        return self.found.blocks()

    def block_tokens(self, output) -> Tensor:
        return super().block_tokens(output) if self.found is None else self.found.block_tokens(output)

    def head(self) -> Callable[[Tensor], Tensor]:
        return super().head() if self.found is None else self.found.head()

    def pooled_head(self) -> Callable[[Tensor], Tensor]:
        return super().pooled_head() if self.found is None else self.found.pooled_head()

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        if self.gradcam_pattern is not None:
            return require_modules(self.model, self.gradcam_pattern, "gradcam_layer")[-1]
        if self.found is None:
            raise ValueError(
                f"no model adapter knows {type(self.model).__name__}: pass `gradcam_layer` (a module whose "
                "output is (B, N, C) tokens or a (B, C, h, w) feature map)"
            )
        return self.found.gradcam_layer()

    @contextmanager
    def capture_gradcam(self, on_capture: CaptureCallback) -> Iterator[str]:
        if self.gradcam_pattern is not None or self.found is None:
            with super().capture_gradcam(on_capture) as name:
                yield name
        else:
            with self.found.capture_gradcam(on_capture) as name:
                yield name

    def data_config(self) -> dict:
        return {} if self.found is None else self.found.data_config()

    def input_channels(self) -> Optional[int]:
        return super().input_channels() if self.found is None else self.found.input_channels()

    def num_classes(self) -> Optional[int]:
        return super().num_classes() if self.found is None else self.found.num_classes()

    def attention_from_output(self, module: nn.Module, output) -> Tensor:
        if self.attention_pattern is not None or self.found is None:
            return super().attention_from_output(module, output)
        return self.found.attention_from_output(module, output)

    def gradcam_activation(self, output) -> Tensor:
        if self.gradcam_pattern is not None or self.found is None:
            return super().gradcam_activation(output)
        return self.found.gradcam_activation(output)

    def gradcam_layout(self, activation: Tensor, fill: float) -> Tensor:
        if self.gradcam_pattern is not None or self.found is None:
            return super().gradcam_layout(activation, fill)
        return self.found.gradcam_layout(activation, fill)


def resolve_adapter(
    model: nn.Module,
    attention_pattern: Optional[str] = None,
    gradcam_layer: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> ModelAdapter:
    """The adapter ``explain`` uses for ``model``: the registered family's, with the user's overrides on top.

    Raises:
        ValueError: if an override is malformed.
    """
    check_overrides(num_prefix_tokens, grid_size)
    for argument, pattern in (("attention_pattern", attention_pattern), ("gradcam_layer", gradcam_layer)):
        if pattern is not None and (not isinstance(pattern, str) or not pattern):
            raise ValueError(
                f"`{argument}` must be None (the model's adapter decides) or a non-empty str, got {pattern!r}"
            )
    found = find_adapter(model)
    overrides = (attention_pattern, gradcam_layer, num_prefix_tokens, grid_size)
    if found is not None and all(value is None for value in overrides):
        return found
    return OverriddenAdapter(model, found, attention_pattern, gradcam_layer, num_prefix_tokens, grid_size)


def resolve_geometry(
    model: nn.Module,
    image_size: Optional[Tuple[int, int]] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> TokenGeometry:
    """The token geometry of ``model`` for inputs of ``image_size`` ``(H, W)``, overrides applied.

    Raises:
        ValueError: if an override is malformed, or the geometry can be read neither from the model nor
            from the overrides.
    """
    return resolve_adapter(model, num_prefix_tokens=num_prefix_tokens, grid_size=grid_size).geometry(image_size)
