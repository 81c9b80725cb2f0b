"""``AttentionRolloutCallback``: explanation maps of a fixed validation batch, logged every N epochs.

The callback is glue: it keeps the fixed batch (:mod:`~lightning_rollout.batch`), runs
:func:`~lightning_rollout.explain` in a side pass, turns the maps into pictures and scalars
(:mod:`~lightning_rollout.report`) and hands them to one sink per logger (:mod:`~lightning_rollout.sinks`).
"""

import math
import os
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import matplotlib
from torch import Tensor, nn
from typing_extensions import override

from lightning_rollout._lightning import callback_bases
from lightning_rollout.batch import BatchKey, FixedBatch, check_key, count_samples, take_samples
from lightning_rollout.capture import side_pass
from lightning_rollout.distributed import broadcast_from_rank_zero, is_sharded
from lightning_rollout.checks import check_int, logits_of
from lightning_rollout.explain import check_model, explain, validate_options
from lightning_rollout.geometry import check_overrides
from lightning_rollout.methods import METHODS
from lightning_rollout.metrics.faithfulness import check_baseline
from lightning_rollout.rendering import to_display_images
from lightning_rollout.report import (
    all_finite,
    captions,
    constant_maps,
    faithfulness_scalars,
    map_scalars,
    pick_columns,
    render_filmstrips,
    render_samples,
)
from lightning_rollout.sinks import ImageSink, PNGImageSink, sink_for_logger

TARGETS = ("label", "prediction")

