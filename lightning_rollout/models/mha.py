"""Models built from ``torch.nn.MultiheadAttention``: torchvision's ``VisionTransformer`` and any other.

``nn.MultiheadAttention`` cannot hand out its attention on the gradient path: torchvision calls it with
``need_weights=False``, and the weights it can return are a copy taken after they were multiplied with
the values, so no gradient reaches them. For the side pass only, each attention module's ``forward`` is
swapped for a replay that computes the same attention from the module's own parameters (input
projections, biases, ``bias_k``/``bias_v``, ``add_zero_attn``, masks, ``batch_first`` either way) and
then the module's output *from* the attention it handed out, so that gradients of the output flow
through it. ``torch.backends.mha`` fast paths (``TransformerEncoderLayer``'s fused kernel, which never
calls the attention module) are switched off meanwhile.

- `MultiheadAttentionAdapter` (generic, tried last): every ``nn.MultiheadAttention`` in
  registration order, which must be the forward order. The token geometry cannot be read from such a
  model: pass ``num_prefix_tokens`` and ``grid_size``. Read-out: the class token when the geometry has
  one, else the mean of the patch tokens. Grad-CAM: the tokens the last attention module reads. No
  LeGrad: the head is somewhere in the model's own ``forward``, which cannot be applied to a block's tokens.
- `TorchvisionViTAdapter`: ``torchvision.models.VisionTransformer`` (``vit_b_16`` … ``vit_h_14``),
  whose geometry (one class token, ``patch_size``) and class-token head (``encoder.ln``, then ``heads`` on
  the class token; on one pooled token for LeGrad's mean read-out) are known.
"""

from contextlib import contextmanager
from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_rollout.core.geometry import TokenGeometry
from lightning_rollout.models.base import CaptureCallback, ModelAdapter, UnsupportedModelError
from lightning_rollout.models.layer_input import layer_input
from lightning_rollout.models.readout import Readout, token_readout
from lightning_rollout.models.registry import register_adapter


