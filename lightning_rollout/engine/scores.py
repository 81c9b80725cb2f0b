"""What gradient methods differentiate: the per-sample score of the target (a class logit or a callable's)."""

from typing import Callable

import torch
from torch import Tensor

from lightning_rollout.core.outputs import ClassTarget, Target


def class_indices(target: ClassTarget, logits: Tensor) -> Tensor:
    """The class explained per sample: the target's, or the arg-max of `logits` `(B, num_classes)`.

    Raises:
        ValueError: when a class index is outside `[0, num_classes)`.
    """
    if target is None:
        return logits.argmax(dim=-1)
    num_classes = logits.shape[1]
    if isinstance(target, int):
        target = torch.full((logits.shape[0],), target, dtype=torch.long)
    # A copy made here, outside inference mode, can be saved for backward by ``gather``.
    target = target.to(device=logits.device, dtype=torch.long).clone()
    if bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"`target` values must be in [0, {num_classes}), got {target.tolist()}")
    return target


def target_score(target: Target, output: Tensor, batch_size: int) -> Callable[[Tensor], Tensor]:
    """The function giving the ``(B,)`` per-sample scores that gradient methods explain.

    Args:
        target: ``None`` (each sample's predicted class), an int, a LongTensor ``(B,)``, or a callable
            ``target(output) -> (B,)`` float scores.
        output: the selected model output of the forward (after ``output_key``); for class targets the
            logits ``(B, num_classes)``, which fix the predicted class.
        batch_size: ``B``.

    Returns:
        ``score(output) -> (B,)``: the target's logit per sample, or the callable's checked result; it
        applies to ``output`` and to outputs of the same form (LeGrad's per-layer read-outs).

    Raises:
        ValueError: naming ``target`` when class targets meet an output that is not ``(B, num_classes)``,
            or the callable returns something else than differentiable float scores ``(B,)``.
    """
    if target is not None and not isinstance(target, (int, Tensor)):  # a callable: `check_target` allowed no other
        target_fn = target

        def score(value: Tensor) -> Tensor:
            scores = target_fn(value)
            check_scores(scores, batch_size, value.requires_grad)
            return scores

        return score
    if not isinstance(output, Tensor) or output.dim() != 2:
        raise ValueError(
            "gradient methods with a class `target` need a model returning logits of shape (B, num_classes), got "
            f"{tuple(output.shape)}; pass `output_key` to pick the logits, or a callable `target` mapping the "
            "output to (B,) scores"
        )
    indices = class_indices(target, output)
    return lambda value: value.gather(1, indices[:, None].to(value.device)).squeeze(1)


def check_scores(scores: object, batch_size: int, needs_graph: bool) -> None:
    """Raises unless a callable target's `scores` are float `(batch_size,)`, on the graph when `needs_graph`."""
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (batch_size,) or not scores.is_floating_point():
        got = (
            f"a {scores.dtype} tensor of shape {tuple(scores.shape)}"
            if isinstance(scores, Tensor)
            else type(scores).__name__
        )
        raise ValueError(
            f"a callable `target` must return float scores of shape ({batch_size},), one per sample, got {got}"
        )
    if needs_graph and not scores.requires_grad:
        raise ValueError(
            "a callable `target` must return scores computed from the output it is given (with their gradient); "
            "got a tensor without autograd history (detached, or computed under torch.no_grad())"
        )
