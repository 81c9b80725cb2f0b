"""One logging step of :class:`~lightning_rollout.AttentionRolloutCallback`: the side pass over the fixed
batch, then pictures and scalars handed to one sink per logger.

:func:`log_maps` is the step itself; the callback calls it after each logged validation (or test) epoch and
``lightning-rollout replay`` once per checkpoint. :func:`explain_batch` is the side pass alone (the model's
probabilities, every method's maps, their faithfulness scalars), :func:`explain_in_chunks` retries it in
smaller chunks on an out-of-memory error, :func:`check_batch` tries it once when the batch is first kept;
:class:`MapLog` keeps what a filmstrip needs across steps and goes into the callback's checkpointed state.
"""

import os
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor, nn

from lightning_rollout.monitor import tasks
from lightning_rollout.monitor.batch import FixedBatch
from lightning_rollout.core.hooks import side_pass
from lightning_rollout.core.checks import select_output
from lightning_rollout.monitor.inputs import model_input
from lightning_rollout.core.distributed import is_sharded
from lightning_rollout.engine.api import attention_per_head, explain_many
from lightning_rollout.monitor.keeper import Warn, check_labels
from lightning_rollout.rendering.images import fit_display_images, to_display_images
from lightning_rollout.monitor.tasks import Panels
from lightning_rollout.rendering.figures import (
    all_finite,
    constant_maps,
    faithfulness_scalars,
    map_scalars,
    render_filmstrips,
    render_heads,
    render_samples,
    thin_columns,
)
from lightning_rollout.sinks import ImageSink, PNGImageSink, sink_for_logger

if TYPE_CHECKING:
    from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback

CONSTANT_MAP_CAUSES = {
    "attention": (
        "the last attention layer spreads the read-out token's attention evenly over the patches (or puts "
        "it all on prefix tokens)"
    ),
    "rollout": (
        "every class-to-patch entry was discarded: untrained layer-scale models (deit3, DINOv2 with "
        "registers) keep almost all attention on the diagonal; lower `discard_ratio` (e.g. 0.5 or 0)"
    ),
    "grad_rollout": (
        "the target logit has no gradient through the attention: a zero-initialised classifier head "
        "(torchvision's ViT) gives zero gradients at init, and a `global_pool='avg'` model gives none through "
        "the class token; the maps fill in once the head trains, or lower `discard_ratio`"
    ),
    "chefer": (
        "the target logit has no gradient through the attention: a zero-initialised classifier head "
        "(torchvision's ViT) gives zero gradients at init, and a `global_pool='avg'` model gives none through "
        "the class token; the maps fill in once the head trains"
    ),
    "gradcam": (
        "the target logit has no gradient at `gradcam_layer` (a zero-initialised classifier head gives "
        "zero gradients at init) or every channel weight is negative; the maps fill in once the head trains"
    ),
    "legrad": (
        "the target logit has no gradient through the attention (a zero-initialised classifier head gives "
        "zero gradients at init); the maps fill in once the head trains"
    ),
}
"""Why each method's maps come out constant, and what to change; shown in the warning."""


class SidePass(NamedTuple):
    """What one side pass over the fixed batch gives, on the CPU."""

    panels: Panels
    """Which sample each map shows and which class it explains (see :mod:`~lightning_rollout.monitor.tasks`)."""
    maps: Dict[str, Tensor]
    """``{method: (P, h, w)}``, one map per panel."""
    scores: Optional[Tensor]
    """``(P, num_classes)`` class scores per panel (softmax or sigmoid by task); ``None`` for ``"none"``."""
    target_scores: Optional[Tensor]
    """``(P,)`` a callable target's score per panel, else ``None``."""
    faithfulness: Dict[str, Dict[str, float]]
    """``{method: {"deletion_auc": ..., "insertion_auc": ...}}``; empty when off or a map is not finite."""
    heads: Optional[Tensor]
    """``(B, heads, h, w)`` method ``"attention"``'s per-head maps of the fixed batch, with ``attention_heads``."""


