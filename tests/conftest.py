"""Shared fixtures: a tiny random-init timm ViT (tests/model_zoo.py) and a batch of images."""

import os

# Spin-waiting OpenMP threads make a shared 2-core machine (and the tests' own subprocesses) crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch
from model_zoo import tiny_vit


@pytest.fixture
def vit() -> torch.nn.Module:
    return tiny_vit()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
