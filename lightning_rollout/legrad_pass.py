"""LeGrad's part of a side pass: what it collects during the forward and the per-layer gradients after it.

During the forward, :class:`LeGradPass` is the attention sink (each layer's post-softmax attention ``A_l``)
and hooks the block around each attention layer (the tokens ``X_l`` after it). After the forward, each
layer's score ``s_l`` is the model's own head (:meth:`~lightning_rollout.models.ModelAdapter.head`) on
``X_l``, taken at the target, and ``∂s_l / ∂A_l`` is one ``torch.autograd.grad`` from ``s_l`` to ``A_l``.

Why one gradient call per layer and not one backward of ``Σ_l s_l``: the sum's gradient at ``A_l`` would also
hold every later layer's score, reaching ``A_l`` through the blocks after ``l``; LeGrad wants ``s_l``'s alone.
A call from ``s_l`` to ``A_l`` walks only the head, block ``l``'s MLP and its attention output back to ``A_l``
(the autograd engine runs only the nodes between the two), so all layers together cost about one backward
through the blocks' MLPs and attention outputs, without the query/key paths.
"""

from contextlib import contextmanager
from typing import Callable, Iterator, List, Optional

import torch
from torch import Tensor

from lightning_rollout.capture import forward_hooks
from lightning_rollout.methods import legrad_layer
from lightning_rollout.models.base import Layout, ModelAdapter

Score = Callable[[Tensor], Tensor]
"""Turns ``(B, num_classes)`` logits into the ``(B,)`` scores to explain (e.g. the target class's logit)."""


def check_first_layer(first_layer: int, num_layers: Optional[int] = None) -> None:
    """Raises unless ``first_layer`` is an int, and (given ``num_layers``) a valid layer index.

    Raises:
        ValueError: naming ``legrad_first_layer``, the value and what is allowed.
    """
    if isinstance(first_layer, bool) or not isinstance(first_layer, int):
        raise ValueError(
            f"`legrad_first_layer` must be an int (0: every layer; -2: the last two), got {first_layer!r}"
        )
    if num_layers is not None and not -num_layers <= first_layer < num_layers:
        raise ValueError(
            f"`legrad_first_layer` must be in [{-num_layers}, {num_layers}) for a model with {num_layers} "
            f"attention layers, got {first_layer}"
        )


class LeGradPass:
    """Collects ``A_l`` and ``X_l`` during the forward; :meth:`token_scores` gives ``Σ_l E_l`` afterwards,
    and :meth:`release` lets go of them. It puts no hook on a tensor, only forward hooks on the blocks,
    removed when :meth:`capture_blocks` exits.

    Args:
        adapter: the model's adapter; its :meth:`~lightning_rollout.models.ModelAdapter.head` and
            :meth:`~lightning_rollout.models.ModelAdapter.blocks` are read here (raising
            :class:`~lightning_rollout.models.UnsupportedModelError` when the family has none).
        first_layer: the first layer summed (``0``: every layer, as in the paper; ``-2``: the last two, as
            in the authors' released code); negative values count from the end.

    Raises:
        UnsupportedModelError: the model's head or blocks are not known.
        ValueError: on a bad ``first_layer``.
    """

    def __init__(self, adapter: ModelAdapter, first_layer: int = 0) -> None:
        check_first_layer(first_layer)
        self.adapter = adapter
        self.blocks = adapter.blocks()  # first: a model without global attention says so
        self.head = adapter.head()
        check_first_layer(first_layer, len(self.blocks))
        self.first_layer = first_layer % len(self.blocks)
        self.attentions: List[Tensor] = []
        self.layouts: List[Optional[Layout]] = []
        self.tokens: List[Tensor] = []

    def __call__(self, name: str, attention: Tensor, layout: Optional[Layout] = None) -> None:
        """Attention sink: keeps ``A_l`` (on the autograd graph)."""
        self.attentions.append(attention)
        self.layouts.append(layout)

    @contextmanager
    def capture_blocks(self) -> Iterator[None]:
        """Context manager around the forward: keeps each block's output tokens ``X_l``."""

        def hook(module, inputs: tuple, output) -> None:
            self.tokens.append(self.adapter.block_tokens(output))

        with forward_hooks([module for _, module in self.blocks], hook):
            yield

    def check_head(self, logits: Tensor) -> None:
        """Raises unless the head on the last block's tokens gives the model's ``logits``.

        A user's module that changes the logits after the family model's own head (a temperature, a second
        head) would otherwise get per-layer scores of a head it does not use.
        """
        self._check_counts()
        with torch.no_grad():
            head_logits = self.head(self.tokens[-1]).float()
            logits = logits.detach().float()
            tolerance = 1e-5 + 1e-3 * float(logits.abs().max()) if logits.numel() else 0.0
            same = head_logits.shape == logits.shape and torch.allclose(head_logits, logits, rtol=1e-3, atol=tolerance)
        if not same:
            raise ValueError(
                f"method 'legrad' scores every block's tokens with the head of {type(self.adapter.root).__name__}, "
                "but on the last block that head does not give the model's output (shape "
                f"{tuple(head_logits.shape)} vs {tuple(logits.shape)}): the model must return its "
                f"{type(self.adapter.root).__name__}'s logits unchanged"
            )

    def token_scores(self, score: Score) -> Tensor:
        """``Σ_l E_l`` over the layers from ``first_layer`` on: ``(B, N)`` float32 scores of every token.

        Args:
            score: the ``(B,)`` scores to explain, from a layer's ``(B, num_classes)`` head logits.
        """
        self._check_counts()
        total: Optional[Tensor] = None
        for layer in range(self.first_layer, len(self.blocks)):
            layer_score = score(self.head(self.tokens[layer])).sum()
            (gradient,) = torch.autograd.grad(layer_score, self.attentions[layer], retain_graph=True)
            layout = self.layouts[layer]
            if layout is not None:
                gradient = layout(gradient, 0.0)
            scores = legrad_layer(gradient)
            total = scores if total is None else total + scores
        return total

    def release(self) -> None:
        """Drops the kept attentions and tokens (and with them the autograd graph); call once the pass is over."""
        self.attentions.clear()
        self.layouts.clear()
        self.tokens.clear()

    def _check_counts(self) -> None:
        if not len(self.attentions) == len(self.tokens) == len(self.blocks):
            raise RuntimeError(
                f"method 'legrad' needs each of the {len(self.blocks)} blocks to run once, each with its attention "
                f"layer; the forward ran {len(self.tokens)} blocks and {len(self.attentions)} attention layers"
            )
