"""What the engine asks of a model family, answered once per family by a `ModelAdapter`.

An adapter answers, for one model it was built on:

- where the post-softmax, per-head attention ``(B, heads, N, N)`` of every global self-attention layer
  comes from, captured **on the gradient path** (`ModelAdapter.capture_attention`);
- the token geometry (`ModelAdapter.geometry`) and, for a video model, the clips it takes
  (`ModelAdapter.video_input`);
- what the side pass switches and restores so that the attention exists at all
  (`ModelAdapter.attention_settings`: fused kernels, SDPA);
- Grad-CAM's layer and how its output becomes a ``(B, N, C)`` token or ``(B, C, h, w)`` map
  (`ModelAdapter.gradcam_layer`, `ModelAdapter.gradcam_activation`,
  `ModelAdapter.gradcam_layout`);
- what the model's head reads (`ModelAdapter.readout`);
- the block around each attention layer, the model's own head applied to any block's tokens, and its final
  norm and classifier applied to one pooled token (`ModelAdapter.blocks`, `ModelAdapter.head`,
  `ModelAdapter.pooled_head`; LeGrad's per-layer scores).

A family without a global token attention (Swin, MaxViT, XCiT, ...) raises `UnsupportedModelError`
from `ModelAdapter.attention_layers` with the reason, and still serves Grad-CAM.
"""

from contextlib import contextmanager, nullcontext
from typing import Callable, ContextManager, Iterator, List, Optional, Tuple

from torch import Tensor, nn

from lightning_rollout.core.deprecation import moved_names
from lightning_rollout.core.geometry import TokenGeometry, VideoInput
from lightning_rollout.core.hooks import forward_hooks
from lightning_rollout.models.readout import Readout, patch_mean_readout, token_readout

Layout = Callable[[Tensor, float], Tensor]
"""Lays a captured tensor (and, with ``fill=0``, its gradient) out on the model's full token sequence;
``fill`` goes in the places the layer does not compute (see `lightning_rollout.models.timm_cait`)."""

CaptureCallback = Callable[..., None]
"""What an adapter's ``capture_attention`` and ``capture_gradcam`` hand each captured tensor to: called as
``on_capture(layer_name, tensor)`` or ``on_capture(layer_name, tensor, layout)`` once per layer, in forward
order; ``tensor`` is on the autograd graph (gradients flow through it)."""


class UnsupportedModelError(ValueError):
    """The model cannot serve a method; the message says why and what works instead."""


def enclosing_blocks(model: nn.Module, layers: List[Tuple[str, nn.Module]]) -> List[Tuple[str, nn.Module]]:
    """The block around each attention layer: its nearest ancestor held in an ``nn.ModuleList`` or
    ``nn.Sequential`` (``blocks.3`` for ``blocks.3.attn.attn_drop``).

    Args:
        model: the module whose ``named_modules`` names ``layers``.
        layers: ``(name, module)`` of the attention layers.

    Raises:
        UnsupportedModelError: when a layer sits in no such container, or two layers share a block.
    """
    modules = dict(model.named_modules())
    blocks: List[Tuple[str, nn.Module]] = []
    for name, _ in layers:
        parts = name.split(".")
        block = next(
            (
                ".".join(parts[:i])
                for i in range(len(parts) - 1, 0, -1)
                if isinstance(modules.get(".".join(parts[: i - 1])), (nn.ModuleList, nn.Sequential))
            ),
            None,
        )
        if block is None or (blocks and blocks[-1][0] == block):
            raise UnsupportedModelError(
                f"cannot tell the block around attention layer {name!r} of {type(model).__name__}: method "
                "'legrad' needs one block per attention layer, held in an nn.ModuleList or nn.Sequential"
            )
        blocks.append((block, modules[block]))
    return blocks


