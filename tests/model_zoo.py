"""Tiny random-init models of each family the tests explain, built here from configs: no downloads."""

import timm
import torch


def tiny_vit(**kwargs) -> torch.nn.Module:
    """A 3-block random-init timm ViT on 32×32 inputs with 8×8 patches (a 4×4 grid)."""
    options = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=5)
    options.update(kwargs)
    name = options.pop("model_name", "vit_tiny_patch16_224")
    torch.manual_seed(0)
    return timm.create_model(name, **options).eval()