CONSTANT_MAP_CAUSES = {
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
}
"""Why each method's maps come out constant, and what to change; shown in the warning."""


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
    - scalars ``{tag_prefix}/{method}/deletion_auc`` (lower is better) and ``.../insertion_auc`` (higher
      is better): the faithfulness of the maps by perturbation (RISE; see
      :func:`~lightning_rollout.metrics.deletion_insertion_auc`), masks or not.

    Works with ``Trainer`` of ``lightning.pytorch`` and of ``pytorch_lightning``, in ``fit``, ``validate``
    and ``test``, under DDP (rank 0 computes and logs), with sharded models (FSDP, DeepSpeed ZeRO-3: every
    rank joins the side pass on rank 0's batch, rank 0 logs) and with ``torch.compile``-d models (the side
    pass runs them eagerly, leaving the compiled graphs alone). With a logger other than TensorBoard the
    pictures go to PNG files under its log directory.

    Args:
        methods: names of :func:`~lightning_rollout.explain` methods: ``rollout``, ``grad_rollout``,
            ``chefer``, ``gradcam``, ``legrad``.
        num_samples: how many validation samples to explain.
        every_n_epochs: log after every N-th validation epoch of ``fit``.
        head_fusion: ``mean``, ``max`` or ``min`` (rollout).
        discard_ratio: in ``[0, 1)`` (rollout and gradient rollout).
        target: the class gradient methods explain: ``label`` (the true label) or ``prediction``.
        image_key: where the images sit in a batch; ``None``: index 0 of a tuple/list or key ``image``.
        input_transform: a callable mapping the batch's images ``(B, C, H, W)`` to the model's float input
            (e.g. uint8 → normalised float), for datasets whose conversion happens in the step or the
            model; in LightningCLI YAML a dotted import path such as ``my_package.transforms.to_input``.
            ``None``: the images are the model's input and must be float.
        label_key: where the labels sit; ``None``: index 1 or key ``label`` (optional).
        mask_key: where object masks ``(B, H, W)`` sit; ``None``: index 2 or key ``mask`` (optional).
        mean: per-channel mean used to normalise the model's input, for display (1 value or one per input
            channel); ``None``: the timm model's data config when it fits the model's channels, else no
            un-normalisation.
        std: per-channel std, likewise.
        colormap: a matplotlib colour map name.
        alpha: overlay opacity in ``[0, 1]``.
        log_initial_maps: log the untrained model's maps at step 0 (needs a sanity check long enough to
            capture all ``num_samples`` before training starts).
        class_names: names shown instead of class indices.
        filmstrip_columns: the most epochs shown in a filmstrip (evenly spaced, first and last kept).
        attention_pattern, gradcam_layer, num_prefix_tokens, grid_size: as in
            :func:`~lightning_rollout.explain`, for custom models.
        tag_prefix: the first part of every tag.
        faithfulness_steps: steps of the deletion and insertion curves (``2 × (steps + 1)`` forwards of
            each sample per method, batched); ``0`` turns these scalars off.
        faithfulness_baseline: what deleted pixels become and inserted ones are revealed from: ``"blur"``
            (a blurred copy of the image: removes shapes and edges, keeps colours), ``"mean"`` (each image's
            per-channel mean: removes colours too) or a number (a constant in the model's input space; ``0.0``
            is the normalisation mean); choose one that removes what tells your classes apart (see
            :mod:`lightning_rollout.metrics.faithfulness`).

    The fixed batch is filled from the sanity check and, when that holds fewer than ``num_samples``
    samples, from the first validation epoch of training (before its maps are logged); it never changes
    afterwards. Pictures show the model's input (after ``input_transform``) un-normalised with
    ``mean``/``std``. A method whose maps are all constant in a logged epoch warns once with the likely
    cause, and constant maps are captioned ``constant map: value`` instead of a flat overlay.

    Raises:
        ValueError: on any bad argument (in ``__init__``); a model whose attention modules, token geometry
            or input channels do not fit the arguments (in ``setup``, before the first training step); a
            validation batch that is not the model's float input and no ``input_transform`` (when the
            first batch is kept, in the sanity check when there is one).

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
        input_transform: Optional[Callable] = None,
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
        faithfulness_steps: int = 8,
        faithfulness_baseline: Union[float, str] = "blur",
    ) -> None:
        if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
            raise ValueError(f"`methods` must be a non-empty list of names from {list(METHODS)}, got {methods!r}")
        if len(set(methods)) != len(methods):
            raise ValueError(f"`methods` must not repeat a name, got {methods!r}")
        for method in methods:
            validate_options(method, head_fusion, discard_ratio)
        check_int("num_samples", num_samples, 1)
        check_int("every_n_epochs", every_n_epochs, 1)
        check_int("filmstrip_columns", filmstrip_columns, 1)
        check_int("faithfulness_steps", faithfulness_steps, 0)
        check_baseline("faithfulness_baseline", faithfulness_baseline)
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
        if input_transform is not None and not callable(input_transform):
            raise ValueError(
                f"`input_transform` must be None or a callable (images -> model input), got {input_transform!r}"
            )

        self.methods = list(methods)
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio
        self.target = target
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key
        self.input_transform = input_transform
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
        self.faithfulness_steps = faithfulness_steps
        self.faithfulness_baseline = faithfulness_baseline

        self._batch: Optional[FixedBatch] = None
        self._batch_frozen = False
        self._history: Dict[str, List[Tuple[str, Tensor]]] = {method: [] for method in self.methods}
        self._last_logged: Optional[Tuple[str, int]] = None
        self._display_stats: Tuple[Optional[List[float]], Optional[List[float]]] = (mean, std)
        self._val_batch_size: Optional[int] = None
        self._seen = 0  # samples of dataloader 0 seen in the current validation/test epoch
        self._batch_shared = False  # whether rank 0 has sent the batch to the other ranks (sharded models)
        self._sinks: Optional[List[ImageSink]] = None
        self._warned: set = set()

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=self.methods, tag_prefix=self.tag_prefix)

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Checks the model before anything runs: attention layers, Grad-CAM layer, token geometry, and the
        display arguments against the model's input channels and classes."""
        adapter = check_model(
            pl_module,
            self.methods,
            attention_pattern=self.attention_pattern,
            gradcam_layer=self.gradcam_layer,
            num_prefix_tokens=self.num_prefix_tokens,
            grid_size=self.grid_size,
        )
        self._display_stats = self._resolve_display_stats(adapter.data_config(), adapter.input_channels())
        num_classes = adapter.num_classes()
        if self.class_names is not None and isinstance(num_classes, int) and num_classes > 0:
            if len(self.class_names) != num_classes:
                raise ValueError(
                    f"`class_names` holds {len(self.class_names)} names but the model has {num_classes} classes; "
                    f"pass {num_classes} names (or none)"
                )
        self._sinks = None

    @override
    def on_validation_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self._seen = 0

    @override
    def on_test_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self._seen = 0

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
        if not self.log_initial_maps or trainer.global_step != 0:
            return
        if not trainer.is_global_zero:
            # Only a sharded model needs the other ranks, and rank 0 tells them whether to run.
            self._log_maps(trainer, pl_module, label="init", root=self.tag_prefix)
            return
        ready = False
        if self._batch is None:
            self._warn_once(
                "initial",
                "`log_initial_maps=True` needs the sanity check (num_sanity_val_steps > 0) to capture the "
                "validation batch before training; the untrained model's maps are not logged",
            )
        elif not self._batch_frozen:
            # The batch grows in the first validation epoch; an initial column of fewer samples could not
            # stand in the filmstrip beside the later ones.
            needed = math.ceil(self.num_samples / (self._val_batch_size or 1))
            self._warn_once(
                "initial",
                f"`log_initial_maps=True` but the sanity check captured only {len(self._batch)} of `num_samples`="
                f"{self.num_samples} samples; the untrained model's maps are not logged (the filmstrip shows the "
                f"same samples in every column). Set `num_sanity_val_steps` >= {needed} to log them",
            )
        else:
            ready = True
        self._log_maps(trainer, pl_module, label="init", root=self.tag_prefix, ready=ready)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if trainer.sanity_checking:
            # A short sanity check may leave the batch incomplete: the first real epoch fills it up.
            self._batch_frozen = self._batch is not None and len(self._batch) >= self.num_samples
            return
        self._freeze_batch(trainer)
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        label = f"e{trainer.current_epoch} s{trainer.global_step}"
        self._log_maps(trainer, pl_module, label=label, root=self.tag_prefix)

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._freeze_batch(trainer)
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

    def _resolve_display_stats(
        self, config: Dict[str, Any], channels: Optional[int]
    ) -> Tuple[Optional[List[float]], Optional[List[float]]]:
        """``mean``/``std`` for display: the arguments, else the model's data config when it fits ``channels``.

        Raises:
            ValueError: if the model's input has neither 1 nor 3 channels, or ``mean``/``std`` hold
                neither 1 value nor one per input channel.
        """
        if channels is not None and channels not in (1, 3):
            raise ValueError(
                f"the model takes {channels}-channel input, but the pictures can show only 1- or 3-channel inputs; "
                "this callback cannot display this model's input"
            )
        for argument, value in (("mean", self.mean), ("std", self.std)):
            if value is not None and channels is not None and len(value) not in (1, channels):
                raise ValueError(
                    f"`{argument}` holds {len(value)} values but the model takes {channels}-channel input; "
                    f"pass 1 value or {channels}, e.g. `{argument}`={[0.5] * channels}"
                )
        if self.mean is not None and self.std is not None:
            return self.mean, self.std
        stats = []
        for argument, given in (("mean", self.mean), ("std", self.std)):
            value = given if given is not None else config.get(argument)
            if value is not None and given is None and channels is not None and len(value) not in (1, channels):
                # timm keeps the 3-channel statistics of the pretrained config for an `in_chans=1` model.
                if len(set(value)) == 1:
                    value = [value[0]]
                else:
                    self._warn_once(
                        f"stats-{argument}",
                        f"the timm data config's `{argument}`={tuple(value)} does not fit the model's {channels}-"
                        f"channel input; pictures are not un-normalised: pass `mean` and `std` to fix that",
                    )
                    value = None
            stats.append(None if value is None else list(value))
        return stats[0], stats[1]

    def _model_input(self, images: Tensor) -> Tensor:
        """The model's input for the kept images: ``input_transform(images)`` or the images themselves.

        Raises:
            ValueError: naming ``input_transform``, when the result is not a float ``(B, C, H, W)`` tensor
                or its channels do not fit the display statistics.
        """
        inputs = images if self.input_transform is None else self.input_transform(images)
        source = "the validation images" if self.input_transform is None else "`input_transform`'s output"
        if not isinstance(inputs, Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
            got = (
                f"a {inputs.dim()}-D {inputs.dtype} tensor" if isinstance(inputs, Tensor) else type(inputs).__name__
            )
            raise ValueError(
                f"{source} must be the model's float input (B, C, H, W), got {got}; pass `input_transform`, a "
                "callable mapping the batch's images to the model's input (in LightningCLI YAML a dotted import "
                "path, e.g. `my_package.transforms.to_float`)"
            )
        channels = inputs.shape[1]
        for argument, value in zip(("mean", "std"), self._display_stats):
            if value is not None and len(value) not in (1, channels):
                raise ValueError(
                    f"`{argument}` holds {len(value)} values but {source} has {channels} channels; pass 1 value "
                    f"or {channels}"
                )
        if channels not in (1, 3):
            raise ValueError(f"{source} has {channels} channels; pictures show 1- or 3-channel inputs")
        return inputs

    def _collect(self, trainer: Any, batch: Any, dataloader_idx: int) -> None:
        if self._batch_frozen or dataloader_idx != 0 or not trainer.is_global_zero:
            return
        kept = 0 if self._batch is None else len(self._batch)
        if kept >= self.num_samples:
            return
        # An epoch after the sanity check starts the loader over: skip the samples kept already.
        size = count_samples(batch, self.image_key)
        start, self._seen = max(0, kept - self._seen), self._seen + size
        if start >= size:
            return
        samples = take_samples(batch, self.num_samples - kept, self.image_key, self.label_key, self.mask_key, start)
        if self.target == "label" and samples.labels is None:
            raise ValueError(
                "`target`='label' but the validation batch has no labels; set `label_key` or use "
                "`target`='prediction'"
            )
        if self._batch is None:
            self._model_input(samples.images)
            self._val_batch_size = size
        self._batch = samples if self._batch is None else self._batch.extend(samples, self.num_samples)

    def _freeze_batch(self, trainer: Any) -> None:
        """Ends collection after the first validation (or test) epoch; says why when samples are missing."""
        if self._batch_frozen:
            return
        self._batch_frozen = self._batch is not None
        if self._batch is not None and len(self._batch) < self.num_samples and trainer.is_global_zero:
            self._warn_once(
                "short-batch",
                f"the first validation epoch gave only {len(self._batch)} samples for `num_samples`="
                f"{self.num_samples} (dataloader 0{', on rank 0' if trainer.world_size > 1 else ''}); "
                "the maps show these. Check `limit_val_batches` and the validation set's size",
            )

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
        self,
        trainer: Any,
        pl_module: nn.Module,
        label: Optional[str],
        root: str,
        step: Optional[int] = None,
        ready: bool = True,
    ) -> None:
        """Explains the fixed batch and logs pictures and scalars under ``root`` at ``step``.

        ``label`` names the filmstrip column; ``None`` (test runs) logs no filmstrip and keeps no history.
        ``step`` defaults to the global step (``lightning-rollout replay`` passes each checkpoint's).
        ``ready=False`` (rank 0's decision) skips this time. Every rank must call this: on a sharded model
        all ranks run the side pass on rank 0's batch (sent to them once), only rank 0 renders and logs;
        otherwise rank 0 works alone.
        """
        step = trainer.global_step if step is None else step
        sinks: List[ImageSink] = []
        if trainer.is_global_zero:
            ready = ready and self._batch is not None and self._last_logged != (root, step)
            sinks = (self._image_sinks(trainer) or []) if ready else []
            ready = bool(sinks)
        # A sharded model runs through the strategy's wrapper (an FSDP1 root or DeepSpeed engine gathers the
        # parameters it holds); a data parallel one runs unwrapped, so that DDP's forward never syncs.
        wrapper = trainer.strategy.model
        sharded = wrapper is not None and is_sharded(wrapper)
        model = wrapper if sharded else pl_module
        if sharded and trainer.world_size > 1:
            if not self._share_batch(trainer, ready):
                return
        elif not trainer.is_global_zero or not ready:
            return
        maps, probabilities, faithfulness = self._explain(trainer, pl_module, model)
        if not trainer.is_global_zero:
            return
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
        display = to_display_images(self._model_input(batch.images), *self._display_stats)
        sample_captions = captions(batch.labels, probabilities, self.class_names)
        samples_caption = " | ".join(f"{i}: " + ", ".join(lines) for i, lines in enumerate(sample_captions))
        scalars: Dict[str, float] = {}
        if batch.masks is not None:
            scalars[f"{root}/mask_area"] = float(batch.masks.float().mean())
        for method, method_maps in maps.items():
            tag = f"{root}/{method}"
            if bool(constant_maps(method_maps).all()):
                self._warn_once(
                    f"constant-{method}",
                    f"AttentionRolloutCallback: every {method} map at step {step} is constant (value "
                    f"{float(method_maps.flatten()[0]):.3g}); likely cause: {CONSTANT_MAP_CAUSES[method]}. "
                    "The pictures say 'constant map' instead of an overlay",
                )
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
            scalars.update({f"{tag}/{name}": value for name, value in faithfulness.get(method, {}).items()})
        for logger in trainer.loggers:
            logger.log_metrics(scalars, step=step)

    def _share_batch(self, trainer: Any, ready: bool) -> bool:
        """Rank 0's go/no-go and, the first time, its fixed batch, on every rank (a collective call)."""
        if trainer.is_global_zero:
            message = (self._batch if not self._batch_shared else True) if ready else None
        else:
            message = None
        message = broadcast_from_rank_zero(message)
        if message is None:
            return False
        if isinstance(message, FixedBatch):
            self._batch, self._batch_frozen, self._batch_shared = message, True, True
        return True

    def _explain(
        self, trainer: Any, pl_module: nn.Module, model: nn.Module
    ) -> Tuple[Dict[str, Tensor], Tensor, Dict[str, Dict[str, float]]]:
        """The side pass through ``model`` (``pl_module``, or the strategy's wrapper of a sharded one):
        predictions, every method's maps and their faithfulness scalars (when on), under the Trainer's
        precision."""
        batch = self._batch
        device = pl_module.device if hasattr(pl_module, "device") else next(pl_module.parameters()).device
        precision = trainer.precision_plugin
        images = precision.convert_input(self._model_input(batch.images.to(device)))
        with precision.forward_context():
            with side_pass(model, images.device, needs_grad=False):
                probabilities = logits_of(model(images)).float().softmax(dim=-1).cpu()
            target = None
            if self.target == "label" and batch.labels is not None:
                target = batch.labels.to(device)
            maps = {
                method: explain(
                    model,
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
            faithfulness: Dict[str, Dict[str, float]] = {}
            if self.faithfulness_steps and all(all_finite(value) for value in maps.values()):
                scored = target if target is not None else probabilities.argmax(dim=-1).to(device)
                with side_pass(model, images.device, needs_grad=False):
                    faithfulness = {
                        method: faithfulness_scalars(
                            model, images, method_maps, scored, self.faithfulness_steps, self.faithfulness_baseline
                        )
                        for method, method_maps in maps.items()
                    }
        return maps, probabilities, faithfulness
