"""One logging step, free of any training framework: the kept samples → side pass → pictures and scalars.

`MapLogger` holds what the steps of a run share (the settings, the kept samples, the filmstrip history,
the display statistics) and runs each step. A front end (the Lightning callback, `lightning-rollout
replay`) hands it batches, says when to log, lends a `Runtime`, and gives the image sinks and a function
that logs scalars.
"""

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from torch import nn

from lightning_rollout.engine.checks import check_model
from lightning_rollout.methods import method_class
from lightning_rollout.models.base import ModelAdapter
from lightning_rollout.monitor.captions import captions
from lightning_rollout.monitor.history import FilmstripHistory
from lightning_rollout.monitor.inputs import Stats, model_input, resolve_display_stats
from lightning_rollout.monitor.keeper import FixedBatchKeeper
from lightning_rollout.monitor.notices import WarnOnce, short_traceback
from lightning_rollout.monitor.scalars import all_finite, discrimination, map_scalars, video_scalars
from lightning_rollout.monitor.settings import MonitorSettings
from lightning_rollout.monitor.side_pass import ExplainedSamples, Runtime, explain_samples
from lightning_rollout.monitor.tasks import check_labels, panel_masks
from lightning_rollout.rendering.figures import constant_maps, render_filmstrips, render_heads, render_samples
from lightning_rollout.rendering.images import fit_display_images, to_display_images
from lightning_rollout.rendering.video import (
    fit_display_clips,
    mean_frames,
    overlay_frames,
    render_clip_strips,
    to_display_clips,
)
from lightning_rollout.sinks.base import ImageSink, VideoSink

LogScalars = Callable[[Dict[str, float], int], None]
"""`log_scalars(scalars, step)`: where a step's numbers go."""