class MapLog:
    """What the logging steps remember: each method's filmstrip columns and the last ``(root, step)`` logged.

    A method keeps at most ``filmstrip_columns`` columns ``(label, maps, position)`` (``position``: the
    column's logging ordinal), thinned by :func:`~lightning_rollout.report.thin_columns` as columns come in,
    so the checkpointed state stops growing once the filmstrip is full and a resumed run shows the same one.

    Args:
        methods: the callback's methods.
        filmstrip_columns: the most columns a filmstrip shows.
    """

    def __init__(self, methods: List[str], filmstrip_columns: int) -> None:
        self.filmstrip_columns = filmstrip_columns
        self.history: Dict[str, List[Tuple[str, Tensor, int]]] = {method: [] for method in methods}
        self.last_logged: Optional[Tuple[str, int]] = None
        self.sinks: Optional[List[ImageSink]] = None  # one per logger, made at the first logging step

    def add_column(self, method: str, label: str, maps: Tensor) -> List[Tuple[str, Tensor]]:
        """Adds a column of ``method`` and returns the columns its filmstrip shows, ``(label, maps)``, oldest first."""
        columns = self.history[method]
        columns.append((label, maps, columns[-1][2] + 1 if columns else 0))
        kept = thin_columns([position for _, _, position in columns], self.filmstrip_columns)
        self.history[method] = columns = [columns[i] for i in kept]
        return [(label, maps) for label, maps, _ in columns]

    def state_dict(self) -> Dict[str, Any]:
        return {
            "history": {method: list(entries) for method, entries in self.history.items()},
            "last_logged": self.last_logged,
        }

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        history = state_dict.get("history", {})
        # Checkpoints of versions before the thinning hold every column as ``(label, maps)``.
        self.history = {
            method: [
                (entry[0], entry[1], entry[2] if len(entry) > 2 else i)
                for i, entry in enumerate(history.get(method, []))
            ]
            for method in self.history
        }
        last_logged = state_dict.get("last_logged")
        self.last_logged = None if last_logged is None else tuple(last_logged)


def image_sinks(trainer: Any, tag_prefix: str, image_format: str, warn: Warn) -> List[ImageSink]:
    """One sink per logger: its native one (TensorBoard, W&B, MLflow; pictures as ``image_format``) or PNG files
    under its log dir."""
    if not trainer.loggers:
        warn("no-logger", "AttentionRolloutCallback: the Trainer has no logger; nothing is logged")
        return []
    sinks, png_roots = [], set()
    for logger in trainer.loggers:
        sink = sink_for_logger(logger, image_format)
        if sink is None:
            # The tags start with ``tag_prefix``: files land in <log_dir>/<tag_prefix>/<method>/...
            root = getattr(logger, "log_dir", None) or logger.save_dir or trainer.default_root_dir
            if root in png_roots:
                continue
            png_roots.add(root)
            sink = PNGImageSink(root)
            warn(
                f"png-{root}",
                f"AttentionRolloutCallback: {type(logger).__name__} cannot show images; PNGs are written under "
                f"{os.path.join(root, tag_prefix)} (TensorBoardLogger, WandbLogger and MLFlowLogger show "
                "them in their UI)",
            )
        sinks.append(sink)
    return sinks


