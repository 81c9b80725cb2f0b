"""``explain`` and ``explain_many``: one hooked side pass through a ViT, returning explanation maps.

Data flow: check the arguments → the model's adapter (`lightning_rollout.models`: where the attention
comes from, the token geometry, what the head reads) → one side pass (`lightning_rollout.engine.run`):
one forward, and one backward of the target score when a gradient method is asked for, feeding every
requested method (`lightning_rollout.methods`) → each method's maps on the token grid.

Memory does not grow with depth or with the number of methods: plain rollout multiplies each layer's
``(B, N, N)`` factor into its running product as the layer runs; gradient methods fold each layer's factor
into the read-out row ``u @ A_L ⋯ A_l`` (or, for heads that pool tokens, the product ``A_L ⋯ A_l``) inside
one tensor hook per layer while the backward pass walks the layers in reverse.
"""

from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple, Type, Union, cast

from torch import Tensor, nn

from lightning_rollout.core.checks import check_clips, check_images, check_target
from lightning_rollout.core.outputs import OutputKey, Target
from lightning_rollout.engine.checks import method_classes
from lightning_rollout.engine.chunks import check_output_size, chunked_pass
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.methods import Method, method_class
from lightning_rollout.methods.attention import Attention


def _pair(grid_size: Optional[Sequence[int]]) -> Optional[Tuple[int, int]]:
    """``grid_size`` as a tuple; `ExplainOptions` checks that it is a pair of positive ints."""
    return None if grid_size is None else cast(Tuple[int, int], tuple(grid_size))


def explain_many(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[str],
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    target: Target = None,
    output_key: OutputKey = None,
    attention_pattern: Optional[str] = None,
    gradcam_layer: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
    return_output: bool = False,
    chunk_size: Optional[int] = None,
    output_size: Optional[str] = None,
    **method_options: Any,
) -> Union[Dict[str, Tensor], Tuple[Dict[str, Tensor], Tensor]]:
    """Computes the maps of several methods from one side pass: one forward and, when a gradient method is
    among them, one backward.

    Each method's maps equal those of ``explain(model, images, method, ...)`` alone, up to float rounding
    (a pass that reads the attention runs timm's attention unfused, which moves Grad-CAM's last digits).
    Memory is that of the most demanding method, not the sum. Arguments as `explain`.

    Args:
        methods: method names, each once (e.g. ``["rollout", "grad_rollout", "chefer", "gradcam"]``).
        return_output: also return the selected model output (the logits, or what ``output_key`` picks) of
            the same forward, detached, e.g. for the predicted probabilities.
        **method_options: options of individual methods, as `explain` (``legrad_readout``,
            ``legrad_first_layer``).

    Returns:
        ``{method: (B, grid_h, grid_w) maps}`` in the order of ``methods``; with ``return_output``, the pair
        ``(maps, output)``.

    Raises:
        ValueError: as `explain`, and when ``methods`` is empty, not a list/tuple or repeats a name.

    Example:
        ```python
        maps, logits = explain_many(model, images, ["rollout", "chefer"], target=labels, return_output=True)
        probabilities = logits.softmax(dim=-1)
        ```
    """
    classes = method_classes(methods)
    options = ExplainOptions(
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
        output_key=output_key,
        attention_pattern=attention_pattern,
        gradcam_layer=gradcam_layer,
        num_prefix_tokens=num_prefix_tokens,
        grid_size=_pair(grid_size),
        method_options=method_options,
        chunk_size=chunk_size,
    )
    maps, output, _ = explain_with(model, images, classes, options, target, return_output, output_size=output_size)
    if not return_output:
        return maps
    assert output is not None, "explain_with gives the output with return_output=True"
    return maps, output


class PassResult(NamedTuple):
    """What `explain_with` gives: every method's maps and, when asked, more of the same pass."""

    maps: Dict[str, Tensor]
    """`{method: (B, grid_h, grid_w)}` float32 maps (video: `(B, T', grid_h, grid_w)`), in the order asked."""
    output: Optional[Tensor]
    """The selected model output of the same forward, detached (with `return_output`), else `None`."""
    heads: Optional[Tensor]
    """`(B, heads, grid_h, grid_w)` (video: `(B, heads, T', grid_h, grid_w)`) per-head maps of method
    `"attention"` (with `per_head`), else `None`."""


