"""The side pass of a logging step: the model's input of the kept samples → panels → maps, scores, scalars.

`explain_samples` runs it over the whole kept batch and, on an out-of-memory error, again in chunks of
half the size. The training framework lends only a `Runtime`: the device, its precision's input
conversion and forward context, and the rank.
"""

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict, List, NamedTuple, Optional

import torch
from torch import Tensor, nn

from lightning_rollout.core.hooks import side_pass
from lightning_rollout.core.outputs import select_output
from lightning_rollout.engine.api import explain_with
from lightning_rollout.monitor import tasks
from lightning_rollout.monitor.scalars import all_finite, faithfulness_scalars, saco_scalars
from lightning_rollout.monitor.settings import MonitorSettings
from lightning_rollout.monitor.tasks import Panels


def _identity(images: Tensor) -> Tensor:
    return images


@dataclass(frozen=True)
class Runtime:
    """What a training framework lends the logging step.

    Attributes:
        device: where the model runs.
        convert_input: the precision's conversion of the model input (Lightning's `convert_input`).
        forward_context: the precision's forward context (e.g. autocast).
        is_global_zero: whether this process logs.
        world_size: the number of processes.
    """

    device: torch.device
    convert_input: Callable[[Tensor], Tensor] = _identity
    forward_context: Callable[[], ContextManager] = nullcontext
    is_global_zero: bool = True
    world_size: int = 1


class ExplainedSamples(NamedTuple):
    """What one side pass over the kept samples gives, on the CPU."""

    panels: Panels
    """Which sample each map shows and which class it explains (see `lightning_rollout.monitor.tasks`)."""
    maps: Dict[str, Tensor]
    """`{method: (P, h, w)}` (video: `(P, T', h, w)`), one map per panel."""
    scores: Optional[Tensor]
    """`(P, num_classes)` class scores per panel (softmax or sigmoid by task); `None` for `"none"`."""
    target_scores: Optional[Tensor]
    """`(P,)` a callable target's score per panel, else `None`."""
    faithfulness: Dict[str, Dict[str, float]]
    """`{method: {"deletion_auc": ..., "insertion_auc": ..., "saco": ...}}` (the AUCs with `faithfulness_steps`,
    SaCo with `saco_groups`); empty when both are off, without class panels or when a map is not finite."""
    heads: Optional[Tensor]
    """`(P, heads, h, w)` (video: `(P, heads, T', h, w)`) method `"attention"`'s per-head maps, with
    `attention_heads`; else `None`."""