def explain_batch(
    callback: "AttentionRolloutCallback", trainer: Any, pl_module: nn.Module, model: nn.Module, batch: FixedBatch
) -> SidePass:
    """The side pass through ``model`` (``pl_module``, or the strategy's wrapper of a sharded one) over
    ``batch``: probabilities, every method's maps and their faithfulness scalars (when on), under the
    Trainer's precision."""
    device = pl_module.device if hasattr(pl_module, "device") else next(pl_module.parameters()).device
    precision = trainer.precision_plugin
    inputs = model_input(batch.images.to(device), callback.input_transform, callback._display_stats)
    images = precision.convert_input(inputs)
    with precision.forward_context():
        # A predicted class must be known before the pass only where it picks the panels (multi-label).
        scores = None
        if callback.target == "prediction" and callback.task == "multilabel":
            with side_pass(model, images.device, needs_grad=False):
                scores = tasks.class_scores(callback.task, select_output(model(images), callback.output_key))
        panels = tasks.panels(callback.task, callback.target, len(batch), batch.labels, scores, callback.max_labels)
        fixed_images, images = images, images[panels.samples.to(device)]
        options = dict(
            head_fusion=callback.head_fusion,
            discard_ratio=callback.discard_ratio,
            target=panels.target(callback.target, device),
            output_key=callback.output_key,
            attention_pattern=callback.attention_pattern,
            gradcam_layer=callback.gradcam_layer,
            num_prefix_tokens=callback.num_prefix_tokens,
            grid_size=callback.grid_size,
        )
        # One forward (and one backward) for every method; the probabilities come from the same forward.
        maps, output = explain_many(model, images, list(callback.methods), return_output=True, **options)
        maps = {method: method_maps.cpu() for method, method_maps in maps.items()}
        scores = tasks.class_scores(callback.task, output)
        panels = panels.with_predictions(scores)
        target_scores = tasks.target_scores(callback.target, output) if callable(callback.target) else None
        faithfulness: Dict[str, Dict[str, float]] = {}
        # Deletion and insertion read a class's probability: there is none to read without class panels.
        scored = None if panels.classes is None else panels.classes.to(device)
        if callback.faithfulness_steps and scored is not None and all(all_finite(value) for value in maps.values()):
            steps, baseline = callback.faithfulness_steps, callback.faithfulness_baseline
            activation = "sigmoid" if callback.task == "multilabel" else "softmax"
            with side_pass(model, images.device, needs_grad=False):
                faithfulness = {
                    method: faithfulness_scalars(
                        model, images, method_maps, scored, steps, baseline, activation, callback.output_key
                    )
                    for method, method_maps in maps.items()
                }
        heads = None
        if callback.attention_heads:
            geometry = dict(num_prefix_tokens=callback.num_prefix_tokens, grid_size=callback.grid_size)
            heads = attention_per_head(model, fixed_images, attention_pattern=callback.attention_pattern, **geometry)
    scores = None if scores is None else scores.cpu()
    return SidePass(panels, maps, scores, target_scores, faithfulness, None if heads is None else heads.cpu())


def explain_in_chunks(
    callback: "AttentionRolloutCallback", trainer: Any, pl_module: nn.Module, model: nn.Module, batch: FixedBatch
) -> SidePass:
    """:func:`explain_batch` over the whole ``batch``; on an out-of-memory error, again in chunks of half the
    size, down to one sample, and the chunks' results joined (batch means weighted by chunk size).

    Raises:
        torch.OutOfMemoryError: if even one sample does not fit.
    """
    size = len(batch)
    while True:
        try:
            parts = [
                (len(chunk), explain_batch(callback, trainer, pl_module, model, chunk))
                for chunk in (batch.select(slice(start, start + size)) for start in range(0, len(batch), size))
            ]
            break
        except torch.cuda.OutOfMemoryError:
            if size == 1:
                raise
            size = (size + 1) // 2
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    if len(parts) == 1:
        return parts[0][1]
    maps = {method: torch.cat([part.maps[method] for _, part in parts]) for method in parts[0][1].maps}
    panels = [part.panels for _, part in parts]
    panels = Panels(
        torch.cat([chunk.samples + start for chunk, start in zip(panels, range(0, len(batch), size))]),
        None if panels[0].classes is None else torch.cat([chunk.classes for chunk in panels]),
        panels[0].predicted,
    )
    weights = [len(part.panels.samples) for _, part in parts]  # the faithfulness means are over panels
    faithfulness = {
        method: {
            name: sum(n * part.faithfulness[method][name] for n, (_, part) in zip(weights, parts)) / sum(weights)
            for name in names
        }
        for method, names in parts[0][1].faithfulness.items()
        if all(method in part.faithfulness for _, part in parts)
    }

    def joined(field: str) -> Optional[Tensor]:
        values = [getattr(part, field) for _, part in parts]
        return None if values[0] is None else torch.cat(values)

    return SidePass(panels, maps, joined("scores"), joined("target_scores"), faithfulness, joined("heads"))


