"""Counts a module's forwards and the calls of ``torch.autograd.grad`` (the backward passes) during a test."""

import pytest
import torch
from torch import nn


class Counts:
    """Counts forwards of ``module`` and calls of ``torch.autograd.grad``."""

    def __init__(self, module: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
        self.forwards = self.backwards = 0
        module.register_forward_hook(lambda *args: setattr(self, "forwards", self.forwards + 1))
        real_grad = torch.autograd.grad

        def grad(*args, **kwargs):
            self.backwards += 1
            return real_grad(*args, **kwargs)

        monkeypatch.setattr(torch.autograd, "grad", grad)