def _additive_mask(mask: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    """A boolean mask (``True``: not allowed to attend) as an additive float mask; float masks as given."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def _pad_key(mask: Optional[Tensor]) -> Optional[Tensor]:
    """One more (allowed) key column on a mask, for an appended key slot."""
    return None if mask is None else F.pad(mask, (0, 1))


def _projections(
    module: nn.MultiheadAttention, query: Tensor, key: Tensor, value: Tensor, self_attention: bool
) -> Tuple[Tensor, ...]:
    """``(q, k, v)`` after the module's input projections, in the layout of the inputs.

    Self-attention with one packed projection (``nn.MultiheadAttention``'s own case for ``x, x, x``) takes
    one product over ``in_proj_weight``, as the module does.
    """
    if self_attention and module._qkv_same_embed_dim:  # noqa: SLF001  (nn.MultiheadAttention exposes the packed-weights flag only privately)
        return F.linear(query, module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
    if module._qkv_same_embed_dim:  # noqa: SLF001  (nn.MultiheadAttention exposes the packed-weights flag only privately)
        weights = module.in_proj_weight.chunk(3)
    else:
        weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
    return tuple(F.linear(x, w, b) for x, w, b in zip((query, key, value), weights, biases))


def _split_heads(x: Tensor, heads: int, batch_first: bool) -> Tensor:
    """``(B, S, E)`` (``batch_first``) or ``(S, B, E)`` → ``(B·heads, S, E / heads)``, contiguous."""
    if not batch_first:
        x = x.transpose(0, 1)
    batch, length, embed_dim = x.shape
    return x.reshape(batch, length, heads, embed_dim // heads).transpose(1, 2).reshape(batch * heads, length, -1)


def _merge_heads(x: Tensor, batch: int, batch_first: bool) -> Tensor:
    """``(B·heads, L, d)`` → ``(B, L, heads·d)`` (``batch_first``) or ``(L, B, heads·d)``, contiguous."""
    heads_total, length, head_dim = x.shape
    heads = heads_total // batch
    if batch_first:
        return x.view(batch, heads, length, head_dim).transpose(1, 2).reshape(batch, length, heads * head_dim)
    return x.transpose(0, 1).reshape(length, batch, heads * head_dim)


def _replay_forward(
    module: nn.MultiheadAttention,
    name: str,
    on_capture: CaptureCallback,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Optional[Tensor] = None,
    need_weights: bool = True,
    attn_mask: Optional[Tensor] = None,
    average_attn_weights: bool = True,
    is_causal: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """``nn.MultiheadAttention.forward`` computed step by step, handing the attention to ``on_capture`` on the way.

    Same arguments and returns as `torch.nn.MultiheadAttention.forward`. ``on_capture`` receives the
    post-softmax attention ``(B, heads, L, S)`` over the given keys; the output is computed from that
    very tensor, so ``torch.autograd.grad(output, attention)`` is the true gradient. The work stays in the
    inputs' own layout (batch-first or sequence-first): the only copies are the head splits and merges
    that the batched products need; the scale is applied to the queries, not to the ``N × N`` scores.
    """
    if is_causal and attn_mask is None:
        raise RuntimeError(f"{name}: `is_causal=True` needs the causal `attn_mask` (as nn.MultiheadAttention)")
    self_attention = query is key and key is value
    batched = query.dim() == 3
    batch_first = module.batch_first or not batched
    if not batched:  # one sample, laid out batch-first
        query, key, value = (x.unsqueeze(0) for x in (query, key, value))
        key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
    batch, target_len = (query.shape[0], query.shape[1]) if batch_first else (query.shape[1], query.shape[0])
    num_keys = key.shape[1] if batch_first else key.shape[0]
    heads, head_dim = module.num_heads, module.head_dim

    dtype = query.dtype
    attn_mask = _additive_mask(attn_mask, dtype)
    key_padding_mask = _additive_mask(key_padding_mask, dtype)
    q, k, v = _projections(module, query, key, value, self_attention)
    q, k, v = (_split_heads(x, heads, batch_first) for x in (q, k, v))
    extra_keys = []
    if (module.bias_k is None) != (module.bias_v is None):
        raise ValueError(f"module {name!r} has one of `bias_k`, `bias_v`: nn.MultiheadAttention sets both or none")
    if module.bias_k is not None and module.bias_v is not None:
        extra_keys.append(
            (
                module.bias_k.view(heads, 1, head_dim).repeat(batch, 1, 1),
                module.bias_v.view(heads, 1, head_dim).repeat(batch, 1, 1),
            )
        )
    if module.add_zero_attn:
        extra_keys.append((k.new_zeros(batch * heads, 1, head_dim), v.new_zeros(batch * heads, 1, head_dim)))
    for extra_k, extra_v in extra_keys:
        k, v = torch.cat([k, extra_k], dim=1), torch.cat([v, extra_v], dim=1)
        attn_mask, key_padding_mask = _pad_key(attn_mask), _pad_key(key_padding_mask)

    scores = torch.bmm(q * head_dim**-0.5, k.transpose(1, 2)).view(batch, heads, target_len, -1)
    if attn_mask is not None:  # (L, S) or (B * heads, L, S)
        scores = scores + (attn_mask.view(batch, heads, target_len, -1) if attn_mask.dim() == 3 else attn_mask)
    if key_padding_mask is not None:  # (B, S)
        scores = scores + key_padding_mask.view(batch, 1, 1, -1)
    attention = scores.softmax(dim=-1)

    if attention.shape[-1] > num_keys:  # hand over the token part; the output reads it back
        tokens, extra = attention.split([num_keys, attention.shape[-1] - num_keys], dim=-1)
        on_capture(name, tokens)
        attention = torch.cat([tokens, extra], dim=-1)
    else:
        on_capture(name, attention)

    weights = F.dropout(attention, p=module.dropout) if module.training and module.dropout > 0 else attention
    output = torch.bmm(weights.view(batch * heads, target_len, -1), v)
    output = F.linear(_merge_heads(output, batch, batch_first), module.out_proj.weight, module.out_proj.bias)
    if not batched:
        output = output.squeeze(0)

    returned = None
    if need_weights:
        returned = attention.mean(dim=1) if average_attn_weights else attention
        returned = returned if batched else returned.squeeze(0)
    return output, returned


@contextmanager
def replayed_attention(layers: List[Tuple[str, nn.Module]], on_capture: CaptureCallback) -> Iterator[None]:
    """Swaps each ``nn.MultiheadAttention``'s ``forward`` for the replay; restores it on exit.

    Raises:
        UnsupportedModelError: if a layer is not an ``nn.MultiheadAttention``.
    """
    replays: List[Tuple[nn.Module, Callable[..., Tuple[Tensor, Optional[Tensor]]]]] = []
    for name, module in layers:
        if not isinstance(module, nn.MultiheadAttention):
            raise UnsupportedModelError(
                f"module {name!r} is a {type(module).__name__}, not an nn.MultiheadAttention whose attention "
                "can be replayed"
            )
        replays.append((module, partial(_replay_forward, module, name, on_capture)))
    saved: Dict[nn.Module, Optional[Callable[..., Any]]] = {}
    try:
        for module, replay in replays:
            saved[module] = module.__dict__.get("forward")
            module.forward = replay
        yield
    finally:
        for module, forward in saved.items():
            if forward is None:
                del module.__dict__["forward"]
            else:
                module.forward = forward


@contextmanager
def fast_path_disabled() -> Iterator[None]:
    """Switches ``torch.backends.mha``'s fused fast paths off (they bypass the attention modules)."""
    enabled = torch.backends.mha.get_fastpath_enabled()
    try:
        torch.backends.mha.set_fastpath_enabled(False)
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)


def _query(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["query"]


class MultiheadAttentionAdapter(ModelAdapter):
    """Any model whose token self-attention is ``nn.MultiheadAttention`` (see the module docstring).

    The geometry must come from the caller (``num_prefix_tokens``, ``grid_size``); a subclass that knows
    it overrides `geometry`.
    """

    family = "mha"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        if any(isinstance(module, nn.MultiheadAttention) for module in model.modules()):
            return model
        return None

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        raise ValueError(
            f"cannot read the token geometry of {type(self.root).__name__} (a model built from "
            "nn.MultiheadAttention): pass `num_prefix_tokens` (e.g. 1 for a class token) and `grid_size` "
            "(grid_h, grid_w) of the patch tokens"
        )

    def attention_layers(self) -> List[Tuple[str, nn.Module]]:
        layers: List[Tuple[str, nn.Module]] = [
            (name, m) for name, m in self.root.named_modules() if isinstance(m, nn.MultiheadAttention)
        ]
        if not layers:
            raise UnsupportedModelError(f"{type(self.root).__name__} contains no nn.MultiheadAttention")
        return layers

    def attention_settings(self):
        return fast_path_disabled()

    def capture_attention(self, layers: List[Tuple[str, nn.Module]], on_capture: CaptureCallback):
        return replayed_attention(layers, on_capture)

    def head(self) -> Callable[[Tensor], Tensor]:
        raise UnsupportedModelError(
            f"method 'legrad' scores the tokens after every block with the model's own head, and the head of "
            f"{type(self.root).__name__} (a model built from nn.MultiheadAttention) is part of its forward, which "
            "cannot be applied to a block's tokens; use 'grad_rollout' or 'chefer', or register an adapter with "
            "`forward_head` (lightning_rollout.models)"
        )

    def gradcam_layer(self) -> Tuple[str, nn.Module]:
        """The last attention module; Grad-CAM reads the tokens it attends over (its normalised input)."""
        return self.attention_layers()[-1]

    def capture_gradcam(self, on_capture: CaptureCallback):
        name, module = self.gradcam_layer()
        return layer_input(name, module, on_capture, _query, sequence_first=not module.batch_first)


class TorchvisionViTAdapter(MultiheadAttentionAdapter):
    """``torchvision.models.VisionTransformer``: one class token, ``patch_size`` patches, class-token head."""

    family = "torchvision-vit"

    @classmethod
    def find(cls, model: nn.Module) -> Optional[nn.Module]:
        from torchvision.models.vision_transformer import VisionTransformer

        return next((module for module in model.modules() if isinstance(module, VisionTransformer)), None)

    def geometry(self, image_size: Optional[Tuple[int, ...]]) -> TokenGeometry:
        # VisionTransformer keeps both sizes as plain ints (torchvision ships no type hints).
        default_size, patch = cast(int, self.root.image_size), cast(int, self.root.patch_size)
        height, width = image_size if image_size is not None else (default_size, default_size)
        return TokenGeometry(1, True, (int(height) // patch, int(width) // patch))

    def readout(self, geometry: TokenGeometry) -> Readout:
        return token_readout(geometry.num_tokens)

    def head(self) -> Callable[[Tensor], Tensor]:
        vit = self.root
        return lambda tokens: vit.get_submodule("heads")(vit.get_submodule("encoder.ln")(tokens)[:, 0])

    def pooled_head(self) -> Callable[[Tensor], Tensor]:
        vit = self.root
        return lambda pooled: vit.get_submodule("heads")(vit.get_submodule("encoder.ln")(pooled))

    def input_channels(self) -> Optional[int]:
        """The patch projection's input channels; ``None`` for a convolutional stem (``conv_stem_configs``)."""
        conv_proj = self.root.get_submodule("conv_proj")  # an nn.Conv2d, or an nn.Sequential stem
        return conv_proj.in_channels if isinstance(conv_proj, nn.Conv2d) else None


register_adapter(TorchvisionViTAdapter, first=False)
register_adapter(MultiheadAttentionAdapter, first=False)
