"""LeGrad (Bousselham et al., ICCV 2025): per-layer gradients of the model's head on the attention maps.

For each explained layer ``l`` a score ``s_l`` is read from the tokens ``X_l`` after block ``l``
(`blocks`) and taken at the target. The layer's explanation
``E_l`` is the positive part of ``∂s_l / ∂A_l`` on that block's post-softmax attention ``A_l``, averaged
over heads and over all query rows; the map is ``Σ_l E_l`` over the key (token) columns, prefix columns
dropped.

By default this is the rule of the authors' released code (``LeWrapper(model, layer_index=-2)``):

- ``legrad_readout="mean"``: ``s_l`` is the model's final norm and classifier applied to the **mean of all
  of block l's tokens**, class and other prefix tokens included
  (`pooled_head`), at every layer, the last one too, although
  the model itself reads its class token. ``"head"``: the model's own read-out
  (`head`: final norm, its pooling, classifier), so that on the
  last block ``s_l`` is the model's logit; with a class-token head the gradient then sits in one query row
  of ``N``.
- ``legrad_first_layer=-2``: the last two layers; ``0`` sums every layer (the paper's figures), other
  values count from the start or, negative, from the end.

Why one gradient call per layer and not one backward of ``Σ_l s_l``: the sum's gradient at ``A_l`` would
also hold every later layer's score, reaching ``A_l`` through the blocks after ``l``; LeGrad wants ``s_l``'s
alone. A call from ``s_l`` to ``A_l`` walks only the head, block ``l``'s MLP and its attention output back
to ``A_l`` (the autograd engine runs only the nodes between the two), so all layers together cost about one
backward through the blocks' MLPs and attention outputs, without the query/key paths.
"""

from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Mapping, Optional

import torch
from torch import Tensor

from lightning_rollout.core.hooks import forward_hooks
from lightning_rollout.methods.base import LiveForward, Method, fed, grid_of, register_method
from lightning_rollout.models.base import ModelAdapter


def legrad_layer(gradient: Tensor) -> Tensor:
    """One layer's token scores ``E_l = mean_heads,queries(ReLU(∂s_l / ∂A_l))``.

    Args:
        gradient: ``(B, heads, Q, N)`` gradient of layer ``l``'s score ``s_l`` with respect to its
            post-softmax attention ``A_l`` (``Q`` query rows, ``N`` key tokens; ``Q == N`` for
            self-attention).

    Returns:
        ``(B, N)`` float32 non-negative scores, one per key token (prefix tokens included).
    """
    return gradient.float().clamp(min=0).mean(dim=(1, 2))


READOUTS = ("mean", "head")
"""LeGrad's per-layer read-outs: the released code's mean token through the final norm and classifier, or the
model's own head."""


def check_first_layer(first_layer: int, num_layers: Optional[int] = None) -> None:
    """Raises unless ``first_layer`` is an int, and (given ``num_layers``) a valid layer index.

    Raises:
        ValueError: naming ``legrad_first_layer``, the value and what is allowed.
    """
    if isinstance(first_layer, bool) or not isinstance(first_layer, int):
        raise ValueError(
            f"`legrad_first_layer` must be an int (-2: the last two layers; 0: every layer), got {first_layer!r}"
        )
    if num_layers is not None and not -num_layers <= first_layer < num_layers:
        raise ValueError(
            f"`legrad_first_layer` must be in [{-num_layers}, {num_layers}) for a model with {num_layers} "
            f"attention layers, got {first_layer}"
        )


def check_readout(readout: str) -> None:
    """Raises unless ``readout`` is one of `READOUTS`.

    Raises:
        ValueError: naming ``legrad_readout``, the value and what is allowed.
    """
    if not isinstance(readout, str) or readout not in READOUTS:
        raise ValueError(
            f"`legrad_readout` must be one of {list(READOUTS)} ('mean': the mean of all tokens through the final "
            f"norm and classifier, as the released code; 'head': the model's own read-out), got {readout!r}"
        )


