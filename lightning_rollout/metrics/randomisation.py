"""The model-randomisation sanity check (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps").

A map that explains the *trained* model must change when the model's weights are replaced by random ones;
a method whose maps stay the same (high rank correlation between the two) shows the input, not the model.
`randomized_copy` builds the re-initialised model, `rank_correlation` compares the maps.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lightning_rollout.core.hooks import preserved_rng

__all__ = ["randomized_copy", "rank_correlation"]

TOKEN_INIT_STD = 0.02
"""Std of the normal draw for parameters no module resets (class/register tokens, position embeddings,
layer-scale gammas): timm's initialisation of tokens and position embeddings."""


def randomized_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-initialised ("full" model randomisation).

    Each submodule with a ``reset_parameters()`` (``nn.Linear``, ``nn.Conv2d``, ``nn.LayerNorm``,
    ``nn.Embedding``, ...) or, like ``nn.MultiheadAttention``, only a private ``_reset_parameters()`` is reset
    by it; parameters that belong directly to a module without either (timm's ``cls_token``, ``pos_embed``,
    ``reg_token``, ``LayerScale.gamma``) are drawn from ``N(0, 0.02²)``. Buffers are copied as they are. The
    draws come from ``seed`` alone; the global RNG state is left as found and ``model`` is not touched.

    Args:
        model: the trained model (not attached to a running ``Trainer``: the copy is a ``copy.deepcopy``).
        seed: seed of the new weights.

    Returns:
        The re-initialised copy, in the same train/eval mode and on the same device as ``model``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"`seed` must be an int, got {seed!r}")
    clone = copy.deepcopy(model)
    parameter = next(clone.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    with preserved_rng(device), torch.no_grad():
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if callable(reset):
                reset()
            else:
                for own in module.parameters(recurse=False):
                    own.normal_(0.0, TOKEN_INIT_STD)
    return clone


def _average_ranks(values: Tensor) -> Tensor:
    """Ranks ``0 .. n-1`` along the last axis, tied values sharing their mean rank; ``(B, n)`` float."""
    below = (values.unsqueeze(2) > values.unsqueeze(1)).sum(dim=2)
    equal = (values.unsqueeze(2) == values.unsqueeze(1)).sum(dim=2)
    return below.float() + (equal.float() - 1) / 2


def rank_correlation(maps_a: Tensor, maps_b: Tensor) -> Tensor:
    """Spearman rank correlation between two batches of maps, per sample.

    Ties share their mean rank (the usual Spearman convention); a constant map has no order and correlates
    0 with anything. Memory is ``B × cells²`` comparisons, fine for token grids.

    Args:
        maps_a: ``(B, gh, gw)`` maps.
        maps_b: maps of the same shape.

    Returns:
        Float32 tensor ``(B,)`` in ``[-1, 1]``.

    Raises:
        ValueError: if the shapes differ or are not 3-D.
    """
    if (
        not isinstance(maps_a, Tensor)
        or not isinstance(maps_b, Tensor)
        or maps_a.shape != maps_b.shape
        or maps_a.dim() != 3
    ):
        shapes = [tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__ for m in (maps_a, maps_b)]
        raise ValueError(f"`maps_a` and `maps_b` must be tensors of the same shape (B, gh, gw), got {shapes}")
    ranks_a = _average_ranks(maps_a.detach().flatten(1).float())
    ranks_b = _average_ranks(maps_b.detach().flatten(1).float())
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    norm = ranks_a.norm(dim=1) * ranks_b.norm(dim=1)
    correlation = (ranks_a * ranks_b).sum(dim=1) / norm.clamp_min(torch.finfo(torch.float32).tiny)
    return torch.where(norm > 0, correlation.clamp(-1.0, 1.0), 0.0)
