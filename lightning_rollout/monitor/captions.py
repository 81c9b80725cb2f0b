"""The caption lines under each panel: true and predicted classes, scores, a callable target's score."""

from typing import List, Optional, Sequence

import torch
from torch import Tensor

from lightning_rollout.monitor.tasks import Panels


def captions(
    task: str,
    panels: Panels,
    labels: Optional[Tensor],
    scores: Optional[Tensor],
    target_scores: Optional[Tensor],
    class_names: Optional[Sequence[str]] = None,
) -> List[List[str]]:
    """Caption lines per panel; ``scores`` ``(P, C)`` (``None`` for ``task="none"``) and ``target_scores``
    ``(P,)`` are per panel.

    ``multiclass``: the true label (when known) and the prediction with its confidence. ``multilabel``: the
    explained class with its score, then the sample's true labels (when known). ``none``: nothing about
    classes. With a callable target, its score on the sample (``target: 0.42``) comes last.
    """

    def name(index: int) -> str:
        return class_names[index] if class_names is not None and index < len(class_names) else str(index)

    if task != "none" and scores is None:
        raise ValueError(f"captions of `task`={task!r} need the class scores, got None")
    lines: List[List[str]] = []
    for panel, sample in enumerate(panels.samples.tolist()):
        sample_lines: List[str] = []
        if task == "multiclass" and scores is not None:
            if labels is not None and labels.dim() == 1:
                sample_lines.append(f"true: {name(int(labels[sample]))}")
            confidence, predicted = scores[panel].max(dim=-1)
            sample_lines.append(f"pred: {name(int(predicted))} ({float(confidence):.2f})")
        elif task == "multilabel" and scores is not None:
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