def explain_with(
    model: nn.Module,
    images: Tensor,
    methods: Sequence[Union[str, Type[Method]]],
    options: ExplainOptions,
    target: Target = None,
    return_output: bool = False,
    per_head: bool = False,
    output_size: Optional[str] = None,
) -> PassResult:
    """`explain_many` with the settings as one `ExplainOptions` bundle (as the callbacks hold them).

    Args:
        per_head: also give method `"attention"`'s per-head maps (`attention_per_head`) from the same
            forward; `"attention"` must be among `methods`.
        output_size: as `explain`.

    Raises:
        ValueError: as `explain_many`, and for `per_head` without `"attention"`.
    """
    classes = [method_class(m) if isinstance(m, str) else m for m in methods]
    if per_head and Attention not in classes:
        raise ValueError(f"`per_head`=True needs 'attention' in `methods`, got {[c.name for c in classes]}")
    check_images(images, video=None)
    check_target(target, images.shape[0], callable_ok=True)
    check_output_size(output_size)
    adapter = options.resolve_adapter(model)
    check_clips(images, adapter.video_input(), type(adapter.root).__name__)
    maps, output, heads = chunked_pass(
        model, images, classes, adapter, options, target, return_output, per_head, output_size
    )
    return PassResult(maps, output, heads)


