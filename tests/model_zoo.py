"""Tiny random-init models of each family the tests explain, built here from configs: no downloads."""

from typing import Any, Callable, Dict, Tuple

import pytest
import timm
import torch
from torch import nn
from torchvision.models import VisionTransformer


def tiny_vit(**kwargs) -> torch.nn.Module:
    """A 3-block random-init timm ViT on 32×32 inputs with 8×8 patches (a 4×4 grid)."""
    options = dict(img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2, num_classes=5)
    options.update(kwargs)
    name = options.pop("model_name", "vit_tiny_patch16_224")
    torch.manual_seed(0)
    return timm.create_model(name, **options).eval()


def hf_vit() -> nn.Module:
    """A 2-layer random-init Hugging Face ``ViTForImageClassification`` on 32×32 inputs with 8×8 patches."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


def torchvision_vit() -> VisionTransformer:
    """A 2-layer random-init torchvision ``VisionTransformer`` on 32×32 inputs with 8×8 patches."""
    torch.manual_seed(0)
    model = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=5
    )
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head: no gradient would flow
    return model.eval()


class MHAClassifier(nn.Module):
    """A plain ``nn.MultiheadAttention`` model (generic adapter): class token + 16 patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, 32, 8, stride=8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 32))
        self.norm = nn.LayerNorm(32)
        self.attn = nn.ModuleList([nn.MultiheadAttention(32, 2, batch_first=True) for _ in range(2)])
        self.head = nn.Linear(32, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for attn in self.attn:
            y = self.norm(x)
            x = x + attn(y, y, y, need_weights=False)[0]
        return self.head(x[:, 0])


def mha_classifier() -> nn.Module:
    torch.manual_seed(0)
    return MHAClassifier().eval()


# family: (build, the options `explain` needs for it); each model takes 32×32 images and gives a 4×4 grid
FAMILIES: Dict[str, Tuple[Callable[[], nn.Module], Dict[str, Any]]] = {
    "timm": (tiny_vit, {}),
    "hf": (hf_vit, {}),
    "torchvision": (torchvision_vit, {}),
    "mha": (mha_classifier, {"num_prefix_tokens": 1, "grid_size": (4, 4)}),
}