def explain_panels(
    settings: MonitorSettings, runtime: Runtime, model: nn.Module, inputs: Tensor, labels: Optional[Tensor]
) -> ExplainedSamples:
    """One side pass through `model` over the model inputs `inputs` (on `runtime.device`) of the kept
    samples: probabilities, every method's maps and their faithfulness scalars (deletion and insertion AUCs,
    SaCo; each when on), under the runtime's precision. SaCo sends each method's `P * saco_groups`
    perturbed panels through the model in one forward."""
    task, target, output_key = settings.task, settings.target, settings.explain.output_key
    images = runtime.convert_input(inputs)
    with runtime.forward_context():
        # A predicted class must be known before the pass only where it picks the panels (multi-label).
        scores = None
        if target == "prediction" and task == "multilabel":
            with side_pass(model, images.device, needs_grad=False):
                scores = tasks.class_scores(task, select_output(model(images), output_key))
        panels = tasks.panels(task, target, len(inputs), labels, scores, settings.max_labels)
        images = images[panels.samples.to(images.device)]
        # One forward (and one backward) for every method; the probabilities come from the same forward.
        result = explain_with(
            model,
            images,
            settings.methods,
            settings.explain,
            panels.target(target, images.device),
            return_output=True,
            per_head=settings.attention_heads,
        )
        assert result.output is not None, "explain_with gives the output with return_output=True"
        maps = {method: method_maps.cpu() for method, method_maps in result.maps.items()}
        scores = tasks.class_scores(task, result.output)
        panels = panels.with_predictions(scores)
        target_scores = tasks.target_scores(target, result.output) if callable(target) else None
        faithfulness: Dict[str, Dict[str, float]] = {}
        # Deletion, insertion and SaCo read a class's probability: there is none to read without class panels.
        scored = None if panels.classes is None else panels.classes.to(images.device)
        # Clips are not perturbed: the AUCs and SaCo score images.
        perturbed = (settings.faithfulness_steps or settings.saco_groups) and images.dim() == 4
        if perturbed and scored is not None and all(all_finite(m) for m in maps.values()):
            activation = "sigmoid" if task == "multilabel" else "softmax"
            faithfulness = {method: {} for method in maps}
            with side_pass(model, images.device, needs_grad=False):
                if settings.faithfulness_steps:
                    for method, method_maps in maps.items():
                        faithfulness[method].update(
                            faithfulness_scalars(
                                model,
                                images,
                                method_maps,
                                scored,
                                settings.faithfulness_steps,
                                settings.faithfulness_baseline,
                                activation,
                                output_key,
                            )
                        )
                if settings.saco_groups:
                    saco = saco_scalars(model, images, maps, scored, settings.saco_groups, activation, output_key)
                    for method, value in saco.items():
                        faithfulness[method]["saco"] = value
    scores = None if scores is None else scores.cpu()
    heads = None if result.heads is None else result.heads.cpu()
    return ExplainedSamples(panels, maps, scores, target_scores, faithfulness, heads)


def explain_samples(
    settings: MonitorSettings, runtime: Runtime, model: nn.Module, inputs: Tensor, labels: Optional[Tensor]
) -> ExplainedSamples:
    """`explain_panels` over all the kept samples; on an out-of-memory error, again in chunks of half the
    size, down to one sample, and the chunks' results joined (batch means weighted by panel count).

    Raises:
        torch.OutOfMemoryError: if even one sample does not fit.
    """
    count, size = len(inputs), len(inputs)
    while True:
        try:
            parts = [
                explain_panels(
                    settings,
                    runtime,
                    model,
                    inputs[start : start + size],
                    None if labels is None else labels[start : start + size],
                )
                for start in range(0, count, size)
            ]
            break
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = (size + 1) // 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return parts[0] if len(parts) == 1 else _joined(parts, size)


def _joined(parts: List[ExplainedSamples], size: int) -> ExplainedSamples:
    """The side passes of consecutive chunks of `size` samples, as one."""
    maps = {method: torch.cat([part.maps[method] for part in parts]) for method in parts[0].maps}
    panels = Panels(
        torch.cat([part.panels.samples + index * size for index, part in enumerate(parts)]),
        _joined_classes([part.panels.classes for part in parts]),
        parts[0].panels.predicted,
    )
    weights = [len(part.panels.samples) for part in parts]  # the faithfulness means (AUCs, SaCo) are over panels
    faithfulness = {
        method: {
            name: sum(n * part.faithfulness[method][name] for n, part in zip(weights, parts)) / sum(weights)
            for name in names
        }
        for method, names in parts[0].faithfulness.items()
        if all(method in part.faithfulness for part in parts)
    }

    def joined(field: str) -> Optional[Tensor]:
        values = [getattr(part, field) for part in parts]
        return None if values[0] is None else torch.cat(values)

    return ExplainedSamples(panels, maps, joined("scores"), joined("target_scores"), faithfulness, joined("heads"))


def _joined_classes(classes: List[Optional[Tensor]]) -> Optional[Tensor]:
    """The chunks' explained classes joined; every chunk has them or none has."""
    known = [value for value in classes if value is not None]
    if not known:
        return None
    if len(known) != len(classes):
        raise RuntimeError("the chunks of one side pass disagree on whether their panels explain classes")
    return torch.cat(known)
