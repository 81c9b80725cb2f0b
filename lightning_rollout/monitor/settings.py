"""What a logging step is asked to do: one frozen bundle, checked once, shared by every front end.

The Lightning callback and the command line's `replay` build a `MonitorSettings` from their arguments; the
logging step (`lightning_rollout.monitor.step`) reads nothing else. A bad value raises `ValueError` naming
the argument, the value and what is allowed, before any model runs.
"""

from dataclasses import dataclass, field
from typing import Callable, Optional, Tuple, Union

import matplotlib

from lightning_rollout.core.checks import check_int
from lightning_rollout.engine.checks import method_classes
from lightning_rollout.engine.options import ExplainOptions
from lightning_rollout.metrics.faithfulness import check_baseline
from lightning_rollout.monitor.batch import BatchKey, check_key
from lightning_rollout.monitor.inputs import check_stats
from lightning_rollout.monitor.keeper import SAMPLE_SELECTIONS
from lightning_rollout.monitor.scalars import check_saco_groups
from lightning_rollout.monitor.tasks import TargetSpec, check_task
from lightning_rollout.sinks.base import check_image_format


@dataclass(frozen=True)
class MonitorSettings:
    """Every setting of the logging step; the front ends' arguments of the same names (see
    `AttentionRolloutCallback` for each one's meaning).

    Attributes:
        methods: method names, each once.
        explain: the side pass's `ExplainOptions` (head fusion, discard ratio, output key, overrides).
        every_n: log after every N-th validation epoch (or evaluation).
    """

    methods: Tuple[str, ...] = ("rollout",)
    explain: ExplainOptions = field(default_factory=ExplainOptions)
    num_samples: int = 8
    every_n: int = 1
    task: str = "multiclass"
    target: TargetSpec = "label"
    max_labels: int = 2
    attention_heads: bool = False
    image_key: BatchKey = None
    input_transform: Optional[Callable] = None
    label_key: BatchKey = None
    mask_key: BatchKey = None
    mean: Optional[Tuple[float, ...]] = None
    std: Optional[Tuple[float, ...]] = None
    colormap: str = "jet"
    alpha: float = 0.5
    log_initial_maps: bool = True
    class_names: Optional[Tuple[str, ...]] = None
    filmstrip_columns: int = 10
    tag_prefix: str = "attention"
    faithfulness_steps: int = 8
    faithfulness_baseline: Union[float, str] = "mean"
    saco_groups: int = 10
    max_cell_size: int = 128
    image_format: str = "jpeg"
    sample_selection: str = "per_class"

    def __post_init__(self) -> None:
        methods = self.methods
        method_classes(methods)
        if not isinstance(self.explain, ExplainOptions):
            raise ValueError(f"`explain` must be an ExplainOptions, got {self.explain!r}")
        check_int("num_samples", self.num_samples, 1)
        check_int("every_n", self.every_n, 1)
        check_int("filmstrip_columns", self.filmstrip_columns, 1)
        check_int("faithfulness_steps", self.faithfulness_steps, 0)
        check_int("max_cell_size", self.max_cell_size, 16)
        check_image_format(self.image_format)
        if self.sample_selection not in SAMPLE_SELECTIONS:
            raise ValueError(
                f"`sample_selection` must be one of {list(SAMPLE_SELECTIONS)}, got {self.sample_selection!r}"
            )
        check_baseline("faithfulness_baseline", self.faithfulness_baseline)
        check_saco_groups("saco_groups", self.saco_groups)
        check_task(self.task, self.target, methods, self.max_labels)
        if self.attention_heads and "attention" not in methods:
            raise ValueError(f"`attention_heads`=True needs 'attention' in `methods`, got {list(methods)!r}")
        for argument in ("image_key", "label_key", "mask_key"):
            check_key(argument, getattr(self, argument))
        check_stats("mean", self.mean)
        check_stats("std", self.std)
        if self.colormap not in matplotlib.colormaps:
            raise ValueError(
                f"`colormap` must be a name in matplotlib.colormaps (e.g. 'jet', 'inferno'), got {self.colormap!r}"
            )
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}")
        names = self.class_names
        if names is not None and (not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names)):
            raise ValueError(f"`class_names` must be None or a list of str, got {names!r}")
        if not isinstance(self.tag_prefix, str) or not self.tag_prefix.strip("/"):
            raise ValueError(f"`tag_prefix` must be a non-empty str, got {self.tag_prefix!r}")
        if self.input_transform is not None and not callable(self.input_transform):
            raise ValueError(
                f"`input_transform` must be None or a callable (images -> model input), got {self.input_transform!r}"
            )
        for name in ("methods", "mean", "std", "class_names"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        object.__setattr__(self, "tag_prefix", self.tag_prefix.strip("/"))

    @property
    def needs_labels(self) -> bool:
        """Whether the kept batch must carry labels (a class task explaining the true label)."""
        return self.task != "none" and self.target == "label"