class MapLogger:
    """The state and the work of the logging steps of one run.

    Args:
        settings: what to log and how.
        name: who speaks in warnings, e.g. `"AttentionRolloutCallback"`.
    """

    def __init__(self, settings: MonitorSettings, name: str = "AttentionRolloutCallback") -> None:
        self.settings = settings
        self.warn = WarnOnce(name)
        self.keeper = FixedBatchKeeper(
            settings.num_samples,
            settings.image_key,
            settings.label_key,
            settings.mask_key,
            settings.needs_labels,
            settings.sample_selection,
            self.warn,
        )
        self.history = FilmstripHistory(settings.methods, settings.filmstrip_columns)
        self.display_stats: Stats = (settings.mean, settings.std)
        self.class_names: Optional[Sequence[str]] = settings.class_names
        self.num_classes: Optional[int] = None
        self.tubelet: Optional[int] = None  # a video model's frames per temporal slice (set by `setup`)

    def setup(self, model: nn.Module, class_names: Optional[Sequence[str]] = None) -> ModelAdapter:
        """Checks `model` before anything runs (attention layers, Grad-CAM layer, token geometry, the display
        statistics against its input channels, `class_names` against its classes); `class_names` (e.g. the
        data module's) are shown when the settings name none.

        Raises:
            ValueError: naming the argument that does not fit the model.
        """
        settings = self.settings
        adapter = check_model(model, settings.methods, settings.explain)
        self.display_stats = resolve_display_stats(
            settings.mean, settings.std, adapter.data_config(), adapter.input_channels(), self.warn
        )
        self.num_classes = self.keeper.num_classes = adapter.num_classes()
        video = adapter.video_input()
        self.tubelet = None if video is None else video.tubelet
        names = settings.class_names
        if names is not None and isinstance(self.num_classes, int) and self.num_classes > 0:
            if len(names) != self.num_classes:
                raise ValueError(
                    f"`class_names` holds {len(names)} names but the model has {self.num_classes} classes; "
                    f"pass {self.num_classes} names (or none)"
                )
        self.class_names = names or (list(class_names) if isinstance(class_names, (list, tuple)) else None)
        return adapter

    def inputs(self, device: torch.device) -> torch.Tensor:
        """The model's input for the kept samples (`input_transform` applied), on `device`."""
        return model_input(self.keeper.kept().images.to(device), self.settings.input_transform, self.display_stats)

    def due(self, root: str, step: int) -> bool:
        """Whether there are kept samples and `step` is not logged under `root` yet (rank 0's view)."""
        return self.keeper.batch is not None and self.history.last_logged != (root, step)

    def takes_part(self, is_global_zero: bool, ready: bool, sharded: bool) -> bool:
        """Whether this process runs the step: with a `sharded` model (over several processes) every process
        once rank 0 is `ready` (a collective call that sends rank 0's samples the first time); otherwise rank 0
        alone, when `ready`."""
        if sharded:
            return self.keeper.share(is_global_zero, ready)
        return is_global_zero and ready

    def stop(self, error: Exception) -> None:
        """Gives up for this run after `error` (found once training began): keeps no samples, logs nothing, and
        says why once (a bad input's message, or any other failure's short traceback)."""
        self.keeper.stop()
        cause = str(error) if isinstance(error, ValueError) else short_traceback(error)
        self.warn("unusable", f"logs nothing in this run: {cause}")

    def check_first_batch(self, runtime: Runtime, model: Optional[nn.Module]) -> None:
        """Checks the samples first kept, so that no later step fails on them: the model input, the labels and,
        given `model`, a trial of the whole step on one sample (side pass, every map's grid, scalars, captions).

        Raises:
            ValueError: naming the argument or method at fault; any error of the trial itself.
        """
        settings, batch = self.settings, self.keeper.kept()
        inputs = model_input(batch.images, settings.input_transform, self.display_stats)
        check_labels(settings.task, settings.target, batch.labels, batch.masks, settings.label_key, self.num_classes)
        if model is None:
            return
        sample = batch.select(slice(0, 1))
        result = explain_samples(settings, runtime, model, inputs[:1].to(runtime.device), sample.labels)
        video = inputs.dim() == 5
        for method, maps in result.maps.items():
            if maps.shape[-2] * maps.shape[-1] < 2:
                height, width = inputs.shape[-2:]
                where = "`gradcam_layer`'s feature map" if method == "gradcam" else "the patch grid"
                raise ValueError(
                    f"the {method} maps of this model's {height}x{width} input are a {maps.shape[-2]}x"
                    f"{maps.shape[-1]} grid ({where}); the pictures and scalars need at least 2 cells: use larger "
                    "inputs, smaller patches" + (" or an earlier `gradcam_layer`" if method == "gradcam" else "")
                )
            masks = panel_masks(sample.masks, result.panels, video)
            video_scalars(maps, masks, self._tubelet(inputs, maps)) if video else map_scalars(maps, masks)
        captions(settings.task, result.panels, sample.labels, result.scores, result.target_scores, self.class_names)

    def log(
        self,
        runtime: Runtime,
        model: nn.Module,
        sinks: Sequence[ImageSink],
        log_scalars: LogScalars,
        step: int,
        label: Optional[str],
        root: Optional[str] = None,
    ) -> bool:
        """Explains the kept samples with `model` and logs pictures to `sinks` and scalars to `log_scalars`, at
        `step`; `label` names the new filmstrip column (`None`: no filmstrip, no column kept); tags start
        with `root` (default: the settings' `tag_prefix`). Every process that must join the forward (a
        sharded model) calls this; only `runtime.is_global_zero` renders and logs.

        A failure never propagates: it becomes a warning with its traceback, and this step is skipped.

        Returns:
            Whether this step logged.
        """
        root = self.settings.tag_prefix if root is None else root
        try:
            inputs = self.inputs(runtime.device)  # `input_transform` runs once per step
            result = explain_samples(self.settings, runtime, model, inputs, self.keeper.kept().labels)
            if not runtime.is_global_zero or not self._finite(result, step):
                return False
            self.history.last_logged = (root, step)
            self._render(result, inputs, sinks, log_scalars, root, step, label)
            return True
        except Exception as error:  # noqa: BLE001  (a logging step must never end the training run)
            if runtime.is_global_zero:
                self.warn(
                    f"failed-{root}-{step}",
                    f"logging the maps at step {step} failed ({type(error).__name__}: {error}); this time's "
                    f"pictures and scalars are skipped, training goes on.\n{short_traceback(error)}",
                )
            return False

    def _finite(self, result: ExplainedSamples, step: int) -> bool:
        """Whether every map is finite; warns (once per step) when not."""
        broken = [method for method, value in result.maps.items() if not all_finite(value)]
        if broken:
            self.warn(
                f"nan-{step}",
                f"the {broken} maps at step {step} contain NaN/Inf (is the model diverging?); nothing is logged "
                "this time, training goes on",
            )
        return not broken

    def _render(
        self,
        result: ExplainedSamples,
        inputs: torch.Tensor,
        sinks: Sequence[ImageSink],
        log_scalars: LogScalars,
        root: str,
        step: int,
        label: Optional[str],
    ) -> None:
        """Pictures to `sinks` and scalars to `log_scalars`; appends a filmstrip column when `label` is given."""
        settings, batch, panels = self.settings, self.keeper.kept(), result.panels
        video = inputs.dim() == 5
        if video:  # the strips show frames; the filmstrip and the heads each clip's mean frame
            clips = to_display_clips(inputs.detach().float().cpu(), *self.display_stats)
            clips = fit_display_clips(clips, settings.max_cell_size)[panels.samples.numpy()]
            display = mean_frames(clips)
        else:
            sample_display = to_display_images(inputs.detach().float().cpu(), *self.display_stats)
            display = fit_display_images(sample_display, settings.max_cell_size)[panels.samples.numpy()]
        if result.heads is not None:
            pooled_heads = result.heads.mean(dim=2) if video else result.heads  # video: mean over time
            heads = render_heads(display, pooled_heads, settings.colormap, settings.alpha)
            for sink in sinks:
                sink.log_image(f"{root}/attention/heads", heads, step, caption="input | one overlay per head")
        lines = captions(settings.task, panels, batch.labels, result.scores, result.target_scores, self.class_names)
        samples_caption = " | ".join(f"{i}: " + ", ".join(panel) for i, panel in enumerate(lines))
        masks = panel_masks(batch.masks, panels, video)
        scalars: Dict[str, float] = {}
        if masks is not None:
            scalars[f"{root}/mask_area"] = float(masks.float().mean())
        for method, maps in result.maps.items():
            tag = f"{root}/{method}"
            if bool(constant_maps(maps).all()):
                self.warn(
                    f"constant-{method}",
                    f"every {method} map at step {step} is constant (value {float(maps.flatten()[0]):.3g}); likely "
                    f"cause: {method_class(method).constant_map_cause}. The pictures say 'constant map' instead "
                    "of an overlay",
                )
            if video:
                tubelet = self._tubelet(inputs, maps)
                samples = render_clip_strips(clips, maps, tubelet, lines, settings.colormap, settings.alpha)
                self._log_videos(sinks, f"{tag}/video", clips, maps, tubelet, step)
            else:
                samples = render_samples(display, maps, lines, settings.colormap, settings.alpha)
            for sink in sinks:
                sink.log_image(f"{tag}/samples", samples, step, caption=samples_caption)
            if label is not None:  # video: the map pooled over time (its mean) over the mean frame
                kept = maps.mean(dim=1) if video else maps
                columns = [(c.label, c.maps) for c in self.history.add_column(method, label, kept)]
                filmstrip = render_filmstrips(display, columns, settings.colormap, settings.alpha)
                caption = "input | " + " | ".join(name for name, _ in columns)
                for sink in sinks:
                    sink.log_image(f"{tag}/filmstrip", filmstrip, step, caption=caption)
            numbers = video_scalars(maps, masks, self._tubelet(inputs, maps)) if video else map_scalars(maps, masks)
            scalars.update({f"{tag}/{name}": value for name, value in numbers.items()})
            share = None if video else discrimination(maps, batch.masks, batch.labels, panels)
            if share is not None:
                scalars[f"{tag}/class_discrimination"] = share
            scalars.update({f"{tag}/{name}": value for name, value in result.faithfulness.get(method, {}).items()})
        log_scalars(scalars, step)

    def _tubelet(self, inputs: torch.Tensor, maps: torch.Tensor) -> int:
        """Frames per temporal slice: the adapter's (from `setup`), else the clip length over the slices."""
        return self.tubelet or max(1, inputs.shape[1] // maps.shape[1])

    def _log_videos(self, sinks: Sequence[ImageSink], tag: str, clips, maps: torch.Tensor, tubelet: int, step: int):
        """Every frame with its overlay, the samples side by side, to the sinks that take a video."""
        takers = [sink for sink in sinks if isinstance(sink, VideoSink) and sink.can_log_video()]
        if not takers:
            return
        frames = [
            overlay_frames(clip, clip_maps, tubelet, self.settings.colormap, self.settings.alpha)
            for clip, clip_maps in zip(clips, maps)
        ]
        tiled = np.concatenate(frames, axis=2)  # (T, H, P·W, 3)
        for sink in takers:
            sink.log_video(tag, tiled, step)

    def state_dict(self) -> Dict[str, Any]:
        return {**self.keeper.state_dict(), **self.history.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.keeper.load_state_dict(state_dict)
        self.history.load_state_dict(state_dict)
