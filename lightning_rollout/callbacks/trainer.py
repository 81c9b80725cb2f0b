"""`AttentionRolloutTrainerCallback`: explanation maps of a fixed evaluation batch, logged from a Hugging Face
`transformers.Trainer` after every N-th evaluation.

The sibling of the Lightning `AttentionRolloutCallback`: glue that says when the shared logging step
(`lightning_rollout.monitor.step.MapLogger`) runs and where it logs (`trainer_sinks`). Only this module
imports `transformers`; the package exposes the class lazily.
"""

import os
import re
from contextlib import nullcontext
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, cast

import torch
from torch import Tensor, nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lightning_rollout.callbacks.trainer_sinks import Outlet, log_scalars_to, trainer_outlets
from lightning_rollout.core.checks import check_int
from lightning_rollout.core.distributed import is_sharded
from lightning_rollout.core.hooks import preserved_rng
from lightning_rollout.monitor.arguments import setting_value, settings_from
from lightning_rollout.monitor.batch import BatchKey, FixedBatch
from lightning_rollout.monitor.history import FilmstripHistory
from lightning_rollout.monitor.side_pass import Runtime
from lightning_rollout.monitor.step import MapLogger

MAX_SCAN_BATCHES = 64
"""The most batches of the evaluation loader read to choose the fixed samples (once per run)."""