def mean_token_head(pooled_head: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """The released code's per-layer read-out: ``pooled_head`` on the mean of all tokens ``(B, N, C) → (B, C)``."""
    return lambda tokens: pooled_head(tokens.mean(dim=1))


@register_method
class LeGrad(Method):
    """``"legrad"``: keeps the tokens after every block during the forward; after it, one gradient call per
    explained layer from that layer's score to its attention (its own backward passes, not the shared one).

    Options: ``legrad_readout`` (``"mean"``, default, or ``"head"``) and ``legrad_first_layer`` (default
    ``-2``); see the module docstring.

    Raises:
        UnsupportedModelError: (at construction and in `check_adapter`) the model's blocks, head or (for
            ``legrad_readout="mean"``) pooled head are not known.
        ValueError: ``legrad_first_layer`` is not a layer index of the model, ``legrad_readout`` not a read-out.
    """

    name = "legrad"
    summary = (
        "LeGrad (Bousselham et al., ICCV 2025): per-layer gradients of the head on the attention, as the released "
        "code (the mean token, the last two layers)"
    )
    constant_map_cause = (
        "the target logit has no gradient through the attention (a zero-initialised classifier head gives zero "
        "gradients at init); the maps fill in once the head trains"
    )
    needs_grad = True
    options = {"legrad_first_layer": -2, "legrad_readout": "mean"}

    @classmethod
    def check_options(cls, options) -> None:
        check_first_layer(options["legrad_first_layer"])
        check_readout(options["legrad_readout"])

    def __init__(self, context) -> None:
        super().__init__(context)
        adapter = context.adapter
        self.blocks = adapter.blocks()
        self.head = adapter.head()  # the model's own read-out: the scores, or the check of the output
        readout = context.options["legrad_readout"]
        self.score_head = self.head if readout == "head" else mean_token_head(adapter.pooled_head())
        first_layer = context.options["legrad_first_layer"]
        check_first_layer(first_layer, len(self.blocks))
        self.first_layer = first_layer % len(self.blocks)
        self.tokens: List[Tensor] = []
        self.scores: Optional[Tensor] = None

    @classmethod
    def check_adapter(cls, adapter: ModelAdapter, options: Optional[Mapping[str, Any]] = None) -> None:
        adapter.blocks()  # first: a model without global attention says so
        adapter.head()
        readout = (options or cls.options).get("legrad_readout", cls.options["legrad_readout"])
        if readout == "mean":
            adapter.pooled_head()

    @contextmanager
    def capture(self) -> Iterator[None]:
        adapter = self.context.adapter

        def hook(module, inputs: tuple, output) -> None:
            self.tokens.append(adapter.block_tokens(output))

        with forward_hooks([module for _, module in self.blocks], hook):
            yield

    def after_forward(self, live: LiveForward) -> None:
        try:
            self._check(live)
            total: Optional[Tensor] = None
            for layer in range(self.first_layer, len(self.blocks)):
                score = live.score(self.score_head(self.tokens[layer])).sum()
                # retain_graph: the shared backward of the other methods still walks this graph.
                (gradient,) = torch.autograd.grad(score, live.attentions[layer], retain_graph=True)
                layout = live.layouts[layer]
                scores = legrad_layer(gradient if layout is None else layout(gradient, 0.0))
                total = scores if total is None else total + scores
            self.scores = total
        finally:
            self.tokens.clear()

    def _check(self, live: LiveForward) -> None:
        """The blocks ran once each with their attention, and the head on the last block gives the output.

        A user's module that changes the logits after the family model's own head (a temperature, a second
        head), or an ``output_key`` that picks something else than those logits, would otherwise get
        per-layer scores of a head it does not use.
        """
        if not len(live.attentions) == len(self.tokens) == len(self.blocks):
            raise RuntimeError(
                f"method 'legrad' needs each of the {len(self.blocks)} blocks to run once, each with its attention "
                f"layer; the forward ran {len(self.tokens)} blocks and {len(live.attentions)} attention layers"
            )
        root = type(self.context.adapter.root).__name__
        with torch.no_grad():
            head_output = self.head(self.tokens[-1]).float()
            output = live.output.detach().float()
            tolerance = 1e-5 + 1e-3 * float(output.abs().max()) if output.numel() else 0.0
            same = head_output.shape == output.shape and torch.allclose(head_output, output, rtol=1e-3, atol=tolerance)
        if not same:
            raise ValueError(
                f"method 'legrad' scores every block through the head of {root}, but on the last block that "
                f"head does not give the model's (selected) output (shape {tuple(head_output.shape)} vs "
                f"{tuple(output.shape)}): the model must return its {root}'s logits unchanged"
            )

    def maps(self) -> Tensor:
        return grid_of(self.context, fed(self.scores, "per-layer gradients", f"method {self.name!r}"))
