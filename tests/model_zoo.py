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
    """A 2-layer random-init ``MHAClassifier``."""
    torch.manual_seed(0)
    return MHAClassifier().eval()


# family: (build, the options `explain` needs for it); each model takes 32×32 images and gives a 4×4 grid
FAMILIES: Dict[str, Tuple[Callable[[], nn.Module], Dict[str, Any]]] = {
    "timm": (tiny_vit, {}),
    "hf": (hf_vit, {}),
    "torchvision": (torchvision_vit, {}),
    "mha": (mha_classifier, {"num_prefix_tokens": 1, "grid_size": (4, 4)}),
}


def patches(images: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, H/p · W/p, C · p · p)`` flattened patches, row by row."""
    batch, channels, height, width = images.shape
    grid = images.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return grid.permute(0, 2, 4, 1, 3, 5).flatten(3).flatten(1, 2)


class CourseBlock(nn.Module):
    """Pre-norm ``nn.MultiheadAttention`` and MLP with residuals, as in the course tutorial."""

    def __init__(self, dim: int, heads: int, batch_first: bool) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm_attn(x)
        x = x + self.attn(y, y, y)[0]
        return x + self.mlp(self.norm_mlp(x))


class CourseViT(nn.Module):
    """The Lightning course tutorial's shape: flattened patches into a Linear, its own class token, and
    ``nn.MultiheadAttention`` blocks (sequence-first unless ``batch_first``)."""

    def __init__(
        self,
        batch_first: bool = False,
        dim: int = 32,
        heads: int = 2,
        depth: int = 2,
        patch: int = 8,
        num_patches: int = 16,
        num_classes: int = 5,
    ) -> None:
        super().__init__()
        self.patch = patch
        self.batch_first = batch_first
        self.embed = nn.Linear(3 * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, 1 + num_patches, dim))
        self.blocks = nn.Sequential(*[CourseBlock(dim, heads, batch_first) for _ in range(depth)])
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(patches(images, self.patch))
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        if self.batch_first:
            return self.head(self.blocks(x)[:, 0])
        return self.head(self.blocks(x.transpose(0, 1))[0])


def course_vit(batch_first: bool) -> CourseViT:
    """A 2-block random-init ``CourseViT`` on 32×32 inputs with 8×8 patches."""
    torch.manual_seed(0)
    return CourseViT(batch_first).eval()


# the config sizes of the Hugging Face models (hidden 32, 2 layers, 2 heads, 32 px images, 8 px patches)
SIZES = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
)


class CLIPClassifier(nn.Module):
    """A user's module: a CLIP vision tower with a linear head on its pooled class token."""

    def __init__(self) -> None:
        super().__init__()
        transformers = pytest.importorskip("transformers")
        self.backbone = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**SIZES))
        self.head = nn.Linear(32, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=images).pooler_output)


def _build_hf(name: str) -> nn.Module:
    t = pytest.importorskip("transformers")
    torch.manual_seed(0)
    if name == "clip":
        return CLIPClassifier().eval()
    if name == "swin":
        config = t.SwinConfig(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=5
        )
        return t.SwinForImageClassification(config).eval()
    if name == "swinv2":
        config = t.Swinv2Config(
            image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2], window_size=4, num_labels=5
        )
        return t.Swinv2ForImageClassification(config).eval()
    builders = {
        "vit": (t.ViTForImageClassification, t.ViTConfig, {}),
        "deit": (t.DeiTForImageClassification, t.DeiTConfig, {}),
        "deit_teacher": (t.DeiTForImageClassificationWithTeacher, t.DeiTConfig, {}),
        "beit": (t.BeitForImageClassification, t.BeitConfig, {"use_mean_pooling": True}),
        "beit_cls": (t.BeitForImageClassification, t.BeitConfig, {"use_mean_pooling": False}),
        "dinov2": (t.Dinov2ForImageClassification, t.Dinov2Config, {}),
        "dinov2_reg": (
            t.Dinov2WithRegistersForImageClassification,
            t.Dinov2WithRegistersConfig,
            {"num_register_tokens": 4},
        ),
        "vit_msn": (t.ViTMSNForImageClassification, t.ViTMSNConfig, {}),
    }
    model_class, config_class, extra = builders[name]
    return model_class(config_class(num_labels=5, **SIZES, **extra)).eval()


_HF_MODELS: Dict[str, nn.Module] = {}


def model_for(name: str) -> nn.Module:
    """A tiny random-init Hugging Face image model by name (``"vit"``, ``"clip"``, ``"swin"``, ...).

    Built once per session; tests that change a model work on a deep copy.
    """
    if name not in _HF_MODELS:
        _HF_MODELS[name] = _build_hf(name)
    return _HF_MODELS[name]
