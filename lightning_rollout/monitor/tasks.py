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

A callable ``target`` (see `lightning_rollout.targets`) explains one panel per sample, its own score.
"""

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import Tensor

from lightning_rollout.core.checks import check_int
from lightning_rollout.methods import method_class
from lightning_rollout.monitor.batch import BatchKey, is_class_indices
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
    # Read from the registry at call time, so that a method registered after import is checked too.
    gradient = [method for method in methods if method_class(method).needs_grad]
    if task == "none" and gradient and not callable(target):
        raise ValueError(
            f"`task`='none' has no classes, so the gradient methods {gradient} have nothing to explain with "
            f"`target`={target!r}; pass a callable `target` (e.g. lightning_rollout.targets.EmbeddingSimilarity "
            "or RegressionOutput), or keep to label-free methods such as 'rollout' and 'attention'"
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
            (`with_predictions`).
    """

    samples: Tensor
    classes: Optional[Tensor]
    predicted: bool = False

    def target(self, target: TargetSpec, device: torch.device):
        """What `api` gets as ``target`` for these panels."""
        if callable(target):
            return target
        return None if self.classes is None else self.classes.to(device)

    def with_predictions(self, scores: Optional[Tensor]) -> "Panels":
        """These panels with the predicted classes filled in from the pass's class scores ``(P, C)``."""
        if not self.predicted or self.classes is not None:
            return self
        if scores is None:
            raise ValueError("panels of predicted classes need the pass's class scores, got None")
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
        if target == "prediction":  # explain (engine) and read (`Panels.with_predictions`) the arg-max
            return Panels(torch.arange(batch_size), None, predicted=True)
        return Panels(torch.arange(batch_size), _labels(labels).long())
    if target == "label":
        samples, classes = positive_labels(_labels(labels), max_labels)
        return Panels(samples, classes)
    if scores is None:
        raise ValueError("`task`='multilabel' with `target`='prediction' needs the fixed batch's class scores")
    top = scores.topk(min(max_labels, scores.shape[1]), dim=1).indices
    return Panels(torch.arange(batch_size).repeat_interleave(top.shape[1]), top.flatten())


def _labels(labels: Optional[Tensor]) -> Tensor:
    if labels is None:
        raise ValueError(
            "`target`='label' but the fixed batch has no labels; set `label_key` or use `target`='prediction'"
        )
    return labels


def panel_masks(masks: Optional[Tensor], panels: Panels, video: bool = False) -> Optional[Tensor]:
    """Each panel's object mask ``(P, H, W)``: its class's mask when the masks are per class ``(B, C, H, W)``
    and the panel explains a class; the sample's mask when they are ``(B, H, W)``; else ``None``. ``video``:
    the masks are per frame ``(B, T, H, W)``, and each panel gets its sample's ``(P, T, H, W)``."""
    if masks is None:
        return None
    if masks.dim() == 3 or video:
        return masks[panels.samples]
    if panels.classes is None:
        return None
    return masks[panels.samples, panels.classes]


def check_labels(
    task: str,
    target: TargetSpec,
    labels: Optional[Tensor],
    masks: Optional[Tensor],
    label_key: BatchKey = None,
    num_classes: Optional[int] = None,
) -> None:
    """Checks the first kept samples' labels (and per-class masks) against ``task`` and ``target``: with
    ``task="multiclass"`` and ``target="label"``, one class index per sample within ``num_classes`` (when
    known); with ``"multilabel"``, multi-hot labels matching the per-class masks.

    Raises:
        ValueError: naming the task, the target or ``label_key``, the labels' form and what is allowed.
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
    if task == "multiclass" and target == "label":
        if not is_class_indices(labels):
            raise ValueError(
                f"`target`='label' needs one class index per sample (integer labels of shape (B,)), got "
                f"{labels.dtype} labels of shape {tuple(labels.shape)} at `label_key`={label_key!r}; for other "
                "labels use `target`='prediction'"
            )
        if num_classes and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"the labels at `label_key`={label_key!r} hold {int(labels.min())}..{int(labels.max())} but the "
                f"model has {num_classes} classes"
            )
