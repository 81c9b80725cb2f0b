"""Shared fixtures: tiny random-init timm ViTs, built in the test, no downloads."""

import os

# Spin-waiting OpenMP threads make a shared 2-core machine (and the tests' own subprocesses) crawl.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import timm
import torch


def tiny_vit(**kwargs) -> torch.nn.Module:
    """A 3-block random-init timm ViT on 32×32 inputs with 8×8 patches (a 4×4 grid)."""
    options = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=5)
    options.update(kwargs)
    name = options.pop("model_name", "vit_tiny_patch16_224")
    torch.manual_seed(0)
    return timm.create_model(name, **options).eval()


@pytest.fixture
def vit() -> torch.nn.Module:
    return tiny_vit()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
