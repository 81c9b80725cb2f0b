"""Ready-made targets: callables mapping a model's output to the score ``(B,)`` a gradient method explains.

A target is any callable ``target(output) -> Tensor (B,)``: ``output`` is what the model returns (after
``output_key`` picks an entry of a dict or tuple output), and the score must be differentiable in it, one value
per sample. Pass one as ``target=`` to `api` or to the callback. The ones here
cover the usual cases:

- `ClassLogit`: a class's logit, one class for the batch or one per sample;
- `positive_labels`: the ``(sample, class)`` pairs of a multi-label batch's positive labels, to explain
  each label of a sample on its own (with `ClassLogit` of the pairs' classes);
- `EmbeddingSimilarity`: cosine similarity of an embedding to reference embeddings (e.g. CLIP text
  embeddings of prompts), one reference per sample;
- `RegressionOutput`: a regression head's output.

Example:
    ```python
    samples, classes = positive_labels(labels)  # labels: multi-hot (B, C)
    maps = explain(model, images[samples], "chefer", target=ClassLogit(classes))
    ```
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_rollout.core.checks import check_int

__all__ = ["ClassLogit", "EmbeddingSimilarity", "RegressionOutput", "positive_labels"]

Indices = Union[int, Sequence[int], Tensor]
"""One index for every sample, or one per sample (a list or an integer tensor ``(B,)``)."""


def _indices(argument: str, value: Indices) -> Tensor:
    """``value`` as a LongTensor: 0-D for one index, ``(B,)`` for one per sample.

    Raises:
        ValueError: naming ``argument``, unless ``value`` is a non-negative int, a list of them or a 0-/1-D
            integer tensor of non-negative values.
    """
    if isinstance(value, Tensor):
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool or value.dim() > 1:
            raise ValueError(
                f"`{argument}` must be an int, a list of ints or an integer tensor (B,), got a {value.dim()}-D "
                f"{value.dtype} tensor"
            )
        indices = value.detach().long()
    elif isinstance(value, int) and not isinstance(value, bool):
        indices = torch.tensor(value)
    elif (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        indices = torch.tensor(list(value))
    else:
        raise ValueError(f"`{argument}` must be an int, a list of ints or an integer tensor (B,), got {value!r}")
    if indices.numel() and bool((indices < 0).any()):
        raise ValueError(f"`{argument}` must be non-negative, got {indices.tolist()}")
    return indices


def _per_sample(argument: str, indices: Tensor, batch_size: int, device: torch.device) -> Tensor:
    """``indices`` broadcast to ``(batch_size,)`` on ``device``; a per-sample tensor must fit the batch."""
    if indices.dim() == 1 and indices.shape[0] != batch_size:
        raise ValueError(f"`{argument}` holds {indices.shape[0]} indices for a batch of {batch_size} samples")
    return indices.to(device).expand(batch_size)


def _check_output(output: Tensor, what: str) -> None:
    if not isinstance(output, Tensor) or output.dim() != 2:
        got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(f"this target needs an output of shape (B, {what}), got {got}; pick it with `output_key`")


class ClassLogit:
    """The logit of a class in a ``(B, num_classes)`` output.

    Args:
        classes: the class for every sample (int) or one per sample (list or integer tensor ``(B,)``).

    Raises:
        ValueError: on a negative or non-integer class (here), or a class outside the output or a per-sample
            list not of the batch's length (when called).

    Example:
        ```python
        maps = explain(model, images, "grad_rollout", target=ClassLogit(3))
        ```
    """

    def __init__(self, classes: Indices) -> None:
        self.classes = _indices("classes", classes)

    def __call__(self, output: Tensor) -> Tensor:
        _check_output(output, "num_classes")
        classes = _per_sample("classes", self.classes, output.shape[0], output.device)
        if bool((classes >= output.shape[1]).any()):
            raise ValueError(f"`classes` must be < num_classes={output.shape[1]}, got {self.classes.tolist()}")
        return output.gather(1, classes[:, None]).squeeze(1)

    def __repr__(self) -> str:
        return f"ClassLogit({self.classes.tolist()})"


def positive_labels(labels: Tensor, max_per_sample: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """The ``(sample, class)`` pairs of the positive labels of a multi-label batch.

    Explaining each positive label of a sample on its own is explaining a batch of pairs: repeat each sample
    once per positive label (``images[samples]``) and explain the pair's class (``ClassLogit(classes)``).

    Args:
        labels: multi-hot labels ``(B, C)`` (bool, or numbers where ``> 0.5`` is positive).
        max_per_sample: keep at most this many positive labels of each sample (its first, in class order);
            ``None``: all.

    Returns:
        ``(samples, classes)``: two LongTensors ``(P,)``, sorted by sample, then class.

    Raises:
        ValueError: if ``labels`` is not 2-D or ``max_per_sample`` is not ``None`` or an int ``>= 1``.

    Example:
        ```python
        samples, classes = positive_labels(torch.tensor([[1, 0, 1], [0, 1, 0]]))
        # samples = [0, 0, 1], classes = [0, 2, 1]
        ```
    """
    if not isinstance(labels, Tensor) or labels.dim() != 2:
        got = f"shape {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"`labels` must be multi-hot labels of shape (B, C), got {got}")
    if max_per_sample is not None:
        check_int("max_per_sample", max_per_sample, 1)
    positive = labels > 0.5 if labels.dtype != torch.bool else labels
    samples, classes = positive.nonzero(as_tuple=True)
    if max_per_sample is not None and samples.numel():
        # The rank of each pair among its sample's pairs (pairs come sorted by sample).
        first = torch.searchsorted(samples, samples, right=False)
        keep = torch.arange(samples.numel(), device=samples.device) - first < max_per_sample
        samples, classes = samples[keep], classes[keep]
    return samples, classes


class EmbeddingSimilarity:
    """Cosine similarity of each sample's embedding to a reference embedding.

    Args:
        references: ``(D,)`` one reference, or ``(K, D)`` several (e.g. CLIP text embeddings of K prompts).
        index: which reference each sample is scored against: one for all (int) or one per sample (list or
            integer tensor ``(B,)``); may be left at 0 for a single reference.

    The references are detached: the score's gradient flows into the model's output only.

    Raises:
        ValueError: on references that are not ``(D,)`` or ``(K, D)`` floats, an index out of ``[0, K)`` (here),
            or an output whose width is not ``D`` or a per-sample index not of the batch's length (when called).

    Example:
        ```python
        text = clip.get_text_features(input_ids=prompts).pooler_output  # (2, D)
        maps = explain(image_tower, images, "chefer", target=EmbeddingSimilarity(text, index=[0, 1, 1, 0]))
        ```
    """

    def __init__(self, references: Tensor, index: Indices = 0) -> None:
        if not isinstance(references, Tensor) or references.dim() not in (1, 2) or not references.is_floating_point():
            got = (
                f"a {references.dim()}-D {references.dtype} tensor"
                if isinstance(references, Tensor)
                else type(references).__name__
            )
            raise ValueError(f"`references` must be a float tensor (D,) or (K, D), got {got}")
        self.references = references.detach().reshape(-1, references.shape[-1])
        self.index = _indices("index", index)
        if self.index.numel() and int(self.index.max()) >= self.references.shape[0]:
            raise ValueError(
                f"`index` must be < the number of references ({self.references.shape[0]}), got {self.index.tolist()}"
            )

    def __call__(self, output: Tensor) -> Tensor:
        _check_output(output, f"{self.references.shape[1]}")
        if output.shape[1] != self.references.shape[1]:
            raise ValueError(
                f"the output's embeddings have {output.shape[1]} dimensions but `references` "
                f"{self.references.shape[1]}; pick the embedding (after any projection) with `output_key`"
            )
        index = _per_sample("index", self.index, output.shape[0], self.references.device)
        references = self.references[index].to(device=output.device, dtype=output.dtype)
        return F.cosine_similarity(output, references, dim=1)

    def __repr__(self) -> str:
        return f"EmbeddingSimilarity({self.references.shape[0]} references, index={self.index.tolist()})"


class RegressionOutput:
    """A regression head's output: ``(B,)`` as it is, or one column of ``(B, K)``.

    Args:
        index: the column of a ``(B, K)`` output; ``None`` for an output ``(B,)`` or ``(B, 1)``.

    Raises:
        ValueError: on a bad ``index`` (here), or an output of another shape (when called).

    Example:
        ```python
        maps = explain(age_model, images, "chefer", target=RegressionOutput())
        ```
    """

    def __init__(self, index: Optional[int] = None) -> None:
        if index is not None:
            check_int("index", index, 0)
        self.index = index

    def __call__(self, output: Tensor) -> Tensor:
        if isinstance(output, Tensor) and output.dim() == 1 and self.index is None:
            return output
        if isinstance(output, Tensor) and output.dim() == 2:
            if self.index is None and output.shape[1] == 1:
                return output[:, 0]
            if self.index is not None and self.index < output.shape[1]:
                return output[:, self.index]
        got = f"shape {tuple(output.shape)}" if isinstance(output, Tensor) else type(output).__name__
        allowed = "(B,) or (B, 1)" if self.index is None else f"(B, K) with K > {self.index}"
        raise ValueError(f"`RegressionOutput(index={self.index})` needs an output {allowed}, got {got}")

    def __repr__(self) -> str:
        return f"RegressionOutput(index={self.index})"
