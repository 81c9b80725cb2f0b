"""The explain-option bundle: every setting of a side pass except the model, the images and the target.

`explain`, `explain_many`, the callbacks, the evaluation table and the command line all carry their
settings as one frozen `ExplainOptions`, checked once when it is made.
"""

from dataclasses import dataclass, field, fields
from typing import Any, Dict, Mapping, Optional, Tuple

from torch import nn

from lightning_rollout.core.checks import check_int
from lightning_rollout.core.geometry import check_overrides
from lightning_rollout.core.outputs import OutputKey, check_output_key
from lightning_rollout.methods import HEAD_FUSIONS, check_method_options
from lightning_rollout.models.base import ModelAdapter
from lightning_rollout.models.overrides import resolve_adapter


@dataclass(frozen=True)
class ExplainOptions:
    """How a side pass explains a batch; checked when made.

    Attributes:
        head_fusion: `"mean"`, `"max"` or `"min"` over heads; used by `"rollout"` and `"attention"`.
        discard_ratio: fraction in `[0, 1)` of each layer's smallest fused entries zeroed per sample (never
            entry `[0, 0]`); used by `"rollout"` and `"grad_rollout"`.
        output_key: which part of the model's output is explained: `None` (a tensor, `.logits` or a
            `'logits'` entry), a str key of a dict / `ModelOutput` or an int index of a tuple.
        attention_pattern: `None` (the adapter's attention layers) or an fnmatch pattern of the modules whose
            output is the post-softmax attention `(B, heads, N, N)`.
        gradcam_layer: `None` (the adapter's layer) or an fnmatch pattern; the last matching module's
            `(B, N, C)` or `(B, C, h, w)` output is Grad-CAM's activation.
        num_prefix_tokens: override of the number of leading non-patch tokens.
        grid_size: override of the patch grid `(grid_h, grid_w)`.
        method_options: options of individual methods (e.g. `{"legrad_first_layer": -2}`); read back with
            every registered method's defaults filled in by `resolved_method_options`.
        chunk_size: samples per side pass (the maps of the chunks are joined); `None`: the whole batch of
            images at once, video clips one at a time (one VideoMAE-B clip's attention is 1.4 GB over its
            12 layers, all kept for a gradient method's backward).

    Raises:
        ValueError: naming the argument, its value and what is allowed.
        TypeError: for a method option no registered method declares.
    """

    head_fusion: str = "mean"
    discard_ratio: float = 0.9
    output_key: OutputKey = None
    attention_pattern: Optional[str] = None
    gradcam_layer: Optional[str] = None
    num_prefix_tokens: Optional[int] = None
    grid_size: Optional[Tuple[int, int]] = None
    method_options: Mapping[str, Any] = field(default_factory=dict)
    chunk_size: Optional[int] = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            check_int("chunk_size", self.chunk_size, 1)
        if self.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"`head_fusion` must be one of {list(HEAD_FUSIONS)}, got {self.head_fusion!r}")
        ratio = self.discard_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio < 1:
            raise ValueError(f"`discard_ratio` must be a number in [0, 1), got {ratio!r}")
        check_output_key(self.output_key)
        check_overrides(self.num_prefix_tokens, self.grid_size)
        for argument in ("attention_pattern", "gradcam_layer"):
            pattern = getattr(self, argument)
            if pattern is not None and (not isinstance(pattern, str) or not pattern):
                raise ValueError(
                    f"`{argument}` must be None (the model's adapter decides) or a non-empty str, got {pattern!r}"
                )
        if not isinstance(self.method_options, Mapping):
            raise ValueError(
                f"`method_options` must be a mapping of option names to values, got {self.method_options!r}"
            )
        check_method_options(self.method_options)
        if self.grid_size is not None:
            object.__setattr__(self, "grid_size", (int(self.grid_size[0]), int(self.grid_size[1])))
        object.__setattr__(self, "method_options", dict(self.method_options))

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ExplainOptions":
        """The options from keyword arguments as `explain` takes them: the bundle's fields by name, every other
        keyword a method option."""
        names = {f.name for f in fields(cls)} - {"method_options"}
        method_options = {key: value for key, value in kwargs.items() if key not in names}
        return cls(**{key: value for key, value in kwargs.items() if key in names}, method_options=method_options)

    def resolved_method_options(self) -> Dict[str, Any]:
        """Every registered method's options, the given ones over the defaults."""
        return check_method_options(self.method_options)

    def resolve_adapter(self, model: nn.Module) -> ModelAdapter:
        """The adapter the side pass uses for `model`: its family's, with this bundle's overrides on top."""
        return resolve_adapter(
            model, self.attention_pattern, self.gradcam_layer, self.num_prefix_tokens, self.grid_size
        )

    def chunk_for(self, video: bool) -> Optional[int]:
        """Samples per side pass for a batch of images (`video=False`) or clips; `None`: the whole batch."""
        return self.chunk_size if self.chunk_size is not None or not video else 1
