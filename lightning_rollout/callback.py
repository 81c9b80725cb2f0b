"""``AttentionRolloutCallback``: explanation maps of a fixed validation batch, logged every N epochs.

The callback is glue: it keeps the fixed batch (:mod:`~lightning_rollout.batch`), runs
:func:`~lightning_rollout.explain` in a side pass, turns the maps into pictures and scalars
(:mod:`~lightning_rollout.report`) and hands them to one sink per logger (:mod:`~lightning_rollout.sinks`).
"""

import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
from torch import Tensor, nn
from typing_extensions import override

from lightning_rollout._lightning import callback_bases
from lightning_rollout.batch import BatchKey, FixedBatch, check_key, take_samples
from lightning_rollout.capture import side_pass
from lightning_rollout.explain import check_model, explain, logits_of, validate_options
from lightning_rollout.geometry import check_overrides
from lightning_rollout.methods import METHODS
from lightning_rollout.rendering import to_display_images
from lightning_rollout.report import (
    all_finite,
    captions,
    map_scalars,
    pick_columns,
    render_filmstrips,
    render_samples,
)
from lightning_rollout.sinks import ImageSink, PNGImageSink, sink_for_logger

TARGETS = ("label", "prediction")


def _check_int(argument: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{argument}` must be an int >= {minimum}, got {value!r}")


def _check_stats(argument: str, value: Optional[Sequence[float]]) -> None:
    if value is None:
        return
    if (
        not isinstance(value, (list, tuple))
        or len(value) not in (1, 3)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        raise ValueError(f"`{argument}` must be None or a list of 1 or 3 numbers, got {value!r}")
    if argument == "std" and any(v <= 0 for v in value):
        raise ValueError(f"`std` values must be > 0, got {value!r}")


class AttentionRolloutCallback(*callback_bases()):
    """Logs explanation maps of a fixed validation batch to TensorBoard every ``every_n_epochs``.

    The first ``num_samples`` validation samples (taken from batches Lightning already loads, so the
    training run is unchanged) are explained after every ``every_n_epochs``-th validation epoch. Per
    method it logs, at ``trainer.global_step``:

    - ``{tag_prefix}/{method}/samples``: each input beside its overlay, captioned with the true label,
      the predicted label and its confidence;
    - ``{tag_prefix}/{method}/filmstrip``: a row per sample, a column per logged epoch;
    - scalars ``{tag_prefix}/{method}/entropy`` (normalised map entropy, 1 = uniform) and, when the batch
      carries object masks, ``.../energy`` (share of map mass inside the mask), ``.../pointing_game``
      (share of maps whose peak is on the object) and ``{tag_prefix}/mask_area`` (the energy of a
      uniform map).

    Works with ``Trainer`` of ``lightning.pytorch`` and of ``pytorch_lightning``, in ``fit``, ``validate``
    and ``test``, and under DDP (rank 0 computes and logs). With a logger other than TensorBoard the
    pictures go to PNG files under its log directory.

    Args:
        methods: names of :func:`~lightning_rollout.explain` methods: ``rollout``, ``grad_rollout``,
            ``chefer``, ``gradcam``.
        num_samples: how many validation samples to explain.
        every_n_epochs: log after every N-th validation epoch of ``fit``.
        head_fusion: ``mean``, ``max`` or ``min`` (rollout).
        discard_ratio: in ``[0, 1)`` (rollout and gradient rollout).
        target: the class gradient methods explain: ``label`` (the true label) or ``prediction``.
        image_key: where the images sit in a batch; ``None``: index 0 of a tuple/list or key ``image``.
        label_key: where the labels sit; ``None``: index 1 or key ``label`` (optional).
        mask_key: where object masks ``(B, H, W)`` sit; ``None``: index 2 or key ``mask`` (optional).
        mean: per-channel mean used to normalise the images, for display; ``None``: the timm model's
            data config, or no un-normalisation when there is none.
        std: per-channel std, likewise.
        colormap: a matplotlib colour map name.
        alpha: overlay opacity in ``[0, 1]``.
        log_initial_maps: log the untrained model's maps at step 0 (needs the sanity check, which
            captures the batch before training starts).
        class_names: names shown instead of class indices.
        filmstrip_columns: the most epochs shown in a filmstrip (evenly spaced, first and last kept).
        attention_pattern, gradcam_layer, num_prefix_tokens, grid_size: as in
            :func:`~lightning_rollout.explain`, for custom models.
        tag_prefix: the first part of every tag.

    Raises:
        ValueError: on any bad argument (in ``__init__``), or a model whose attention modules or token
            geometry cannot be found (in ``setup``, before the first training step).

    Example::

        trainer = Trainer(callbacks=[AttentionRolloutCallback(methods=["rollout", "grad_rollout"])])
    """

    def __init__(
        self,
        methods: List[str] = ["rollout"],  # noqa: B006  (a list, so LightningCLI YAML can set it)
        num_samples: int = 8,
        every_n_epochs: int = 1,
        head_fusion: str = "mean",
        discard_ratio: float = 0.9,
        target: str = "label",
        image_key: BatchKey = None,
        label_key: BatchKey = None,
        mask_key: BatchKey = None,
        mean: Optional[List[float]] = None,
        std: Optional[List[float]] = None,
        colormap: str = "jet",
        alpha: float = 0.5,
        log_initial_maps: bool = True,
        class_names: Optional[List[str]] = None,
        filmstrip_columns: int = 10,
        attention_pattern: Optional[str] = None,
        gradcam_layer: Optional[str] = None,
        num_prefix_tokens: Optional[int] = None,
        grid_size: Optional[Tuple[int, int]] = None,
        tag_prefix: str = "attention",
    ) -> None:
        if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
            raise ValueError(f"`methods` must be a non-empty list of names from {list(METHODS)}, got {methods!r}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"`methods` must not repeat a name, got {methods!r}")
        for method in methods:
            validate_options(method, head_fusion, discard_ratio)
        _check_int("num_samples", num_samples, 1)
        _check_int("every_n_epochs", every_n_epochs, 1)
        _check_int("filmstrip_columns", filmstrip_columns, 1)
        if target not in TARGETS:
            raise ValueError(f"`target` must be one of {list(TARGETS)}, got {target!r}")
        for argument, key in (("image_key", image_key), ("label_key", label_key), ("mask_key", mask_key)):
            check_key(argument, key)
        _check_stats("mean", mean)
        _check_stats("std", std)
        if colormap not in matplotlib.colormaps:
            raise ValueError(f"`colormap` must be a name in matplotlib.colormaps (e.g. 'jet', 'inferno'), got {colormap!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
        if class_names is not None and (
            not isinstance(class_names, (list, tuple)) or not all(isinstance(n, str) for n in class_names)
        ):
            raise ValueError(f"`class_names` must be None or a list of str, got {class_names!r}")
        if not isinstance(tag_prefix, str) or not tag_prefix.strip("/"):
            raise ValueError(f"`tag_prefix` must be a non-empty str, got {tag_prefix!r}")
        check_overrides(num_prefix_tokens, grid_size)

        self.methods = list(methods)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.target = target
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key
        self.mean, self.std = mean, std
        self.colormap = colormap
        self.alpha = alpha
        self.log_initial_maps = log_initial_maps
        self.class_names = class_names
        self.filmstrip_columns = filmstrip_columns
        self.attention_pattern = attention_pattern
        self.gradcam_layer = gradcam_layer
        self.num_prefix_tokens = num_prefix_tokens
        self.grid_size = grid_size
        self.tag_prefix = tag_prefix.strip("/")

        self._batch: Optional[FixedBatch] = None
        self._batch_frozen = False
        self._history: Dict[str, List[Tuple[str, Tensor]]] = {method: [] for method in self.methods}
        self._last_logged: Optional[Tuple[str, int]] = None
        self._display_stats: Tuple[Optional[List[float]], Optional[List[float]]] = (mean, std)
        self._sinks: Optional[List[ImageSink]] = None
        self._warned: set = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=self.methods, tag_prefix=self.tag_prefix)

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Checks the model before anything runs: attention layers, Grad-CAM layer, token geometry."""
        adapter = check_model(
            pl_module,
            self.methods,
            attention_pattern=self.attention_pattern,
            gradcam_layer=self.gradcam_layer,
            num_prefix_tokens=self.num_prefix_tokens,
            grid_size=self.grid_size,
        )
        self._display_stats = self._resolve_display_stats(adapter.data_config())
        self._sinks = None

    @override
    def on_validation_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, batch, dataloader_idx)

    @override
    def on_test_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, batch, dataloader_idx)

    @override
    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if not self.log_initial_maps or trainer.global_step != 0 or not trainer.is_global_zero:
            return
        if self._batch is None:
            self._warn_once(
                "initial",
                "`log_initial_maps=True` needs the sanity check (num_sanity_val_steps > 0) to capture the "
                "validation batch before training; the untrained model's maps are not logged",
            )
            return
        self._log_maps(trainer, pl_module, label="init", root=self.tag_prefix)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._batch_frozen = self._batch is not None
        if trainer.sanity_checking:
            return
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        label = f"e{trainer.current_epoch} s{trainer.global_step}"
        self._log_maps(trainer, pl_module, label=label, root=self.tag_prefix)

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._batch_frozen = self._batch is not None
        self._log_maps(trainer, pl_module, label=None, root=f"{self.tag_prefix}/test")

    @override
    def state_dict(self) -> Dict[str, Any]:
        return {
            "batch": None if self._batch is None else self._batch.state_dict(),
            "history": {method: list(entries) for method, entries in self._history.items()},
            "last_logged": self._last_logged,
        }

    @override
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        batch = state_dict.get("batch")
        self._batch = None if batch is None else FixedBatch(batch["images"], batch.get("labels"), batch.get("masks"))
        self._batch_frozen = self._batch is not None
        history = state_dict.get("history", {})
        self._history = {method: list(history.get(method, [])) for method in self.methods}
        last_logged = state_dict.get("last_logged")
        self._last_logged = None if last_logged is None else tuple(last_logged)

    # ------------------------------------------------------------------------------------ internals

    def _resolve_display_stats(self, config: Dict[str, Any]) -> Tuple[Optional[List[float]], Optional[List[float]]]:
        mean = self.mean if self.mean is not None else config.get("mean")
        std = self.std if self.std is not None else config.get("std")
        return (None if mean is None else list(mean)), (None if std is None else list(std))

    def _collect(self, trainer: Any, batch: Any, dataloader_idx: int) -> None:
        if self._batch_frozen or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        if self._batch is not None and len(self._batch) >= self.num_samples:
            return
        limit = self.num_samples - (0 if self._batch is None else len(self._batch))
        samples = take_samples(batch, limit, self.image_key, self.label_key, self.mask_key)
        if self.target == "label" and samples.labels is None:
            raise ValueError(
                "`target`='label' but the validation batch has no labels; set `label_key` or use "
                "`target`='prediction'"
            )
        self._batch = samples if self._batch is None else self._batch.extend(samples, self.num_samples)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)

    def _image_sinks(self, trainer: Any) -> List[ImageSink]:
        """One sink per logger: its native one (TensorBoard, W&B, MLflow) or PNG files under its log dir."""
        if self._sinks is not None:
            return self._sinks
        self._sinks = []
        if not trainer.loggers:
            self._warn_once("no-logger", "AttentionRolloutCallback: the Trainer has no logger; nothing is logged")
            return self._sinks
        png_roots = set()
        for logger in trainer.loggers:
            sink = sink_for_logger(logger)
            if sink is None:
                # The tags start with ``tag_prefix``: files land in <log_dir>/<tag_prefix>/<method>/...
                root = getattr(logger, "log_dir", None) or logger.save_dir or trainer.default_root_dir
                if root in png_roots:
                    continue
                png_roots.add(root)
                sink = PNGImageSink(root)
                self._warn_once(
                    f"png-{root}",
                    f"AttentionRolloutCallback: {type(logger).__name__} cannot show images; PNGs are written under "
                    f"{os.path.join(root, self.tag_prefix)} (TensorBoardLogger, WandbLogger and MLFlowLogger show "
                    "them in their UI)",
                )
            self._sinks.append(sink)
        return self._sinks

    def _log_maps(
        self, trainer: Any, pl_module: nn.Module, label: Optional[str], root: str, step: Optional[int] = None
    ) -> None:
        """Explains the fixed batch and logs pictures and scalars under ``root`` at ``step``.

        ``label`` names the filmstrip column; ``None`` (test runs) logs no filmstrip and keeps no history.
        ``step`` defaults to the global step (``lightning-rollout replay`` passes each checkpoint's).
        """
        if not trainer.is_global_zero or self._batch is None:
            return
        step = trainer.global_step if step is None else step
        if self._last_logged == (root, step):
            return
        sinks = self._image_sinks(trainer)
        if not sinks:
            return
        maps, probabilities = self._explain(trainer, pl_module)
        broken = [method for method, value in maps.items() if not all_finite(value)]
        if broken:
            self._warn_once(
                f"nan-{step}",
                f"AttentionRolloutCallback: the {broken} maps at step {step} contain NaN/Inf (is the model "
                "diverging?); nothing is logged this time, training goes on",
            )
            return
        self._last_logged = (root, step)
        batch = self._batch
        display = to_display_images(batch.images, *self._display_stats)
        sample_captions = captions(batch.labels, probabilities, self.class_names)
        samples_caption = " | ".join(f"{i}: " + ", ".join(lines) for i, lines in enumerate(sample_captions))
        scalars: Dict[str, float] = {}
        if batch.masks is not None:
            scalars[f"{root}/mask_area"] = float(batch.masks.float().mean())
        for method, method_maps in maps.items():
            tag = f"{root}/{method}"
            samples = render_samples(display, method_maps, sample_captions, self.colormap, self.alpha)
            for sink in sinks:
                sink.log_image(f"{tag}/samples", samples, step, caption=samples_caption)
            if label is not None:
                history = self._history[method]
                history.append((label, method_maps))
                filmstrip = render_filmstrips(display, history, self.colormap, self.alpha, self.filmstrip_columns)
                columns = [history[i][0] for i in pick_columns(len(history), self.filmstrip_columns)]
                for sink in sinks:
                    sink.log_image(f"{tag}/filmstrip", filmstrip, step, caption="input | " + " | ".join(columns))
            scalars.update({f"{tag}/{name}": value for name, value in map_scalars(method_maps, batch.masks).items()})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _explain(self, trainer: Any, pl_module: nn.Module) -> Tuple[Dict[str, Tensor], Tensor]:
        """The side pass: predictions and every method's maps, under the Trainer's precision."""
        batch = self._batch
        device = pl_module.device if hasattr(pl_module, "device") else next(pl_module.parameters()).device
        precision = trainer.precision_plugin
        images = precision.convert_input(batch.images.to(device))
        with precision.forward_context():
            with side_pass(pl_module, images.device, needs_grad=False):
                probabilities = logits_of(pl_module(images)).float().softmax(dim=-1).cpu()
            target = None
            if self.target == "label" and batch.labels is not None:
                target = batch.labels.to(device)
            maps = {
                method: explain(
                    pl_module,
                    images,
                    method,
                    head_fusion=self.head_fusion,
                    discard_ratio=self.discard_ratio,
                    target=target,
                    attention_pattern=self.attention_pattern,
                    gradcam_layer=self.gradcam_layer,
                    num_prefix_tokens=self.num_prefix_tokens,
                    grid_size=self.grid_size,
                ).cpu()
                for method in self.methods
            }
        return maps, probabilities
