"""What a model returns and what is explained of it: the output key, the target, and the logits."""

from collections.abc import Mapping
from typing import Any, Callable, Optional, Union

from torch import Tensor

ClassTarget = Union[None, int, Tensor]
"""A class to score: ``None`` (the prediction), an int, or a LongTensor ``(B,)``."""

Target = Union[None, int, Tensor, Callable[[Tensor], Tensor]]
"""What gradient methods explain: a `ClassTarget`, or a callable ``target(output) -> (B,)`` float
scores of the model's selected output (after ``output_key``), one differentiable score per sample."""

OutputKey = Union[None, str, int]
"""Which part of a model's output is explained: ``None`` (a tensor, ``.logits`` or ``'logits'``), a key
(dict or ``ModelOutput``) or an index (tuple, list or ``ModelOutput``)."""


def check_output_key(output_key: OutputKey) -> None:
    """Raises unless ``output_key`` is ``None``, a str or an int."""
    if output_key is not None and (isinstance(output_key, bool) or not isinstance(output_key, (str, int))):
        raise ValueError(f"`output_key` must be None (the logits), a str key or an int index, got {output_key!r}")


def _keys(output: Any) -> Optional[list]:
    if isinstance(output, Mapping):
        return list(output.keys())
    if isinstance(output, (tuple, list)):
        return list(range(len(output)))
    return None


def select_output(output: Any, output_key: OutputKey = None) -> Tensor:
    """The part of a model's output that is explained.

    Args:
        output: what the model returned.
        output_key: ``None``: the output itself when it is a tensor, else its ``.logits`` (Hugging Face
            ``ModelOutput``) or ``"logits"`` entry; a str: that entry of a dict / ``ModelOutput`` (or that
            attribute); an int: that element of a tuple / list / ``ModelOutput``.

    Raises:
        ValueError: naming ``output_key`` and the keys the output has, when the selection is not a tensor.
    """
    check_output_key(output_key)
    if output_key is None:
        return logits_of(output)
    selected = None
    if isinstance(output_key, str):
        if isinstance(output, Mapping):
            selected = output.get(output_key)
        else:
            selected = getattr(output, output_key, None)
    elif isinstance(output, Mapping) and hasattr(output, "to_tuple"):  # ModelOutput: index over its set fields
        fields = output.to_tuple()
        selected = fields[output_key] if -len(fields) <= output_key < len(fields) else None
    elif isinstance(output, (tuple, list)) and -len(output) <= output_key < len(output):
        selected = output[output_key]
    if isinstance(selected, Tensor):
        return selected
    keys = _keys(output)
    raise ValueError(
        f"`output_key`={output_key!r} selects no tensor of the model's {type(output).__name__} output"
        + (f"; its keys are {keys}" if keys is not None else "; it is not a dict, tuple or ModelOutput")
    )


def logits_of(output: Any) -> Tensor:
    """The logits in a model's output: the output itself, its ``.logits`` (Hugging Face ``ModelOutput``) or
    its ``"logits"`` entry.

    Raises:
        ValueError: when the output is none of these.
    """
    if isinstance(output, Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if isinstance(logits, Tensor):
        return logits
    keys = _keys(output)
    raise ValueError(
        "the model must return logits (B, num_classes): a tensor, an output with `.logits` or a dict with "
        f"'logits', got {type(output).__name__}"
        + (f"; pass `output_key` to pick one of {keys}" if keys is not None else "")
    )