def explain(
    model: nn.Module,
    images: Tensor,
    method: str = "rollout",
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.9,
    target: Target = None,
    output_key: OutputKey = None,
    attention_pattern: Optional[str] = None,
    gradcam_layer: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
    chunk_size: Optional[int] = None,
    output_size: Optional[str] = None,
    **method_options: Any,
) -> Tensor:
    """Computes explanation maps of a batch in one hooked side pass.

    The model's state is left exactly as found, also when the forward raises: fused attention and
    attention-implementation settings, every submodule's train/eval mode, parameters' ``.grad`` and the
    global RNG state. Gradient methods work inside ``torch.no_grad()`` and ``torch.inference_mode()``;
    under autocast the chain runs in float32. A ``torch.compile``-d model (or submodule) runs eagerly
    here, without touching its compiled graphs.

    Args:
        model: a timm, Hugging Face transformers or torchvision ViT, any ``nn.MultiheadAttention`` model,
            or any module containing one that returns logits (a tensor, or an output with ``.logits``;
            ``output_key`` picks other outputs); a LightningModule wrapping it works as is. The family's adapter
            (`lightning_rollout.models`) says where its attention comes from, its token geometry
            and what its head reads; other models work with ``attention_pattern``,
            ``num_prefix_tokens`` and ``grid_size`` given, or with an adapter of their own.
        images: ``(B, C, H, W)`` float batch on the model's device; for a video model (VideoMAE, ViViT,
            TimeSformer) a batch of clips ``(B, T, C, H, W)``.
        method: ``"rollout"`` (Abnar & Zuidema 2020), ``"grad_rollout"`` (class-specific gradient
            rollout), ``"chefer"`` (Chefer et al., ICCV 2021), ``"gradcam"`` (Grad-CAM on the token
            grid, or on the last feature map of hierarchical models) or ``"legrad"`` (Bousselham et al.,
            ICCV 2025: per layer, the positive gradient of a score read from that block's tokens with
            respect to the block's attention, summed over layers; by default the released code's rule) or ``"attention"`` (the last
            layer's attention from the token(s) the head reads, heads fused with ``head_fusion``; forward
            only; per head: `attention_per_head`). Several at once: `explain_many`.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads; used by ``"rollout"`` and ``"attention"``.
        discard_ratio: fraction in ``[0, 1)`` of each layer's smallest fused entries zeroed per sample
            (never entry ``[0, 0]``); used by ``"rollout"`` and ``"grad_rollout"``.
        target: what gradient methods explain: ``None`` for the predicted class, an int, a LongTensor of
            shape ``(B,)``, or a callable ``target(output) -> (B,)`` float scores, one differentiable score
            per sample computed from the selected output (e.g. a multi-label sum of positives, a cosine
            similarity to an embedding). The scores are summed for the one backward, so each sample's map
            explains its own score. Ready-made callables: `lightning_rollout.targets`.
        output_key: which part of the model's output is explained: ``None`` (a tensor, ``.logits`` or a
            ``'logits'`` entry), a str key of a dict / ``ModelOutput`` (e.g. ``"image_embeds"``) or an int
            index of a tuple.
        attention_pattern: ``None`` (the adapter's attention layers) or an fnmatch pattern of the modules
            whose output is the post-softmax attention ``(B, heads, N, N)``.
        gradcam_layer: ``None`` (the adapter's layer: timm ViTs' last block ``norm1``) or an fnmatch
            pattern; the last matching module's ``(B, N, C)`` or ``(B, C, h, w)`` output is Grad-CAM's
            activation.
        num_prefix_tokens: override of the number of leading non-patch tokens.
        grid_size: override of the patch grid ``(grid_h, grid_w)`` (of each temporal slice, for video).
        chunk_size: samples per side pass, the maps joined (bounds memory); ``None``: the whole batch of
            images, video clips one at a time.
        output_size: ``None`` or ``"tokens"``: maps on the token grid; ``"input"``: at the input's
            resolution, ``(B, H, W)`` (video: ``(B, T, H, W)``): bilinear in space, nearest in time (frame
            ``t`` takes the temporal slice of its tubelet, ``t // tubelet``).
        **method_options: options of individual methods (`options`):
            ``legrad_readout``, how ``"legrad"`` scores each block: ``"mean"`` (the default, the authors'
            released code: the mean of all the block's tokens through the model's final norm and classifier)
            or ``"head"`` (the model's own read-out: its pooling, e.g. the class token, then norm and
            classifier); ``legrad_first_layer``, the first attention layer ``"legrad"`` sums: ``-2`` the last
            two (the released code, the default), ``0`` every layer; negative values count from the end.

    Returns:
        ``(B, grid_h, grid_w)`` float32, non-negative maps on ``images.device`` (video: ``(B, T', grid_h,
        grid_w)``, ``T'`` the model's temporal token count); the scale is the method's own (not normalised).

    Raises:
        ValueError: on a bad argument, a model whose attention layers, Grad-CAM layer or geometry cannot
            be found, or a forward that captured nothing.
        lightning_rollout.models.UnsupportedModelError: an attention method on a model without global
            token attention (Swin, MaxViT, XCiT, TimeSformer's divided space-time attention, ...); its message
            points to ``"gradcam"``.

    Example:
        ```python
        model = timm.create_model("vit_tiny_patch16_224", num_classes=10)
        maps = explain(model, images, "grad_rollout", target=labels)  # (B, 14, 14)
        ```
    """
    # Without `return_output`, `explain_many` returns the maps alone.
    maps = explain_many(
        model,
        images,
        [method],
        head_fusion=head_fusion,
        discard_ratio=discard_ratio,
        target=target,
        output_key=output_key,
        attention_pattern=attention_pattern,
        gradcam_layer=gradcam_layer,
        num_prefix_tokens=num_prefix_tokens,
        grid_size=grid_size,
        chunk_size=chunk_size,
        output_size=output_size,
        **method_options,
    )
    return cast(Dict[str, Tensor], maps)[method]


def attention_per_head(
    model: nn.Module,
    images: Tensor,
    *,
    attention_pattern: Optional[str] = None,
    num_prefix_tokens: Optional[int] = None,
    grid_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """Each head's map of method ``"attention"``: the last attention layer's attention from the token(s)
    the head reads to the patches, one map per head (DINO's per-head picture), from one forward.

    ``explain(model, images, "attention", head_fusion=f)`` is these maps fused over heads with ``f`` (for
    ``"mean"`` exactly their mean; ``"max"``/``"min"`` fuse the attention before the read-out, which is
    the same for a class-token read-out). Arguments as `explain`.

    Returns:
        ``(B, heads, grid_h, grid_w)`` float32, non-negative maps on ``images.device``.

    Example:
        ```python
        heads = attention_per_head(dino, images)  # (B, 6, 14, 14) for a ViT-S/16 at 224 px
        ```
    """
    options = ExplainOptions(
        attention_pattern=attention_pattern, num_prefix_tokens=num_prefix_tokens, grid_size=_pair(grid_size)
    )
    heads = explain_with(model, images, [Attention], options, per_head=True).heads
    assert heads is not None, "explain_with gives the per-head maps with per_head=True"
    return heads