def check_batch(
    callback: "AttentionRolloutCallback",
    trainer: Any,
    pl_module: nn.Module,
    batch: FixedBatch,
    num_classes: Optional[int],
) -> None:
    """Checks the samples first kept (before training) so that no later logging step can fail on them: the
    model input, the labels (:func:`~lightning_rollout.fixed_batch.check_labels`) and, when the Trainer has a
    logger and the model is not sharded, a trial of the logging step on one sample (side pass, every method's
    grid, scalars, captions).

    Raises:
        ValueError: naming the argument or method at fault (e.g. a map grid of fewer than 2 cells); any error
            of the trial side pass itself.
    """
    model_input(batch.images, callback.input_transform, callback._display_stats)
    tasks.check_labels(callback.task, callback.target, batch.labels, batch.masks)
    if callback.task == "multiclass":
        check_labels(batch.labels, callback.target, callback.label_key, num_classes)
    if not trainer.loggers or is_sharded(trainer.strategy.model or pl_module):
        return  # nothing will be logged, or every rank would have to join the trial
    sample = batch.select(slice(0, 1))
    result = explain_batch(callback, trainer, pl_module, pl_module, sample)
    for method, maps in result.maps.items():
        if maps.shape[1] * maps.shape[2] < 2:
            height, width = sample.images.shape[2:]
            where = "`gradcam_layer`'s feature map" if method == "gradcam" else "the patch grid"
            raise ValueError(
                f"the {method} maps of this model's {height}x{width} input are a {maps.shape[1]}x{maps.shape[2]} "
                f"grid ({where}); the pictures and scalars need at least 2 cells: use larger inputs, smaller "
                "patches" + (" or an earlier `gradcam_layer`" if method == "gradcam" else "")
            )
        map_scalars(maps, tasks.panel_masks(sample.masks, result.panels))
    tasks.captions(
        callback.task, result.panels, sample.labels, result.scores, result.target_scores, callback._class_names
    )


def log_maps(
    callback: "AttentionRolloutCallback",
    trainer: Any,
    pl_module: nn.Module,
    label: Optional[str],
    step: Optional[int] = None,
    root: Optional[str] = None,
    ready: bool = True,
) -> None:
    """Explains ``callback``'s fixed batch with ``pl_module`` and logs pictures and scalars to ``trainer``'s
    loggers.

    Every rank must call this: on a sharded model all ranks run the side pass on rank 0's batch (sent to
    them once), only rank 0 renders and logs; otherwise rank 0 works alone.

    Args:
        callback: the callback whose settings, fixed batch and filmstrip columns are used (and extended).
        trainer: lends its loggers, precision plugin, strategy and rank.
        pl_module: the model to explain.
        label: the filmstrip column's name (e.g. ``"e3 s120"``); ``None`` (test runs) logs no filmstrip
            and keeps no column.
        step: the step to log at; ``None``: ``trainer.global_step``.
        root: the first part of the tags; ``None``: ``callback.tag_prefix``.
        ready: rank 0's decision to log this time; ``False`` skips it (on every rank).
    """
    step = trainer.global_step if step is None else step
    root = callback.tag_prefix if root is None else root
    state = callback._map_log
    sinks: List[ImageSink] = []
    if trainer.is_global_zero:
        ready = ready and callback.fixed_batch is not None and state.last_logged != (root, step)
        if ready and state.sinks is None:
            state.sinks = image_sinks(trainer, callback.tag_prefix, callback.image_format, callback._warn_once)
        sinks = (state.sinks or []) if ready else []
        ready = bool(sinks)
    # A sharded model runs through the strategy's wrapper (an FSDP1 root or DeepSpeed engine gathers the
    # parameters it holds); a data parallel one runs unwrapped, so that DDP's forward never syncs.
    wrapper = trainer.strategy.model
    sharded = wrapper is not None and is_sharded(wrapper)
    if sharded and trainer.world_size > 1:
        if not callback._keeper.share(trainer.is_global_zero, ready):
            return
    elif not trainer.is_global_zero or not ready:
        return
    model = wrapper if sharded else pl_module
    try:
        result = explain_in_chunks(callback, trainer, pl_module, model, callback.fixed_batch)
        if trainer.is_global_zero and _finite(callback, result, step):
            state.last_logged = (root, step)
            _render_and_log(callback, trainer.loggers, sinks, root, step, label, result)
    except Exception as error:  # noqa: BLE001  (a logging step must never end the training run)
        if trainer.is_global_zero:
            callback._warn_once(
                f"failed-{root}-{step}",
                f"AttentionRolloutCallback: logging the maps at step {step} failed ({type(error).__name__}: "
                f"{error}); this time's pictures and scalars are skipped, training goes on",
            )


