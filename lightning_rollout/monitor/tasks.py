"""What the model is trained for (the callback's ``task``, named as torchmetrics names it), and what follows
from it: the scores shown, which ``(sample, class)`` panels are explained, their captions and their masks.

- ``"multiclass"``: one class per sample; scores are the softmax of the logits; labels ``(B,)``. One panel
  per sample, explaining its label (``target="label"``) or its predicted class.
- ``"multilabel"``: any number of classes per sample; scores are the sigmoid of each logit; labels multi-hot
  ``(B, C)``. A panel per positive label of each sample (``target="label"``, at most ``max_labels``), or per
  each sample's ``max_labels`` highest-scoring classes (``target="prediction"``); with per-class masks
  ``(B, C, H, W)`` each panel is scored against its class's mask.
- ``"none"``: the output is not class scores (embeddings, regression): no scores or predictions are shown;
  gradient methods need a callable ``target``.

A callable ``target`` (see :mod:`lightning_rollout.targets`) explains one panel per sample, its own score.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from lightning_rollout.core.checks import check_int
from lightning_rollout.metrics import class_discrimination
from lightning_rollout.methods import GRADIENT_METHODS
from lightning_rollout.targets import positive_labels

TASKS = ("multiclass", "multilabel", "none")
TARGETS = ("label", "prediction")

TargetSpec = Union[str, Callable]
"""The callback's ``target``: ``"label"``, ``"prediction"`` or a callable ``target(output) -> Tensor (B,)``."""


def check_task(task: str, target: TargetSpec, methods: Sequence[str], max_labels: int) -> None:
    """Checks the callback's ``task``, ``target`` and ``max_labels`` together.

    Raises:
        ValueError: on an unknown task or target, or a gradient method with ``task="none"`` and no callable
            target (there is no class to explain).
    """
    if task not in TASKS:
        raise ValueError(f"`task` must be one of {list(TASKS)}, got {task!r}")
    if not callable(target) and target not in TARGETS:
        raise ValueError(
            f"`target` must be one of {list(TARGETS)} or a callable target(output) -> Tensor (B,) (in LightningCLI "
            f"YAML a dotted path or class_path), got {target!r}"
        )
    check_int("max_labels", max_labels, 1)
    gradient = [method for method in methods if method in GRADIENT_METHODS]
    if task == "none" and gradient and not callable(target):
        raise ValueError(
            f"`task`='none' has no classes, so the gradient methods {gradient} have nothing to explain with "
            f"`target`={target!r}; pass a callable `target` (e.g. lightning_rollout.targets.EmbeddingSimilarity "
            "or RegressionOutput), or keep to label-free methods such as 'rollout' and 'attention'"
        )


def check_labels(task: str, target: TargetSpec, labels: Optional[Tensor], masks: Optional[Tensor]) -> None:
    """Checks the first kept samples' labels (and per-class masks) against ``task``.

    Raises:
        ValueError: on labels that are not class indices with ``task="multiclass"`` and ``target="label"``
            (multi-hot labels want ``task="multilabel"``), labels that are not multi-hot ``(B, C)``
            with ``task="multilabel"``, or per-class masks whose class count differs from the labels'.
    """
    if labels is None:
        return
    if task == "multiclass" and target == "label" and labels.dim() != 1:
        hint = " (multi-hot labels: pass `task`='multilabel')" if labels.dim() == 2 else ""
        raise ValueError(
            f"`task`='multiclass' needs class indices of shape (B,), but the validation labels have shape "
            f"{tuple(labels.shape)}{hint}"
        )
    if task == "multilabel":
        if labels.dim() != 2 or not bool(((labels == 0) | (labels == 1)).all()):
            raise ValueError(
                f"`task`='multilabel' needs multi-hot labels (B, num_labels) of 0s and 1s, got a "
                f"{labels.dim()}-D {labels.dtype} tensor of shape {tuple(labels.shape)}"
            )
        if masks is not None and masks.dim() == 4 and masks.shape[1] != labels.shape[1]:
            raise ValueError(
                f"the per-class masks hold {masks.shape[1]} classes but the labels {labels.shape[1]}; "
                "masks must be (B, H, W) or (B, num_labels, H, W)"
            )


def class_scores(task: str, logits: Tensor) -> Optional[Tensor]:
    """The scores shown per class: softmax (``multiclass``), sigmoid (``multilabel``) or ``None`` (``none``).

    Raises:
        ValueError: if a class task's output is not ``(B, num_classes)``.
    """
    if task == "none":
        return None
    if logits.dim() != 2:
        raise ValueError(
            f"`task`={task!r} needs an output of class scores (B, num_classes), got shape {tuple(logits.shape)}; "
            "pick the logits with `output_key`, or use `task`='none'"
        )
    logits = logits.detach().float()
    return logits.softmax(dim=-1) if task == "multiclass" else logits.sigmoid()


def target_scores(target: Callable, output: Tensor) -> Tensor:
    """A callable target's score of each row of ``output`` (the model's selected output), on the CPU.

    Raises:
        ValueError: naming ``target`` when it does not give one score per sample.
    """
    scores = target(output)
    if not isinstance(scores, Tensor) or tuple(scores.shape) != (output.shape[0],):
        got = f"shape {tuple(scores.shape)}" if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(
            f"`target`={target!r} must map the model's output to one score per sample, shape ({output.shape[0]},), "
            f"got {got}"
        )
    return scores.detach().float().cpu()