class AttentionRolloutTrainerCallback(TrainerCallback):
    """Logs explanation maps of a fixed evaluation batch after every ``every_n_evaluations``-th evaluation.

    At the first evaluation the callback chooses ``num_samples`` samples of ``eval_dataloader`` (spread over
    the classes, from its first `MAX_SCAN_BATCHES` batches at most, the global RNG streams left as
    they were) and explains them in ``on_evaluate`` (gradients are on there; Hugging Face models switch to
    eager attention for the pass and back). Per method it logs at ``state.global_step`` what the Lightning
    callback logs: ``{tag_prefix}/{method}/samples``, ``.../filmstrip`` (a column per logged evaluation;
    ``init`` at step 0, e.g. with ``eval_on_start=True``), and the scalars ``.../entropy``, with object
    masks in the batches ``.../energy`` and ``.../pointing_game``, and ``.../deletion_auc`` /
    ``.../insertion_auc``. Where they go follows ``args.report_to`` (see
    `trainer_sinks`): TensorBoard in the run's own folder, W&B at
    ``train/global_step``, MLflow in the active run; with ``"none"`` PNG files under ``output_dir``.

    With ``log_initial_maps`` the untrained model's maps need ``eval_on_start=True`` (an evaluation at step 0).
    Under multi-process training the main process explains and logs alone; a sharded model (FSDP2,
    DeepSpeed ZeRO-3; not FSDP1, whose root wrapper a callback never receives) runs the pass on every
    process, on the main process's samples. The kept samples,
    the filmstrip and the evaluation count are saved in each checkpoint folder (``on_save``) and read back
    when training resumes from ``<output_dir>/checkpoint-<step>``. A failing logging step warns and training
    goes on.

    Args:
        methods: method names (``rollout``, ``grad_rollout``, ``chefer``, ``gradcam``, ``legrad``, ``attention``).
        every_n_evaluations: log after every N-th evaluation (each step evaluated counts once).
        image_key: where the images sit in an evaluation batch (the collator's dict).
        label_key: where the labels sit; ``None``: key ``label`` (optional).
        **settings: every other argument of `AttentionRolloutCallback`, same names
            and meaning (``num_samples``, ``task``, ``target``, ``head_fusion``, ``discard_ratio``,
            ``faithfulness_steps``, ``saco_groups``, ``filmstrip_columns``, ``max_cell_size``, ``image_format``,
            ``attention_heads``, ``mask_key``, ``mean``/``std``, ``class_names``, ...: any field of
            `MonitorSettings` or
            `ExplainOptions`). ``class_names`` default to the
            model's ``config.id2label`` when it names the classes.

    Raises:
        TypeError: on an argument that is no setting (in ``__init__``).
        ValueError: on a bad value (in ``__init__``); on a model that does not fit the settings (in
            ``on_train_begin``, before the first step); on evaluation batches that do not fit (at the first
            evaluation when it is at step 0; later it warns and the callback stays idle).

    Example:
        ```python
        trainer = Trainer(model, args, train_dataset=train, eval_dataset=val,
                          callbacks=[AttentionRolloutTrainerCallback(methods=["rollout", "grad_rollout"])])
        ```
    """

    def __init__(
        self,
        methods: Sequence[str] = ("rollout",),
        every_n_evaluations: int = 1,
        image_key: BatchKey = "pixel_values",
        label_key: BatchKey = "labels",
        **settings: Any,
    ) -> None:
        check_int("every_n_evaluations", every_n_evaluations, 1)
        if "every_n" in settings:
            raise TypeError("unknown argument 'every_n'; this callback calls it `every_n_evaluations`")
        self.settings = settings_from(
            dict(settings, methods=methods, every_n=every_n_evaluations, image_key=image_key, label_key=label_key)
        )
        self.maps = MapLogger(self.settings, type(self).__name__)
        self.evaluations = 0  # steps after step 0 evaluated so far (checkpointed)
        self._asked_initial_maps = settings.get("log_initial_maps", False)  # said explicitly: say why not
        self._last_evaluated: Optional[int] = None
        self._checked: Optional[nn.Module] = None  # the model `setup` checked
        self._outlets: Optional[List[Outlet]] = None  # made at the first logging step, closed at train end

    def __getattr__(self, name: str) -> Any:
        """Each argument read back by its name (`callback.num_samples`), from the checked settings."""
        return setting_value(self.__dict__.get("settings"), name, self)

    @property
    def fixed_batch(self) -> Optional[FixedBatch]:
        """The samples explained at every logged evaluation, on the CPU; `None` before the first evaluation."""
        return self.maps.keeper.batch

    @property
    def history(self) -> FilmstripHistory:
        """The filmstrip columns logged so far, per method (read them with `history.columns(method)`)."""
        return self.maps.history

    @property
    def state_file(self) -> str:
        """The file name of this callback's state in a checkpoint folder (one per `tag_prefix` and methods)."""
        name = re.sub(r"[^A-Za-z0-9._-]", "_", f"{self.settings.tag_prefix}-{'+'.join(self.settings.methods)}")
        return f"lightning_rollout-{name}.pt"

    # ----------------------------------------------------------------------------------------- hooks

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        """Checks the model before the first step; on a resumed run, reads the state saved in the checkpoint."""
        self._setup(kwargs["model"])
        self._close()
        if state.global_step > 0:
            self._load(_checkpoint_folder(args, state.global_step), state.global_step)
        elif self._asked_initial_maps and not args.eval_on_start and state.is_world_process_zero:
            self.maps.warn(
                "initial",
                "`log_initial_maps=True` needs `eval_on_start=True` in the TrainingArguments (the "
                "untrained model's maps are those of the evaluation at step 0); they are not logged",
            )

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        step = state.global_step
        if self._last_evaluated == step:  # a further evaluation set at the same step
            return
        self._last_evaluated = step
        model = kwargs["model"]
        self._setup(model)
        if not self.maps.keeper.frozen:
            self._choose_samples(args, state, model, kwargs.get("eval_dataloader"))
        if step == 0:  # the untrained model (`eval_on_start`), outside the count, as Lightning's initial maps
            if self.settings.log_initial_maps:
                self.log_maps(args, state, model, "init")
            return
        self.evaluations += 1
        if self.evaluations % self.settings.every_n == 0:
            self.log_maps(args, state, model, f"e{round(state.epoch or 0, 2):g} s{step}")

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = _checkpoint_folder(args, state.global_step)
        if not os.path.isdir(folder):
            self.maps.warn("no-checkpoint", f"found no checkpoint folder {folder}; this callback's state is not saved")
            return
        saved = {"maps": self.maps.state_dict(), "evaluations": self.evaluations}
        torch.save(saved, os.path.join(folder, self.state_file))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs):
        self._close()

    # ------------------------------------------------------------------------------------- the step

    def log_maps(self, args: TrainingArguments, state: TrainerState, model: nn.Module, label: Optional[str]) -> None:
        """Explains the fixed batch with `model` and logs pictures and scalars at `state.global_step`; `label`
        names the filmstrip column (`None`: no filmstrip). Every process must call it: a sharded model runs the
        pass on all of them, on the main process's samples; otherwise the main process works alone."""
        step, root, is_zero = state.global_step, self.settings.tag_prefix, state.is_world_process_zero
        ready = False
        if is_zero:
            ready = self.maps.due(root, step)
            if ready and self._outlets is None:
                self._outlets = trainer_outlets(args, root, self.settings.image_format, self.maps.warn)
        if not self.maps.takes_part(is_zero, ready, is_sharded(model) and args.world_size > 1):
            return
        outlets = self._outlets or []  # made on the main process only
        sinks = [outlet.images for outlet in outlets]
        self.maps.log(_runtime(args, state, model), model, sinks, log_scalars_to(outlets), step, label, root)

    def _setup(self, model: nn.Module) -> None:
        if self._checked is not model:
            self.maps.setup(model, _class_names(model))
            self._checked = model

    def _choose_samples(self, args: TrainingArguments, state: TrainerState, model: nn.Module, loader: Any) -> None:
        """The main process reads the evaluation loader until the samples are chosen; the keeper then freezes.
        A failure at step 0 raises; later (training has begun) it warns and the callback stays idle."""
        keeper, is_zero = self.maps.keeper, state.is_world_process_zero
        try:
            if is_zero and loader is not None:
                keeper.start_epoch()
                # Reading a loader draws from the global RNGs (the base seed; a dataset's own draws).
                with preserved_rng(torch.device("cpu")):
                    for index, batch in enumerate(getattr(loader, "base_dataloader", loader)):
                        first = keeper.batch is None
                        keeper.collect(batch, 0, is_zero)
                        if first and keeper.batch is not None:
                            trial = None if is_sharded(model) else model  # a sharded model needs every process
                            self.maps.check_first_batch(_runtime(args, state, model), trial)
                        if self._chosen() or index + 1 >= MAX_SCAN_BATCHES:
                            break
            keeper.freeze(is_zero, args.world_size)
        except Exception as error:  # noqa: BLE001  (once training has begun, a failure never ends the run)
            if state.global_step == 0:
                raise
            self.maps.stop(error)

    def _chosen(self) -> bool:
        """Whether the kept samples are complete: `num_samples` of them, over as many classes as there can be."""
        settings, keeper = self.settings, self.maps.keeper
        if keeper.batch is None or len(keeper.batch) < settings.num_samples:
            return False
        classes = keeper.classes()
        if settings.sample_selection == "first" or classes == [None]:
            return True
        return len(classes) >= min(settings.num_samples, keeper.num_classes or settings.num_samples)

    def _load(self, folder: str, step: int) -> None:
        path = os.path.join(folder, self.state_file)
        if not os.path.isfile(path):
            self.maps.warn(
                "no-state",
                f"training resumed at step {step} but {path} does not exist; the samples are chosen "
                "anew at the next evaluation and the filmstrip starts over",
            )
            return
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self.maps.load_state_dict(saved["maps"])
        self.evaluations = int(saved.get("evaluations", 0))
        self._last_evaluated = step

    def _close(self) -> None:
        for outlet in self._outlets or []:
            outlet.close()
        self._outlets = None