def _finite(callback: "AttentionRolloutCallback", result: SidePass, step: int) -> bool:
    """Whether every map is finite; warns (once per step) when not."""
    broken = [method for method, value in result.maps.items() if not all_finite(value)]
    if broken:
        callback._warn_once(
            f"nan-{step}",
            f"AttentionRolloutCallback: the {broken} maps at step {step} contain NaN/Inf (is the model "
            "diverging?); nothing is logged this time, training goes on",
        )
    return not broken


def _render_and_log(
    callback: "AttentionRolloutCallback",
    loggers: List[Any],
    sinks: List[ImageSink],
    root: str,
    step: int,
    label: Optional[str],
    result: SidePass,
) -> None:
    """Pictures to ``sinks`` and scalars to ``loggers``; appends a filmstrip column when ``label`` is given."""
    batch, stats = callback.fixed_batch, callback._display_stats
    panels = result.panels
    sample_display = to_display_images(model_input(batch.images, callback.input_transform, stats), *stats)
    sample_display = fit_display_images(sample_display, callback.max_cell_size)
    display = sample_display[panels.samples.numpy()]
    if result.heads is not None:
        heads = render_heads(sample_display, result.heads, callback.colormap, callback.alpha)
        for sink in sinks:
            sink.log_image(f"{root}/attention/heads", heads, step, caption="input | one overlay per head")
    sample_captions = tasks.captions(
        callback.task, panels, batch.labels, result.scores, result.target_scores, callback._class_names
    )
    samples_caption = " | ".join(f"{i}: " + ", ".join(lines) for i, lines in enumerate(sample_captions))
    masks = tasks.panel_masks(batch.masks, panels)
    scalars: Dict[str, float] = {}
    if masks is not None:
        scalars[f"{root}/mask_area"] = float(masks.float().mean())
    for method, method_maps in result.maps.items():
        tag = f"{root}/{method}"
        if bool(constant_maps(method_maps).all()):
            callback._warn_once(
                f"constant-{method}",
                f"AttentionRolloutCallback: every {method} map at step {step} is constant (value "
                f"{float(method_maps.flatten()[0]):.3g}); likely cause: "
                f"{CONSTANT_MAP_CAUSES.get(method, 'an untrained head')}. "
                "The pictures say 'constant map' instead of an overlay",
            )
        samples = render_samples(display, method_maps, sample_captions, callback.colormap, callback.alpha)
        for sink in sinks:
            sink.log_image(f"{tag}/samples", samples, step, caption=samples_caption)
        if label is not None:
            columns = callback._map_log.add_column(method, label, method_maps)
            filmstrip = render_filmstrips(display, columns, callback.colormap, callback.alpha, len(columns))
            names = [name for name, _ in columns]
            for sink in sinks:
                sink.log_image(f"{tag}/filmstrip", filmstrip, step, caption="input | " + " | ".join(names))
        scalars.update({f"{tag}/{name}": value for name, value in map_scalars(method_maps, masks).items()})
        discrimination = tasks.discrimination(method_maps, batch.masks, batch.labels, panels)
        if discrimination is not None:
            scalars[f"{tag}/class_discrimination"] = discrimination
        scalars.update({f"{tag}/{name}": value for name, value in result.faithfulness.get(method, {}).items()})
    for logger in loggers:
        logger.log_metrics(scalars, step=step)

