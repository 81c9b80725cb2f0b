"""The model-coverage table: every family this project claims, random init, every method.

timm, Hugging Face transformers and torchvision rows; any other ``nn.MultiheadAttention`` model needs its
geometry given (``num_prefix_tokens``, ``grid_size``) and is covered by ``tests/test_models_mha.py``.

    python docs/coverage.py                 # prints the Markdown table (about 2 minutes on 2 CPU cores)
    python docs/coverage.py --out docs/coverage.md

Each row builds the smallest variant of a family with random weights (nothing is downloaded), explains a
small random batch with every method and reports, per method, ``ok`` (finite, non-negative maps of the
right grid), ``constant`` (the maps carry no information at init, with the likely cause), or the reason
the method is refused. Anything else is printed as an error: no family may crash with an unclear error.
"""

import argparse
import os
import sys
import warnings
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lightning_rollout import explain
from lightning_rollout.methods import METHODS
from lightning_rollout.models import UnsupportedModelError, find_adapter

Case = Tuple[str, str, Callable[[], nn.Module], Tuple[int, int]]


def _timm(name: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=5, **kwargs)

    return build


TIMM_CASES: List[Case] = [
    ("timm vit", "vit_tiny_patch16_224", _timm("vit_tiny_patch16_224", img_size=64), (64, 64)),
    (
        "timm vit (CLIP)",
        "vit_base_patch32_clip_224",
        _timm("vit_base_patch32_clip_224", img_size=64, depth=2),
        (64, 64),
    ),
    (
        "timm vit (SigLIP, map pool)",
        "vit_base_patch16_siglip_224",
        _timm("vit_base_patch16_siglip_224", img_size=64, depth=2),
        (64, 64),
    ),
    (
        "timm vit (DINOv2)",
        "vit_small_patch14_dinov2",
        _timm("vit_small_patch14_dinov2", img_size=56, depth=2),
        (56, 56),
    ),
    (
        "timm vit (DINOv2 + registers)",
        "vit_small_patch14_reg4_dinov2",
        _timm("vit_small_patch14_reg4_dinov2", img_size=56, depth=2),
        (56, 56),
    ),
    ("timm deit", "deit_tiny_patch16_224", _timm("deit_tiny_patch16_224", img_size=64), (64, 64)),
    (
        "timm deit (distilled)",
        "deit_tiny_distilled_patch16_224",
        _timm("deit_tiny_distilled_patch16_224", img_size=64),
        (64, 64),
    ),
    ("timm deit3", "deit3_small_patch16_224", _timm("deit3_small_patch16_224", img_size=64, depth=4), (64, 64)),
    ("timm flexivit", "flexivit_small", _timm("flexivit_small", img_size=60, depth=4), (60, 60)),
    ("timm eva02", "eva02_tiny_patch14_224", _timm("eva02_tiny_patch14_224", img_size=56), (56, 56)),
    ("timm beit", "beit_base_patch16_224", _timm("beit_base_patch16_224", img_size=64, depth=2), (64, 64)),
    ("timm beitv2", "beitv2_base_patch16_224", _timm("beitv2_base_patch16_224", img_size=64, depth=2), (64, 64)),
    (
        "timm vit_relpos",
        "vit_relpos_small_patch16_224",
        _timm("vit_relpos_small_patch16_224", img_size=64, depth=4),
        (64, 64),
    ),
    (
        "timm vit_srelpos",
        "vit_srelpos_small_patch16_224",
        _timm("vit_srelpos_small_patch16_224", img_size=64, depth=4),
        (64, 64),
    ),
    ("timm naflexvit", "naflexvit_base_patch16_gap", _timm("naflexvit_base_patch16_gap", depth=2), (64, 64)),
    ("timm cait", "cait_xxs24_224", _timm("cait_xxs24_224", img_size=64, depth=4), (64, 64)),
    (
        "timm samvit",
        "samvit_base_patch16",
        _timm("samvit_base_patch16", img_size=64, depth=2, global_attn_indexes=(1,), window_size=2),
        (64, 64),
    ),
    ("timm xcit", "xcit_nano_12_p16_224", _timm("xcit_nano_12_p16_224", img_size=64), (64, 64)),
    ("timm swin", "swin_tiny_patch4_window7_224", _timm("swin_tiny_patch4_window7_224", img_size=224), (224, 224)),
    ("timm swinv2", "swinv2_tiny_window8_256", _timm("swinv2_tiny_window8_256", img_size=256), (256, 256)),
    ("timm maxvit", "maxvit_nano_rw_256", _timm("maxvit_nano_rw_256", img_size=128), (128, 128)),
    ("timm levit", "levit_128s", _timm("levit_128s", img_size=128), (128, 128)),
]


