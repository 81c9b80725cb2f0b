"""`AttentionRolloutCallback`: explanation maps of a fixed validation batch, logged every N epochs.

The callback is glue: it decides when to log and where. Keeping the samples, the side pass, the pictures
and the scalars are the shared logging step (`lightning_rollout.monitor.step.MapLogger`).
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn
from typing_extensions import override

from lightning_rollout.callbacks.loggers import image_sinks, metrics_logger, runtime_of
from lightning_rollout.core.checks import check_int
from lightning_rollout.core.distributed import is_sharded
from lightning_rollout.core.namespaces import callback_bases
from lightning_rollout.core.outputs import OutputKey
from lightning_rollout.monitor.arguments import setting_value, settings_from
from lightning_rollout.monitor.batch import BatchKey, FixedBatch
from lightning_rollout.monitor.history import FilmstripHistory
from lightning_rollout.monitor.step import MapLogger
from lightning_rollout.sinks.base import ImageSink


class AttentionRolloutCallback(*callback_bases()):  # type: ignore[misc]  # one base per Lightning namespace, computed
    """Logs explanation maps of a fixed validation batch to TensorBoard every ``every_n_epochs``.

    The first ``num_samples`` validation samples (from batches Lightning already loads: training is unchanged)
    are explained after every ``every_n_epochs``-th validation epoch. Per method, at ``trainer.global_step``:
    pictures ``{tag_prefix}/{method}/samples`` (input beside overlay, captioned with label, prediction and
    confidence) and ``.../filmstrip`` (a row per sample, a column per logged epoch); scalars ``.../entropy``,
    with object masks ``.../energy``, ``.../pointing_game`` and ``{tag_prefix}/mask_area``, and the
    faithfulness scalars ``.../deletion_auc`` ↓, ``.../insertion_auc`` ↑ (``faithfulness_steps``) and
    ``.../saco`` ↑ (``saco_groups``; `saco`), masks or not.

    Works with ``Trainer`` of ``lightning.pytorch`` and ``pytorch_lightning``, in ``fit``, ``validate`` and
    ``test``, under DDP (rank 0 computes and logs), with sharded models (FSDP, DeepSpeed ZeRO-3: every rank
    joins the side pass on rank 0's batch) and ``torch.compile``-d models (run eagerly in the side pass). With
    a logger other than TensorBoard the pictures go to PNG files under its log directory.

    Args:
        methods: names of `api` methods: ``rollout``, ``grad_rollout``,
            ``chefer``, ``gradcam``, ``legrad``, ``attention``.
        num_samples: how many validation samples to explain.
        every_n_epochs: log after every N-th validation epoch of ``fit``.
        head_fusion: ``mean``, ``max`` or ``min`` (rollout).
        discard_ratio: in ``[0, 1)`` (rollout and gradient rollout).
        task: ``multiclass``, ``multilabel`` (a panel per positive label, scored against that class's mask when
            masks are per class ``(B, C, H, W)``; scalar ``class_discrimination``) or ``none`` (label-free);
            see `tasks`.
        target: what gradient methods explain: ``label``, ``prediction`` or a callable ``target(output) -> (B,)``
            (`targets`; in LightningCLI YAML a dotted path or ``class_path``).
        max_labels: the most classes explained per sample with ``task="multilabel"``.
        output_key: where the logits (or embedding) sit in a dict/tuple output: a str key or an int index.
        attention_heads: with method ``attention``, also log ``{tag_prefix}/attention/heads`` (one per head).
        image_key: where the images sit in a batch; ``None``: index 0 of a tuple/list or key ``image``.
        input_transform: a callable mapping the batch's images ``(B, C, H, W)`` to the model's float input (e.g.
            uint8 → normalised float; in YAML a dotted import path); ``None``: the images are the float input.
        label_key: where the labels sit; ``None``: index 1 or key ``label`` (optional).
        mask_key: where object masks ``(B, H, W)`` (or ``(B, C, H, W)``) sit; ``None``: index 2 or key ``mask``.
        mean: per-channel normalisation mean of the model's input, for display (1 value or one per channel);
            ``None``: the timm model's data config when it fits, else no un-normalisation.
        std: per-channel std, likewise.
        colormap: a matplotlib colour map name.
        alpha: overlay opacity in ``[0, 1]``.
        log_initial_maps: log the untrained model's maps at step 0 (needs a sanity check of ``num_samples``).
        class_names: names shown instead of class indices; ``None``: the data module's ``class_names``, if any.
        filmstrip_columns: the most epochs a filmstrip shows and the checkpoint keeps (first and last kept).
        attention_pattern: the modules whose output is the post-softmax attention, as in `explain` (custom
            models).
        gradcam_layer: Grad-CAM's layer, as in `explain`.
        num_prefix_tokens: override of the number of leading non-patch tokens, as in `explain`.
        grid_size: override of the patch grid ``(grid_h, grid_w)``, as in `explain`.
        tag_prefix: the first part of every tag.
        faithfulness_steps: steps of the deletion and insertion curves (``2 × (steps + 1)`` batched forwards of
            each sample per method); ``0`` turns these scalars off.
        faithfulness_baseline: what deleted pixels become and inserted ones are revealed from: ``"mean"``
            (each image's per-channel mean), a number (a constant in the model's input space; ``0.0`` is the
            normalisation mean) or ``"blur"`` (see `lightning_rollout.metrics.faithfulness`).
        saco_groups: ``K``, the pixel groups of SaCo (Wu et al., CVPR 2024): whether the amounts of salience
            match the prediction's drops when each group alone is replaced by the image's mean (``K`` perturbed
            copies of each sample per method, in one forward); ``0`` turns ``saco`` off.
        max_cell_size: the longer side, in pixels, of each picture in the panels and filmstrips.
        image_format: ``"jpeg"`` (~0.5 MB per method and epoch at 224 px, 8 samples) or ``"png"`` (~4x more).
        sample_selection: ``"per_class"`` (the kept samples spread over the classes) or ``"first"``.

    The fixed batch comes from the sanity check (else the first validation epoch) and never changes.

    Raises:
        ValueError: on any bad argument (in ``__init__``); a model whose attention modules, token geometry
            or input channels do not fit the arguments (in ``setup``); a validation batch that is not the
            model's float input and no ``input_transform`` (when the first batch is kept).

    Example:
        ```python
        trainer = Trainer(callbacks=[AttentionRolloutCallback(methods=["rollout", "grad_rollout"])])
        ```
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
        saco_groups: int = 10,
        max_cell_size: int = 128,
        image_format: str = "jpeg",
        sample_selection: str = "per_class",
    ) -> None:
        check_int("every_n_epochs", every_n_epochs, 1)  # the settings' `every_n`, named as this callback names it
        arguments = dict(locals())  # every argument, by the name MonitorSettings and ExplainOptions give it
        del arguments["self"], arguments["every_n_epochs"]
        self.settings = settings_from({**arguments, "every_n": every_n_epochs})
        self.maps = MapLogger(self.settings, type(self).__name__)
        self._sinks: Optional[List[ImageSink]] = None  # one per logger, made at the first logging step

    def __getattr__(self, name: str) -> Any:
        """Each argument read back by its name (`callback.num_samples`), from the checked settings."""
        return setting_value(self.__dict__.get("settings"), name, self)

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(methods=list(self.settings.methods), tag_prefix=self.settings.tag_prefix)

    @property
    def fixed_batch(self) -> Optional[FixedBatch]:
        """The samples explained every logged epoch (images, labels or `None`, masks or `None`), on the CPU;
        `None` until the first validation batch is seen."""
        return self.maps.keeper.batch

    @property
    def history(self) -> FilmstripHistory:
        """The filmstrip columns logged so far, per method (read them with `history.columns(method)`)."""
        return self.maps.history

    # ----------------------------------------------------------------------------------------- hooks

    @override
    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        """Checks the model before anything runs: attention layers, Grad-CAM layer, token geometry, and the
        display arguments against the model's input channels and classes."""
        names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        self.maps.setup(pl_module, names)
        self._sinks = None

    @override
    def on_validation_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self.maps.keeper.start_epoch()

    @override
    def on_test_epoch_start(self, trainer: Any, pl_module: nn.Module) -> None:
        self.maps.keeper.start_epoch()

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
        if not self.settings.log_initial_maps or trainer.global_step != 0:
            return
        if not trainer.is_global_zero:
            # Only a sharded model needs the other ranks, and rank 0 tells them whether to run.
            self.log_maps(trainer, pl_module, label="init")
            return
        why_not = self.maps.keeper.not_ready_before_training()
        if why_not:
            message = f"`log_initial_maps=True` but {why_not}; the untrained model's maps are not logged"
            self.maps.warn("initial", message)
        self.log_maps(trainer, pl_module, label="init", ready=why_not is None)

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        if trainer.sanity_checking:
            self.maps.keeper.end_sanity_check()
            return
        self.maps.keeper.freeze(trainer.is_global_zero, trainer.world_size)
        if trainer.state.fn == "fit" and (trainer.current_epoch + 1) % self.settings.every_n != 0:
            return
        self.log_maps(trainer, pl_module, label=f"e{trainer.current_epoch} s{trainer.global_step}")

    @override
    def on_test_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self.maps.keeper.freeze(trainer.is_global_zero, trainer.world_size)
        self.log_maps(trainer, pl_module, label=None, root=f"{self.settings.tag_prefix}/test")

    @override
    def state_dict(self) -> Dict[str, Any]:
        return self.maps.state_dict()

    @override
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self.maps.load_state_dict(state_dict)

    # ------------------------------------------------------------------------------------- the step

    def log_maps(
        self,
        trainer: Any,
        pl_module: nn.Module,
        label: Optional[str],
        step: Optional[int] = None,
        root: Optional[str] = None,
        ready: bool = True,
    ) -> None:
        """Explains the fixed batch with `pl_module` and logs pictures and scalars to `trainer`'s loggers.

        Every rank must call this: on a sharded model all ranks run the side pass on rank 0's batch (sent to
        them once), only rank 0 renders and logs; otherwise rank 0 works alone.

        Args:
            trainer: lends its loggers, precision plugin, strategy and rank.
            pl_module: the model to explain.
            label: the filmstrip column's name (e.g. `"e3 s120"`); `None` (test runs) logs no filmstrip.
            step: the step to log at; `None`: `trainer.global_step`.
            root: the first part of the tags; `None`: `tag_prefix`.
            ready: rank 0's decision to log this time; `False` skips it (on every rank).
        """
        step = trainer.global_step if step is None else step
        root = self.settings.tag_prefix if root is None else root
        if trainer.is_global_zero:
            ready = ready and self.maps.due(root, step)
            if ready and self._sinks is None:
                self._sinks = image_sinks(trainer, self.settings.tag_prefix, self.settings.image_format, self.maps.warn)
            ready = ready and bool(self._sinks)
        # A sharded model runs through the strategy's wrapper (an FSDP1 root or DeepSpeed engine gathers the
        # parameters it holds); a data parallel one runs unwrapped, so that DDP's forward never syncs.
        wrapper = trainer.strategy.model
        sharded = wrapper is not None and is_sharded(wrapper)
        if not self.maps.takes_part(trainer.is_global_zero, ready, sharded and trainer.world_size > 1):
            return
        model = wrapper if sharded else pl_module
        sinks = self._sinks or []  # made on rank 0 only
        self.maps.log(runtime_of(trainer, pl_module), model, sinks, metrics_logger(trainer), step, label, root)

    def _collect(self, trainer: Any, pl_module: nn.Module, batch: Any, dataloader_idx: int) -> None:
        """Hands `batch` to the keeper and checks the first samples kept. A failure before training (the sanity
        check) raises; after training began (no sanity check) any failure, out-of-memory included, warns
        with its cause and the callback stays idle."""
        keeper = self.maps.keeper
        first = keeper.batch is None
        try:
            keeper.collect(batch, dataloader_idx, trainer.is_global_zero)
            if first and keeper.batch is not None:
                # The trial needs a logger, and an unsharded model (otherwise every rank would have to join).
                trial = bool(trainer.loggers) and not is_sharded(trainer.strategy.model or pl_module)
                self.maps.check_first_batch(runtime_of(trainer, pl_module), pl_module if trial else None)
        except Exception as error:  # noqa: BLE001  (once training has begun, a failure never ends the run)
            if trainer.state.fn != "fit" or trainer.global_step == 0:
                raise  # before training (the sanity check), or outside fit: a clear error costs no training
            self.maps.stop(error)
