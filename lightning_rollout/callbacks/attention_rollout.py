"""``AttentionRolloutCallback``: explanation maps of a fixed validation batch, logged every N epochs.

The callback is glue: it decides when to log. The fixed batch is kept by
:class:`~lightning_rollout.fixed_batch.FixedBatchKeeper`; each logging step (side pass, pictures, scalars,
sinks) is :func:`~lightning_rollout.logging_maps.log_maps`.
"""

import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import matplotlib
from torch import nn
from typing_extensions import override

from lightning_rollout.core.namespaces import callback_bases
from lightning_rollout.monitor.batch import BatchKey, FixedBatch, check_key
from lightning_rollout.core.checks import OutputKey, check_int, check_output_key
from lightning_rollout.monitor.inputs import check_stats, resolve_display_stats
from lightning_rollout.engine.api import check_model, validate_options
from lightning_rollout.monitor.keeper import SAMPLE_SELECTIONS, FixedBatchKeeper
from lightning_rollout.core.geometry import check_overrides
from lightning_rollout.monitor.step import MapLog, check_batch, log_maps
from lightning_rollout.methods import METHODS
from lightning_rollout.metrics.faithfulness import check_baseline
from lightning_rollout.sinks.base import check_image_format
from lightning_rollout.monitor.tasks import check_task


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
        methods: names of :func:`~lightning_rollout.engine.api` methods: ``rollout``, ``grad_rollout``,
            ``chefer``, ``gradcam``, ``legrad``, ``attention``.
        num_samples: how many validation samples to explain.
        every_n_epochs: log after every N-th validation epoch of ``fit``.
        head_fusion: ``mean``, ``max`` or ``min`` (rollout).
        discard_ratio: in ``[0, 1)`` (rollout and gradient rollout).
        task: ``multiclass``, ``multilabel`` (a panel per positive label, scored against that class's mask when
            masks are per class ``(B, C, H, W)``; scalar ``class_discrimination``) or ``none`` (label-free);
            see :mod:`~lightning_rollout.monitor.tasks`.
        target: what gradient methods explain: ``label``, ``prediction`` or a callable ``target(output) -> (B,)``
            (:mod:`~lightning_rollout.targets`; in LightningCLI YAML a dotted path or ``class_path``).
        max_labels: the most classes explained per sample with ``task="multilabel"``.
        output_key: where the logits (or embedding) sit in a dict/tuple output: a str key or an int index
            (as in :func:`~lightning_rollout.engine.api`); checked on the first kept samples.
        attention_heads: with method ``attention``, also log ``{tag_prefix}/attention/heads``: a row per sample,
            one overlay per head (DINO's figure).
        image_key: where the images sit in a batch; ``None``: index 0 of a tuple/list or key ``image``.
        input_transform: a callable mapping the batch's images ``(B, C, H, W)`` to the model's float input
            (e.g. uint8 → normalised float), for datasets whose conversion happens in the step or the
            model; in LightningCLI YAML a dotted import path such as ``my_package.transforms.to_input``.
            ``None``: the images are the model's input and must be float.
        label_key: where the labels sit; ``None``: index 1 or key ``label`` (optional).
        mask_key: where object masks ``(B, H, W)`` (or per class ``(B, C, H, W)``) sit; ``None``: index 2 or key
            ``mask`` (optional).
        mean: per-channel mean used to normalise the model's input, for display (1 value or one per input
            channel); ``None``: the timm model's data config when it fits the model's channels, else no
            un-normalisation.
        std: per-channel std, likewise.
        colormap: a matplotlib colour map name.
        alpha: overlay opacity in ``[0, 1]``.
        log_initial_maps: log the untrained model's maps at step 0 (needs a sanity check long enough to
            capture all ``num_samples`` before training starts).
        class_names: names shown instead of class indices; ``None``: the data module's ``class_names`` when it has
            them (e.g. :class:`~lightning_rollout.demo.ImageFolderDataModule`'s folder names), else the indices.
        filmstrip_columns: the most epochs shown in a filmstrip, and the most kept in the checkpointed state:
            once full, an interior column goes for each new one, keeping them spread over the run (first and
            last kept).
        attention_pattern, gradcam_layer, num_prefix_tokens, grid_size: as in
            :func:`~lightning_rollout.engine.api`, for custom models.
        tag_prefix: the first part of every tag.
        faithfulness_steps: steps of the deletion and insertion curves (``2 × (steps + 1)`` forwards of
            each sample per method, batched); ``0`` turns these scalars off.
        faithfulness_baseline: what deleted pixels become and inserted ones are revealed from: ``"mean"``
            (the default: each image's own per-channel mean), a number (a constant in the model's input space;
            ``0.0`` is the normalisation mean: removes shapes and colours) or ``"blur"`` (a blurred copy of the
            image: removes edges, keeps colours and coarse shapes); choose one that removes what tells your
            classes apart (see :mod:`lightning_rollout.metrics.faithfulness`).
        max_cell_size: the longer side, in pixels, of each picture in the panels and filmstrips: larger inputs
            are downscaled (area averaging) for display, smaller ones upscaled as before.
        image_format: how TensorBoard, W&B and MLflow receive the pictures: ``"jpeg"`` (at 224-px inputs and 8
            samples about 0.5 MB per method and logged epoch on photographs) or ``"png"`` (lossless, ~4x more).

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
        task: str = "multiclass",
        target: Union[Callable, str] = "label",
        max_labels: int = 2,
        output_key: OutputKey = None,
        attention_heads: bool = False,
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
        faithfulness_baseline: Union[float, str] = "mean",
        max_cell_size: int = 128,
        image_format: str = "jpeg",
        sample_selection: str = "per_class",
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
        check_int("max_cell_size", max_cell_size, 16)
        check_image_format(image_format)
        if sample_selection not in SAMPLE_SELECTIONS:
            raise ValueError(f"`sample_selection` must be one of {list(SAMPLE_SELECTIONS)}, got {sample_selection!r}")
        check_baseline("faithfulness_baseline", faithfulness_baseline)
        check_task(task, target, methods, max_labels)
        check_output_key(output_key)
        if attention_heads and "attention" not in methods:
            raise ValueError(f"`attention_heads`=True needs 'attention' in `methods`, got {methods!r}")
        for argument, key in (("image_key", image_key), ("label_key", label_key), ("mask_key", mask_key)):
            check_key(argument, key)
        check_stats("mean", mean)
        check_stats("std", std)
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
        self.task, self.target, self.max_labels, self.output_key = task, target, max_labels, output_key
        self.attention_heads = attention_heads
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
        self.max_cell_size = max_cell_size
        self.image_format = image_format

        self._display_stats: Tuple[Optional[List[float]], Optional[List[float]]] = (mean, std)
        self._warned: set = set()
        self.sample_selection = sample_selection
        self._keeper = FixedBatchKeeper(
            num_samples, image_key, label_key, mask_key, task != "none" and target == "label", sample_selection,
            self._warn_once,
        )
        self._num_classes: Optional[int] = None
        self._class_names = class_names
        self._map_log = MapLog(self.methods, filmstrip_columns)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=self.methods, tag_prefix=self.tag_prefix)

    @property
    def fixed_batch(self) -> Optional[FixedBatch]:
        """The samples explained every logged epoch (images, labels or ``None``, masks or ``None``), on the
        CPU; ``None`` until the first validation batch is seen."""
        return self._keeper.batch

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
        self._display_stats = resolve_display_stats(
            self.mean, self.std, adapter.data_config(), adapter.input_channels(), self._warn_once
        )
        num_classes = self._num_classes = self._keeper.num_classes = adapter.num_classes()
        # The data module's class names (e.g. an image folder's) when none are given.
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        self._class_names = self.class_names or (list(names) if isinstance(names, (list, tuple)) else None)
        if self.class_names is not None and isinstance(num_classes, int) and num_classes > 0:
            if len(self.class_names) != num_classes:
                raise ValueError(
                    f"`class_names` holds {len(self.class_names)} names but the model has {num_classes} classes; "
                    f"pass {num_classes} names (or none)"
                )
        self._map_log.sinks = None

    @override
    def on_validation_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self._keeper.start_epoch()

    @override
    def on_test_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self._keeper.start_epoch()

    @override
    def on_validation_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, pl_module, batch, dataloader_idx)

    @override
    def on_test_batch_end(
        self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._collect(trainer, pl_module, batch, dataloader_idx)

    @override
    def on_train_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if not self.log_initial_maps or trainer.global_step != 0:
            return
        if not trainer.is_global_zero:
            # Only a sharded model needs the other ranks, and rank 0 tells them whether to run.
            log_maps(self, trainer, pl_module, label="init")
            return
        why_not = self._keeper.not_ready_before_training()
        if why_not:
            message = f"`log_initial_maps=True` but {why_not}; the untrained model's maps are not logged"
            self._warn_once("initial", message)
        ready = why_not is None
        log_maps(self, trainer, pl_module, label="init", ready=ready)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if trainer.sanity_checking:
            self._keeper.end_sanity_check()
            return
        self._keeper.freeze(trainer.is_global_zero, trainer.world_size)
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        log_maps(self, trainer, pl_module, label=f"e{trainer.current_epoch} s{trainer.global_step}")

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self._keeper.freeze(trainer.is_global_zero, trainer.world_size)
        log_maps(self, trainer, pl_module, label=None, root=f"{self.tag_prefix}/test")

    @override
    def state_dict(self) -> Dict[str, Any]:
        return {**self._keeper.state_dict(), **self._map_log.state_dict()}

    @override
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._keeper.load_state_dict(state_dict)
        self._map_log.load_state_dict(state_dict)

    # ------------------------------------------------------------------------------------ internals

    def _collect(self, trainer: Any, pl_module: nn.Module, batch: Any, dataloader_idx: int) -> None:
        """Hands ``batch`` to the keeper and checks the first samples kept. A problem found before training
        raises; found after training began (no sanity check), it warns and the callback stays idle."""
        first = self._keeper.batch is None
        try:
            self._keeper.collect(batch, dataloader_idx, trainer.is_global_zero)
            if first and self._keeper.batch is not None:
                check_batch(self, trainer, pl_module, self._keeper.batch, self._num_classes)
        except ValueError as error:
            if trainer.state.fn != "fit" or trainer.global_step == 0:
                raise
            self._keeper.stop()
            self._warn_once("unusable", f"AttentionRolloutCallback logs nothing in this run: {error}")

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(message, UserWarning, stacklevel=2)