def _hf(model_class: str, config_class: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        config = getattr(transformers, config_class)(num_labels=5, **kwargs)
        return getattr(transformers, model_class)(config)

    return build


HF_VIT = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, image_size=64, patch_size=16
)


class _CLIPClassifier(nn.Module):
    """A user's module around Hugging Face's ``CLIPVisionModel``: a linear head on the pooled class token."""

    def __init__(self) -> None:
        super().__init__()
        import transformers

        self.vision = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**HF_VIT))
        self.head = nn.Linear(HF_VIT["hidden_size"], 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.vision(pixel_values=images).pooler_output)


def _torchvision_vit() -> nn.Module:
    from torchvision.models import VisionTransformer

    return VisionTransformer(
        image_size=64, patch_size=16, num_layers=2, num_heads=2, hidden_dim=64, mlp_dim=128, num_classes=5
    )


OTHER_CASES: List[Case] = [
    ("HF vit", "ViTForImageClassification", _hf("ViTForImageClassification", "ViTConfig", **HF_VIT), (64, 64)),
    ("HF deit", "DeiTForImageClassification", _hf("DeiTForImageClassification", "DeiTConfig", **HF_VIT), (64, 64)),
    (
        "HF deit (teacher)",
        "DeiTForImageClassificationWithTeacher",
        _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", **HF_VIT),
        (64, 64),
    ),
    ("HF beit", "BeitForImageClassification", _hf("BeitForImageClassification", "BeitConfig", **HF_VIT), (64, 64)),
    (
        "HF dinov2",
        "Dinov2ForImageClassification",
        _hf("Dinov2ForImageClassification", "Dinov2Config", **HF_VIT),
        (64, 64),
    ),
    (
        "HF dinov2 (registers)",
        "Dinov2WithRegistersForImageClassification",
        _hf("Dinov2WithRegistersForImageClassification", "Dinov2WithRegistersConfig", num_register_tokens=4, **HF_VIT),
        (64, 64),
    ),
    ("HF clip vision", "CLIPVisionModel + Linear", _CLIPClassifier, (64, 64)),
    (
        "HF swin",
        "SwinForImageClassification",
        _hf(
            "SwinForImageClassification",
            "SwinConfig",
            image_size=64,
            patch_size=4,
            embed_dim=16,
            depths=[1, 1],
            num_heads=[2, 2],
            window_size=4,
        ),
        (64, 64),
    ),
    ("torchvision vit", "VisionTransformer (vit_b_16 shape)", _torchvision_vit, (64, 64)),
]


def _status(model: nn.Module, images: torch.Tensor, method: str) -> str:
    try:
        maps = explain(model, images, method, discard_ratio=0.5)
    except UnsupportedModelError as error:
        return f"refused: {error}"
    if not bool(torch.isfinite(maps).all()) or bool((maps < 0).any()):
        return "error: non-finite or negative maps"
    flat = maps.flatten(1)
    if bool((flat.amax(1) == flat.amin(1)).any()):
        return "constant at init"
    return "ok"


def run_case(case: Case, batch_size: int = 2) -> Dict[str, str]:
    """Per method: ``ok``, ``constant at init``, ``refused: <reason>`` or ``error: <what>``."""
    _, _, build, size = case
    torch.manual_seed(0)
    model = build().eval()
    images = torch.randn(batch_size, 3, *size, generator=torch.Generator().manual_seed(1))
    result = {}
    for method in METHODS:
        try:
            result[method] = _status(model, images, method)
        except Exception as error:  # the table reports it; an unclear crash is what it is there to find
            result[method] = f"error: {type(error).__name__}: {error}"
    result["adapter"] = getattr(find_adapter(model), "family", "none")
    return result


def table(cases: List[Case]) -> str:
    lines = [
        "| family | model | adapter | " + " | ".join(f"`{m}`" for m in METHODS) + " |",
        "|---|---|---|" + "---|" * len(METHODS),
    ]
    reasons: Dict[str, str] = {}
    for case in cases:
        family, name = case[:2]
        print(f"{family}: {name}", file=sys.stderr, flush=True)
        result = run_case(case)
        cells = []
        for method in METHODS:
            status = result[method]
            if status.startswith("refused: "):
                reasons[family] = status[len("refused: ") :]
                status = "refused¹"
            cells.append(status)
        lines.append(f"| {family} | `{name}` | {result['adapter']} | " + " | ".join(cells) + " |")
    lines.append("")
    for family, reason in reasons.items():
        lines.append(f"¹ {family}: {reason}")
        lines.append("")
    return "\n".join(lines)


def all_cases() -> List[Case]:
    return TIMM_CASES + OTHER_CASES


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the table to this file")
    parser.add_argument("--only", nargs="*", default=[], help="only the rows whose family contains one of these")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cases = [case for case in all_cases() if not args.only or any(word in case[0] for word in args.only)]
    text = table(cases)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
