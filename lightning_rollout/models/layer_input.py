"""The tokens an attention layer reads, handed over by a forward pre-hook (Grad-CAM's activation).

In a pre-norm transformer block the attention layer reads the output of the block's input norm, which
is what Grad-CAM for ViTs looks at. Taking it at the attention layer's input works however the block
names its norm and however it calls the layer (positional or keyword arguments).
"""

from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple

from torch import Tensor, nn

from lightning_rollout.models.base import CaptureCallback


@contextmanager
def layer_input(
    name: str,
    module: nn.Module,
    on_capture: CaptureCallback,
    pick: Callable[[tuple, dict], Tensor],
    sequence_first: bool = False,
) -> Iterator[str]:
    """Hands the tokens ``module`` reads, ``pick(args, kwargs)``, to ``on_capture(name, tokens)`` as ``(B, N, C)``.

    Args:
        name: the module's qualified name.
        module: the attention layer.
        on_capture: receives the tokens (on the autograd graph) each time the module runs.
        pick: selects the token tensor from the module's call arguments.
        sequence_first: the tokens are ``(N, B, C)``; `on_capture` gets them as ``(B, N, C)``, and the module
            reads that very view back, so gradients with respect to it are the tokens' gradients.

    Yields:
        A name for messages: ``"<name> (input)"``.
    """

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> Optional[Tuple[tuple, dict]]:
        tokens = pick(args, kwargs)
        if not sequence_first or tokens.dim() != 3:
            on_capture(name, tokens)
            return None
        # The batch-first view must be on the gradient path: the module reads it back (transposed) wherever
        # it was given the tokens (query, key and value of a self-attention).
        batch_first = tokens.transpose(0, 1)
        on_capture(name, batch_first)
        read = batch_first.transpose(0, 1)
        args = tuple(read if arg is tokens else arg for arg in args)
        kwargs = {key: read if value is tokens else value for key, value in kwargs.items()}
        return args, kwargs

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield f"{name} (input)"
    finally:
        handle.remove()