def _class_names(model: nn.Module) -> Optional[List[str]]:
    """The class names of a Hugging Face model's ``config.id2label``, unless they are the default ``LABEL_i``."""
    id2label: Dict[Any, str] = getattr(getattr(model, "config", None), "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), i))) for i in range(len(id2label))]
    return None if not names or names == [f"LABEL_{i}" for i in range(len(names))] else names


def _checkpoint_folder(args: TrainingArguments, step: int) -> str:
    """Where the Trainer saves the checkpoint of ``step``."""
    # `output_dir` is typed optional, but `TrainingArguments` sets its default in `__post_init__`.
    return os.path.join(cast(str, args.output_dir), f"checkpoint-{step}")


def _runtime(args: TrainingArguments, state: TrainerState, model: nn.Module) -> Runtime:
    """What the Trainer lends the logging step: the model's device, autocast as ``bf16``/``fp16`` ask, a cast of
    the input to the model's half dtype (a model loaded in bf16), the rank."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else args.device
    dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
    context = nullcontext if dtype is None else partial(torch.autocast, device.type, dtype=dtype)
    weights = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    convert = partial(_cast, dtype=weights) if weights in (torch.float16, torch.bfloat16) else _same
    return Runtime(device, convert, context, state.is_world_process_zero, args.world_size)


def _cast(images: Tensor, dtype: torch.dtype) -> Tensor:
    return images.to(dtype)


def _same(images: Tensor) -> Tensor:
    return images