class ModelAdapter:
    """Base class of the per-family adapters; see the module docstring for what each answers.

    Subclasses set `family`, implement `find` and whatever differs from the defaults, and are
    registered with `lightning_rollout.models.register_adapter`.

    Args:
        root: the family's model found inside the user's model by `find`.

    Attributes:
        family: the family's name, for messages; each subclass sets it on the class. An instance may report
            another family's: the user's overrides on top of a found adapter report the found adapter's.
    """

    family: str = "custom"

    def __init__(self, root: nn.Module) -> None:
        self.root = root

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        """The first submodule of ``model`` (or ``model`` itself) this adapter serves, else ``None``."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------- geometry

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        """Token geometry for inputs of ``image_size`` ``(H, W)``, or ``(T, H, W)`` for a video model
        (``None``: the model's default size).

        Raises:
            ValueError: when the geometry cannot be read from the model.
        """
        raise NotImplementedError

    def video_input(self) -> Optional[VideoInput]:
        """What clips a video model takes (tubelet, clip length); ``None`` (the default): the model takes
        images ``(B, C, H, W)``."""
        return None

    # ------------------------------------------------------------------------------------ attention

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        """``(name, module)`` of each global self-attention layer, in forward order.

        Raises:
            UnsupportedModelError: the family has no global token attention.
        """
        raise NotImplementedError

    def attention_settings(self) -> ContextManager[None]:
        """Context manager: whatever must be switched so the attention is materialised (restored on exit)."""
        return nullcontext()

    def attention_from_output(self, module: nn.Module, output) -> Tensor:
        """The attention tensor in a layer module's forward output (default: the output itself)."""
        return output

    @contextmanager
    def capture_attention(self, layers: List[Tuple[str, nn.Module]], on_capture: CaptureCallback) -> Iterator[None]:
        """Hands every layer's post-softmax attention ``(B, heads, N, N)`` to ``on_capture`` during the forward.

        The default hooks each module's forward output (through `attention_from_output`); the
        tensor handed over is the one the layer multiplies with its values, so gradients flow through it.
        """
        names = {module: name for name, module in layers}

        def hook(module: nn.Module, inputs: tuple, output) -> None:
            on_capture(names[module], self.attention_from_output(module, output))

        with forward_hooks([module for _, module in layers], hook):
            yield

    # ------------------------------------------------------------------------------------- read-out

    def readout(self, geometry: TokenGeometry) -> Readout:
        """What the head reads; the default is the class token when there is one, else the patch mean."""
        return token_readout(geometry.num_tokens) if geometry.has_class_token else patch_mean_readout(geometry)

    @contextmanager
    def capture_readout(self) -> Iterator[Callable[[TokenGeometry], Readout]]:
        """Context manager around the forward, yielding a function that gives the read-out afterwards.

        Heads whose read-out depends on the input (attention pooling) override this to capture it.
        """
        yield self.readout

    # ---------------------------------------------------------------------------- blocks and head

    def blocks(self) -> List[Tuple[str, nn.Module]]:
        """``(name, module)`` of the block around each attention layer, one per entry of
        `attention_layers` and in the same order; each block outputs the tokens after it.

        The default is each attention layer's nearest enclosing module held in an ``nn.ModuleList`` or
        ``nn.Sequential`` (`enclosing_blocks`).

        Raises:
            UnsupportedModelError: when the blocks cannot be told.
        """
        return enclosing_blocks(self.root, self.attention_layers())

    def block_tokens(self, output) -> Tensor:
        """The tokens ``(B, N, C)`` in a block's forward output (default: the output, or its first item)."""
        return output[0] if isinstance(output, tuple) else output

    def head(self) -> Callable[[Tensor], Tensor]:
        """The model's own head (final norm, pooling, classifier) as a function of the tokens after any block.

        The function takes ``(B, N, C)`` tokens as a block of `blocks` outputs them
        (`block_tokens`) and returns ``(B, num_classes)`` logits: the model's logits on the last
        block's tokens; on an earlier block's, the score the head would give if the model stopped there
        (LeGrad's per-layer score).

        Raises:
            UnsupportedModelError: the family's head is not known (the default).
        """
        raise UnsupportedModelError(
            f"method 'legrad' needs the model's own head (final norm, pooling, classifier) to score the tokens "
            f"after every block, and the {self.family} adapter does not know the head of {type(self.root).__name__}; "
            "override ModelAdapter.head in an adapter of your own, or use 'grad_rollout' or 'chefer'"
        )

    def pooled_head(self) -> Callable[[Tensor], Tensor]:
        """The model's final norm and classifier as a function of one pooled token, skipping its own pooling.

        The function takes ``(B, C)`` (e.g. the mean of a block's tokens, as LeGrad's released code scores
        every block) and returns what `head` returns: ``(B, num_classes)`` logits, or the embedding a
        projection head gives. Where the head reads more than one token (a distilled DeiT's two heads,
        DINOv2's ``concat(CLS, mean(patches))``) the pooled token stands in every place the head reads.

        Raises:
            UnsupportedModelError: the family's head is not known (the default).
        """
        raise UnsupportedModelError(
            f"method 'legrad' with legrad_readout='mean' needs the final norm and classifier of the model to score "
            f"the mean token of a block, and the {self.family} adapter does not know them for "
            f"{type(self.root).__name__}; override ModelAdapter.pooled_head in an adapter of your own, pass "
            "legrad_readout='head' (the model's own read-out), or use 'grad_rollout' or 'chefer'"
        )

    # ------------------------------------------------------------------------------------- Grad-CAM

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        """``(name, module)`` whose output is Grad-CAM's activation.

        Raises:
            UnsupportedModelError: the family has no layer Grad-CAM can read.
        """
        raise NotImplementedError

    def gradcam_activation(self, output) -> Tensor:
        """The tensor Grad-CAM differentiates, picked from the layer's output (on the autograd graph)."""
        return output[0] if isinstance(output, tuple) else output

    def gradcam_layout(self, activation: Tensor, fill: float) -> Tensor:
        """Lays the activation (and its gradient) out as tokens ``(B, N, C)`` or a map ``(B, C, h, w)``."""
        return activation

    @contextmanager
    def capture_gradcam(self, on_capture: CaptureCallback) -> Iterator[str]:
        """Hands Grad-CAM's activation (on the autograd graph) and its layout to ``on_capture`` during the forward.

        Yields:
            The layer's name, for messages.
        """
        name, layer = self.gradcam_layer()

        def hook(module: nn.Module, inputs: tuple, output) -> None:
            on_capture(name, self.gradcam_activation(output), self.gradcam_layout)

        with forward_hooks([layer], hook):
            yield name

    # -------------------------------------------------------------------------------------- display

    def data_config(self) -> dict:
        """The model's preprocessing (``mean``, ``std``, ``input_size``) where it declares one, else ``{}``."""
        return {}

    def input_channels(self) -> Optional[int]:
        """The number of input channels the model takes, where it can be read, else ``None``."""
        return None

    def num_classes(self) -> Optional[int]:
        """The number of classes of the model's head, where it can be read, else ``None``."""
        value = getattr(self.root, "num_classes", None)
        return value if isinstance(value, int) else None


# Renamed: it also receives Grad-CAM's activation, and "sinks" are where the pictures go.
__getattr__ = moved_names(__name__, {"AttentionSink": "lightning_rollout.models.base:CaptureCallback"})
