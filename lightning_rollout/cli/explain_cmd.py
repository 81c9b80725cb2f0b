"""`lightning-rollout explain`: one overlay PNG per image file and method, and the top-k predictions."""

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib
import numpy as np
import torch
from PIL import Image
from torch import nn

from lightning_rollout.cli.errors import CLIError, one_line
from lightning_rollout.cli.loading import find_images, load_model, read_image, torch_device
from lightning_rollout.core.hooks import side_pass
from lightning_rollout.engine import check_model, explain
from lightning_rollout.models import find_adapter
from lightning_rollout.rendering.figures import overlays
from lightning_rollout.rendering.images import to_display_images

__all__ = ["run_explain"]


def _data_config(model: nn.Module, args: argparse.Namespace, hints: Dict[str, Any]) -> Dict[str, Any]:
    """timm's data config of the model (the part its adapter serves), with its own input size and the overrides."""
    from timm.data import resolve_model_data_config

    adapter = find_adapter(model)
    root = model if adapter is None else adapter.root
    config = dict(resolve_model_data_config(root))
    img_size = getattr(getattr(root, "patch_embed", None), "img_size", None)
    if args.image_size is not None:
        config["input_size"] = (3, args.image_size, args.image_size)
    elif img_size is not None:
        config["input_size"] = (3, *tuple(img_size))
    for key in ("mean", "std"):
        value = getattr(args, key) if getattr(args, key) is not None else hints.get(key)
        if value is not None:
            config[key] = tuple(value) * (3 if len(value) == 1 else 1)
    if args.crop_pct is not None:
        if not 0 < args.crop_pct <= 1:
            raise CLIError(f"--crop-pct must be in (0, 1], got {args.crop_pct}")
        config["crop_pct"] = args.crop_pct
    return config


def _enlarged(image: np.ndarray, min_size: int = 224) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor so that the shorter side is at least `min_size`."""
    factor = max(1, -(-min_size // min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _check_model(model: nn.Module, args: argparse.Namespace) -> None:
    """Says, before any image is explained, whether the model can serve every `--method` and `--category`."""
    try:
        adapter = check_model(model, args.method)
    except ValueError as error:  # UnsupportedModelError too: the message says what works instead
        raise CLIError(f"--method {' '.join(args.method)}: {error}") from None
    num_classes = adapter.num_classes()
    if args.category is not None and isinstance(num_classes, int) and args.category >= num_classes > 0:
        raise CLIError(f"--category {args.category} is out of range: the model has {num_classes} classes "
                       f"(0 to {num_classes - 1})")


def _warn_untrained(args: argparse.Namespace) -> None:
    if args.checkpoint is None and not args.pretrained:
        source = f"--model {args.model}" if args.config is None else f"--config {args.config}"
        print(
            f"lightning-rollout explain: warning: {source} without --pretrained or --checkpoint has random weights; "
            "the maps and predictions are those of an untrained model",
            file=sys.stderr,
        )


def _top_k(row: torch.Tensor, k: int, class_names: Optional[List[str]]) -> str:
    """`"name probability, ..."` of the `k` most probable classes of one image."""
    top = row.topk(min(k, len(row)))
    return ", ".join(
        f"{class_names[i] if class_names and i < len(class_names) else i} {p:.3f}"
        for p, i in zip(top.values.tolist(), top.indices.tolist())
    )


def run_explain(args: argparse.Namespace) -> None:
    """`lightning-rollout explain`: overlays and top-k predictions for image files."""
    from timm.data import create_transform
    from tqdm import tqdm

    if not 0 <= args.alpha <= 1:
        raise CLIError(f"--alpha must be in [0, 1], got {args.alpha}")
    files, any_folder = find_images(args.paths)
    for path, _ in files:
        read_image(path, decode=False)
    if args.colormap not in matplotlib.colormaps:
        raise CLIError(f"--colormap {args.colormap!r} is not a matplotlib colour map name")

    device = torch_device(args.device)
    model, hints = load_model(args)
    _check_model(model, args)
    model.to(device)
    config = _data_config(model, args, hints)
    transform = create_transform(**config, is_training=False)
    class_names = args.class_names or hints.get("class_names")
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CLIError(f"--output {str(output)!r} cannot be created: {error}") from None
    _warn_untrained(args)

    progress = tqdm(total=len(files), unit="image", disable=not any_folder, file=sys.stderr)
    for start in range(0, len(files), args.batch_size):
        chunk = files[start : start + args.batch_size]
        images = torch.stack([transform(read_image(path)) for path, _ in chunk]).to(device)
        try:
            with side_pass(model, device, needs_grad=False):
                probabilities = model(images).float().softmax(dim=-1).cpu()
        except RuntimeError as error:  # e.g. an input size the model was not built for
            raise CLIError(f"the model cannot take inputs of shape {tuple(images.shape)} (see --image-size): "
                           f"{one_line(error)[:300]}") from None
        num_classes = probabilities.shape[1]
        if args.category is not None and args.category >= num_classes:
            raise CLIError(f"--category {args.category} is out of range: the model has {num_classes} classes "
                           f"(0 to {num_classes - 1})")
        display = to_display_images(images.cpu(), list(config["mean"]), list(config["std"]))
        for method in args.method:
            try:
                maps = explain(
                    model, images, method, head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
                    target=args.category,
                ).cpu()
            except ValueError as error:  # the model's forward does not give what the method needs
                raise CLIError(f"--method {method}: {error}") from None
            for (_, name), overlay in zip(chunk, overlays(display, maps, args.colormap, args.alpha)):
                target = output / name.parent / f"{name.stem}_{method}.png"
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(_enlarged(overlay)).save(target)
                except OSError as error:
                    raise CLIError(f"--output {str(output)!r}: {target} cannot be written: {error}") from None
        for (path, _), row in zip(chunk, probabilities):
            progress.write(f"{path}: {_top_k(row, args.top_k, class_names)}", file=sys.stdout)
        progress.update(len(chunk))
    progress.close()
    print(f"wrote {len(files) * len(args.method)} overlay(s) to {output}", file=sys.stderr)