@dataclass
class Panels:
    """Which sample of the fixed batch each panel shows and which class it explains.

    Attributes:
        samples: ``(P,)`` row of the fixed batch per panel.
        classes: ``(P,)`` class per panel, or ``None`` when the panels explain no class (a callable target,
            or a class-agnostic run of ``task="none"``) or the predicted class, not known yet.
        predicted: whether the classes are the predicted ones, known after the pass
            (:meth:`with_predictions`).
    """

    samples: Tensor
    classes: Optional[Tensor]
    predicted: bool = False

    def target(self, target: TargetSpec, device: torch.device):
        """What :func:`~lightning_rollout.engine.api` gets as ``target`` for these panels."""
        if callable(target):
            return target
        return None if self.classes is None else self.classes.to(device)

    def with_predictions(self, scores: Optional[Tensor]) -> "Panels":
        """These panels with the predicted classes filled in from the pass's class scores ``(P, C)``."""
        if not self.predicted or self.classes is not None:
            return self
        return Panels(self.samples, scores.argmax(dim=-1).cpu(), predicted=True)


def panels(
    task: str,
    target: TargetSpec,
    batch_size: int,
    labels: Optional[Tensor],
    scores: Optional[Tensor],
    max_labels: int,
) -> Panels:
    """The panels of one logging step over a fixed batch of ``batch_size`` samples (see the module docstring).

    ``scores`` (the fixed batch's class scores) are needed only for ``task="multilabel"`` with
    ``target="prediction"``; a multi-class prediction is read after the pass.
    """
    if callable(target) or task == "none":
        return Panels(torch.arange(batch_size), None)
    if task == "multiclass":
        if target == "prediction":  # explain (engine) and read (:meth:`Panels.with_predictions`) the arg-max
            return Panels(torch.arange(batch_size), None, predicted=True)
        return Panels(torch.arange(batch_size), labels.long())
    if target == "label":
        samples, classes = positive_labels(labels, max_labels)
        return Panels(samples, classes)
    top = scores.topk(min(max_labels, scores.shape[1]), dim=1).indices
    return Panels(torch.arange(batch_size).repeat_interleave(top.shape[1]), top.flatten())


def captions(
    task: str,
    panels: Panels,
    labels: Optional[Tensor],
    scores: Optional[Tensor],
    target_scores: Optional[Tensor],
    class_names: Optional[Sequence[str]] = None,
) -> List[List[str]]:
    """Caption lines per panel; ``scores`` ``(P, C)`` and ``target_scores`` ``(P,)`` are per panel.

    ``multiclass``: the true label (when known) and the prediction with its confidence. ``multilabel``: the
    explained class with its score, then the sample's true labels (when known). ``none``: nothing about
    classes. With a callable target, its score on the sample (``target: 0.42``) comes last.
    """
    def name(index: int) -> str:
        return class_names[index] if class_names is not None and index < len(class_names) else str(index)

    lines: List[List[str]] = []
    for panel, sample in enumerate(panels.samples.tolist()):
        sample_lines: List[str] = []
        if task == "multiclass":
            if labels is not None and labels.dim() == 1:
                sample_lines.append(f"true: {name(int(labels[sample]))}")
            confidence, predicted = scores[panel].max(dim=-1)
            sample_lines.append(f"pred: {name(int(predicted))} ({float(confidence):.2f})")
        elif task == "multilabel":
            if panels.classes is not None:
                explained = int(panels.classes[panel])
                sample_lines.append(f"{name(explained)} ({float(scores[panel, explained]):.2f})")
            if labels is not None:
                present = [name(i) for i in torch.nonzero(labels[sample] > 0.5).flatten().tolist()]
                sample_lines.append("true: " + (", ".join(present) or "none"))
        if target_scores is not None:
            sample_lines.append(f"target: {float(target_scores[panel]):.3g}")
        lines.append(sample_lines)
    return lines


def panel_masks(masks: Optional[Tensor], panels: Panels) -> Optional[Tensor]:
    """Each panel's object mask ``(P, H, W)``: its class's mask when the masks are per class ``(B, C, H, W)``
    and the panel explains a class; the sample's mask when they are ``(B, H, W)``; else ``None``."""
    if masks is None:
        return None
    if masks.dim() == 3:
        return masks[panels.samples]
    if panels.classes is None:
        return None
    return masks[panels.samples, panels.classes]


def discrimination(maps: Tensor, masks: Optional[Tensor], labels: Optional[Tensor], panels: Panels) -> Optional[float]:
    """The share of panels whose map puts more mass on its class's object than on the sample's other present
    classes' objects (:func:`~lightning_rollout.metrics.class_discrimination`), over the panels whose sample
    holds another class; ``None`` without per-class masks, multi-hot labels or such panels."""
    if masks is None or masks.dim() != 4 or labels is None or labels.dim() != 2 or panels.classes is None:
        return None
    present = labels[panels.samples] > 0.5
    others = present.clone()
    others[torch.arange(others.shape[0]), panels.classes] = False
    keep = others.any(dim=1)
    if not bool(keep.any()):
        return None
    own = masks[panels.samples, panels.classes].float()
    other = (masks[panels.samples].float() * others[:, :, None, None]).amax(dim=1)
    return float(class_discrimination(maps[keep], own[keep], other[keep]).mean())
