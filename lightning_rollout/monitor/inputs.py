"""What the pictures show: the model's input for the kept images, and the mean/std that un-normalise it."""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from torch import Tensor

from lightning_rollout.monitor.notices import Warn

Stats = Tuple[Optional[Sequence[float]], Optional[Sequence[float]]]


def check_stats(argument: str, value: Optional[Sequence[float]]) -> None:
    """Raises ``ValueError`` unless ``value`` is ``None`` or 1 or 3 numbers (all > 0 for ``std``)."""
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


def resolve_display_stats(
    mean: Optional[Sequence[float]],
    std: Optional[Sequence[float]],
    config: Dict[str, Any],
    channels: Optional[int],
    warn: Warn,
) -> Stats:
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
    for argument, value in (("mean", mean), ("std", std)):
        if value is not None and channels is not None and len(value) not in (1, channels):
            raise ValueError(
                f"`{argument}` holds {len(value)} values but the model takes {channels}-channel input; "
                f"pass 1 value or {channels}, e.g. `{argument}`={[0.5] * channels}"
            )
    if mean is not None and std is not None:
        return mean, std
    stats: List[Optional[List[float]]] = []
    for argument, given in (("mean", mean), ("std", std)):
        value = given if given is not None else config.get(argument)
        if value is not None and given is None and channels is not None and len(value) not in (1, channels):
            # timm keeps the 3-channel statistics of the pretrained config for an `in_chans=1` model.
            if len(set(value)) == 1:
                value = [value[0]]
            else:
                warn(
                    f"stats-{argument}",
                    f"the timm data config's `{argument}`={tuple(value)} does not fit the model's {channels}-"
                    f"channel input; pictures are not un-normalised: pass `mean` and `std` to fix that",
                )
                value = None
        stats.append(None if value is None else list(value))
    return stats[0], stats[1]


def model_input(images: Tensor, input_transform: Optional[Callable], stats: Stats) -> Tensor:
    """The model's input for the kept images: ``input_transform(images)`` or the images themselves.

    Raises:
        ValueError: naming ``input_transform``, when the result is not a float ``(B, C, H, W)`` tensor (clips:
            ``(B, T, C, H, W)``) or its channels do not fit the display statistics.
    """
    inputs = images if input_transform is None else input_transform(images)
    source = "the validation images" if input_transform is None else "`input_transform`'s output"
    if not isinstance(inputs, Tensor) or inputs.dim() not in (4, 5) or not inputs.is_floating_point():
        got = f"a {inputs.dim()}-D {inputs.dtype} tensor" if isinstance(inputs, Tensor) else type(inputs).__name__
        raise ValueError(
            f"{source} must be the model's float input (B, C, H, W), got {got}; pass `input_transform`, a "
            "callable mapping the batch's images to the model's input (in LightningCLI YAML a dotted import "
            "path, e.g. `my_package.transforms.to_float`)"
        )
    channels = inputs.shape[-3]
    for argument, value in zip(("mean", "std"), stats):
        if value is not None and len(value) not in (1, channels):
            raise ValueError(
                f"`{argument}` holds {len(value)} values but {source} has {channels} channels; pass 1 value "
                f"or {channels}"
            )
    if channels not in (1, 3):
        raise ValueError(f"{source} has {channels} channels; pictures show 1- or 3-channel inputs")
    return inputs
