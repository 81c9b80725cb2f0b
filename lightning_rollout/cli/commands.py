"""``lightning-rollout``: explanation maps from the command line.

- ``lightning-rollout explain PATH...``: one overlay PNG per image file and method, and the top-k
  predictions, for a timm model, a Lightning checkpoint or a plain state dict.
- ``lightning-rollout replay CHECKPOINTS... --config CONFIG``: the pictures and scalars
  :class:`~lightning_rollout.AttentionRolloutCallback` would have logged, computed afterwards from a run's
  checkpoints (in step order) and written to TensorBoard.

Both also run as ``python -m lightning_rollout``. Errors in the arguments or inputs end the command with
exit status 2 and one line on stderr naming the argument or file.

Only the standard library is imported until a sub-command runs, so ``--help`` answers at once; torch,
timm and Lightning are imported by the sub-command that needs them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NoReturn, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

__all__ = ["CLIError", "build_parser", "main"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Files taken from folders (a file named on the command line is read whatever its suffix)."""

METHOD_NAMES = ("rollout", "grad_rollout", "chefer", "gradcam", "legrad", "attention")
"""The methods ``--help`` lists; :data:`lightning_rollout.methods.METHODS` (which imports torch) decides what
runs, and tests/test_cli.py checks that this list names each of them."""

HEAD_FUSION_NAMES = ("mean", "max", "min")
"""``--head-fusion`` choices, as :data:`lightning_rollout.methods.HEAD_FUSIONS` (checked likewise)."""


class CLIError(Exception):
    """A bad argument or input; :func:`main` prints it on one line and exits with status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), naming the way to the help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {_one_line(message)} (see '{self.prog} --help')\n")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# ------------------------------------------------------------------------------------------- parser


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``lightning-rollout`` argument parser (``explain`` and ``replay`` sub-commands)."""
    parser = _Parser(
        prog="lightning-rollout",
        description="Explanation maps of Vision Transformers: attention rollout, gradient rollout, "
        "Chefer relevance and ViT Grad-CAM.",
        epilog="Run 'lightning-rollout explain --help' or 'lightning-rollout replay --help' for the options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{explain,replay}")

    ex = commands.add_parser(
        "explain",
        help="write overlay PNGs of image files and print the top-k predictions",
        description="Explain image files: one overlay PNG per image and method in --output, and the\n"
        "top-k predictions printed per image. The model is a timm model (--model), a Lightning\n"
        "checkpoint (--checkpoint with --module-class or --config) or a plain state dict\n"
        "(--checkpoint with --model). Images are preprocessed with the model's timm data config.",
        epilog="Examples:\n"
        "  lightning-rollout explain cat.jpg --model vit_base_patch16_224 --pretrained\n"
        "  lightning-rollout explain photos/ --checkpoint last.ckpt --config configs/demo.yaml "
        "--method rollout gradcam\n"
        "  lightning-rollout explain a.png --checkpoint weights.pth --model vit_small_patch16_224 "
        "--num-classes 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ex.add_argument("paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively")
    model = ex.add_argument_group("model (one of --model or --checkpoint)")
    model.add_argument("--model", metavar="NAME", help="a timm model name, e.g. vit_base_patch16_224")
    model.add_argument(
        "--pretrained", action="store_true", help="load timm's pretrained weights for --model (downloads them)"
    )
    model.add_argument("--num-classes", type=_positive_int, metavar="N", help="classes of --model's head")
    model.add_argument(
        "--checkpoint",
        metavar="FILE",
        help="a Lightning checkpoint (.ckpt; needs --module-class or --config) or a plain state dict "
        "(.pth/.pt/.bin/.safetensors; needs --model). Checkpoints are pickles: load only files you trust",
    )
    model.add_argument(
        "--module-class", metavar="CLASS", help="import path of the checkpoint's LightningModule, "
        "e.g. lightning_rollout.demo.TimmClassifier (built from the checkpoint's hyperparameters)"
    )
    model.add_argument(
        "--config", metavar="YAML", help="the LightningCLI config the checkpoint was trained with (its model "
        "section builds the module; its AttentionRolloutCallback entry gives class names and mean/std)"
    )
    expl = ex.add_argument_group("explanation")
    expl.add_argument(
        "--method", nargs="+", default=["rollout"], metavar="METHOD",
        help=f"one or several of {', '.join(METHOD_NAMES)} (default: rollout)",
    )
    expl.add_argument(
        "--head-fusion", default="mean", choices=list(HEAD_FUSION_NAMES), help="rollout (default: mean)"
    )
    expl.add_argument(
        "--discard-ratio", type=_ratio, default=0.9, metavar="R",
        help="share of the weakest attention entries dropped, rollout and grad_rollout (default: 0.9)",
    )
    expl.add_argument(
        "--category", type=_non_negative_int, metavar="INDEX",
        help="class index the gradient methods explain (default: each image's prediction)",
    )
    pre = ex.add_argument_group("input and output")
    pre.add_argument(
        "--image-size", type=_positive_int, metavar="PX",
        help="input size; with --model it also sets the model's img_size (default: the model's own)",
    )
    pre.add_argument("--crop-pct", type=float, metavar="F", help="centre-crop share (default: the model's data config)")
    pre.add_argument("--mean", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation mean")
    pre.add_argument("--std", type=float, nargs=3, metavar=("R", "G", "B"), help="normalisation std")
    pre.add_argument(
        "--output", default="explanations", metavar="DIR", help="where the PNGs go (default: explanations)"
    )
    pre.add_argument(
        "--top-k", type=_positive_int, default=5, metavar="K", help="predictions printed per image (default: 5)"
    )
    pre.add_argument("--class-names", nargs="+", metavar="NAME", help="names printed instead of class indices")
    pre.add_argument("--colormap", default="jet", help="a matplotlib colour map (default: jet)")
    pre.add_argument("--alpha", type=float, default=0.5, help="overlay opacity in [0, 1] (default: 0.5)")
    pre.add_argument("--batch-size", type=_positive_int, default=16, metavar="B", help="images per pass (default: 16)")
    pre.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")

    rp = commands.add_parser(
        "replay",
        help="log a run's checkpoints' maps to TensorBoard, as the callback would have",
        description="Rebuild model and data module from a LightningCLI config, take the validation\n"
        "samples the AttentionRolloutCallback would keep (settings from the config's callback entry,\n"
        "else the callback's defaults), explain them with each checkpoint in global-step order and\n"
        "write the samples, the filmstrip (one column per checkpoint) and the scalars to TensorBoard.",
        epilog="Example:\n  lightning-rollout replay logs/run/checkpoints/*.ckpt --config configs/demo.yaml "
        "--log-dir logs/replay\n  tensorboard --logdir logs/replay --samples_per_plugin images=100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="Lightning checkpoints of one run")
    rp.add_argument("--config", required=True, metavar="YAML", help="the LightningCLI config of the run")
    rp.add_argument(
        "--log-dir", default="logs/replay", metavar="DIR", help="TensorBoard log dir (default: logs/replay)"
    )
    rp.add_argument(
        "--method", nargs="+", metavar="METHOD",
        help="methods when the config has no AttentionRolloutCallback entry (default: rollout)",
    )
    rp.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs ``lightning-rollout`` on ``argv`` (default: the command line); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            run_explain(args)
        else:
            run_replay(args)
    except CLIError as error:
        parser.exit(2, f"lightning-rollout {args.command}: error: {_one_line(error)}\n")
    return 0


def _check_methods(methods: Optional[Sequence[str]]) -> None:
    from lightning_rollout.methods import METHODS

    for method in methods or []:
        if method not in METHODS:
            raise CLIError(f"--method {method!r} is not a method; choose from {', '.join(METHODS)}")


# ------------------------------------------------------------------------------------------ models


def _import(path: str, argument: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise CLIError(f"{argument} {path!r} cannot be imported: {error}") from None


def _read_yaml(path: str) -> Dict[str, Any]:
    import yaml

    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as error:
        raise CLIError(f"--config {path!r} cannot be read: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CLIError(f"--config {path!r} is not a LightningCLI config with a `model: class_path: ...` section")
    return config


def _callback_entry(config: Dict[str, Any]) -> Dict[str, Any]:
    """``init_args`` of the config's AttentionRolloutCallback entry, or ``{}``."""
    for entry in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("AttentionRolloutCallback"):
            return dict(entry.get("init_args") or {})
    return {}


def _instantiate(config: Dict[str, Any], key: str, base: Union[type, Tuple[type, ...]], path: str) -> Any:
    """The object of the config's ``key: {class_path, init_args}`` section, built as LightningCLI builds it."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, key, required=True)
    try:
        parsed = parser.parse_object({key: config[key]})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
        return instantiate(parsed)[key]
    except Exception as error:  # jsonargparse reports bad class paths and init_args in many types
        raise CLIError(f"--config {path!r}: the {key} section cannot be built: {error}") from None


def _model_from_config(config: Dict[str, Any], path: str) -> nn.Module:
    from torch import nn

    return _instantiate(config, "model", nn.Module, path)


def _load_file(path: str) -> Any:
    import torch

    if not Path(path).is_file():
        raise CLIError(f"--checkpoint {path!r} is not a file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises anything from EOFError to UnpicklingError
        raise CLIError(f"--checkpoint {path!r} cannot be read as a checkpoint: {error}") from None


def _load_weights(model: nn.Module, state: Any, path: str) -> None:
    from torch import Tensor

    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CLIError(f"--checkpoint {path!r} holds no state dict (a dict of tensors, or one under 'state_dict')")
    own = set(model.state_dict())
    if not own & set(state) and all(key.startswith("model.") for key in state):
        state = {key[len("model."):]: value for key, value in state.items()}  # a LightningModule's `self.model`
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        summary = " ".join(str(error).split())[:500]
        raise CLIError(f"--checkpoint {path!r} does not fit the model: {summary}") from None


def load_model(args: argparse.Namespace) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model of ``explain``'s arguments (eval mode, on CPU) and what the config says about display.

    Returns:
        The model and ``{"class_names", "mean", "std"}`` found in ``--config``'s callback entry (may be empty).
    """
    hints: Dict[str, Any] = {}
    config = None if args.config is None else _read_yaml(args.config)
    if config is not None:
        entry = _callback_entry(config)
        hints = {key: entry[key] for key in ("class_names", "mean", "std") if entry.get(key) is not None}
    checkpoint = args.checkpoint
    if args.model is None and checkpoint is None:
        raise CLIError("give the model: --model NAME (a timm model) or --checkpoint FILE")
    if checkpoint is not None and args.model is None and args.module_class is None and args.config is None:
        raise CLIError(
            f"--checkpoint {checkpoint!r}: say how to build its model: --module-class (its LightningModule, e.g. "
            "lightning_rollout.demo.TimmClassifier), --config (the LightningCLI config it was trained with) or "
            "--model (a timm name, for a plain state dict)"
        )
    if args.module_class is not None:
        if checkpoint is None:
            raise CLIError("--module-class needs --checkpoint")
        cls = _import(args.module_class, "--module-class")
        if not callable(getattr(cls, "load_from_checkpoint", None)):
            raise CLIError(f"--module-class {args.module_class!r} is not a LightningModule class")
        _load_file(checkpoint)  # a clear error for a missing or unreadable file first
        try:
            model = cls.load_from_checkpoint(checkpoint, map_location="cpu")
        except Exception as error:  # missing keys, wrong hyperparameters, not a Lightning checkpoint
            raise CLIError(f"--checkpoint {checkpoint!r} cannot be loaded into {args.module_class}: {error}") from None
    elif config is not None:
        model = _model_from_config(config, args.config)
        if checkpoint is not None:
            _load_weights(model, _load_file(checkpoint), checkpoint)
    else:
        import timm

        kwargs: Dict[str, Any] = {}
        if args.num_classes is not None:
            kwargs["num_classes"] = args.num_classes
        if args.image_size is not None:
            kwargs["img_size"] = args.image_size
        if not timm.is_model(args.model):
            raise CLIError(f"--model {args.model!r} is not a timm model name (see timm.list_models('vit_*'))")
        try:
            model = timm.create_model(args.model, pretrained=args.pretrained and checkpoint is None, **kwargs)
        except Exception as error:  # hub downloads fail with many exception types
            if args.pretrained:
                raise CLIError(
                    f"--pretrained weights of {args.model!r} cannot be loaded ({type(error).__name__}: {error}); "
                    "without network access pass a local file with --checkpoint"
                ) from None
            raise CLIError(f"--model {args.model!r} cannot be built: {error}") from None
        if checkpoint is not None:
            _load_weights(model, _load_file(checkpoint), checkpoint)
    return model.eval(), hints


def _data_config(model: nn.Module, args: argparse.Namespace, hints: Dict[str, Any]) -> Dict[str, Any]:
    """timm's data config of the model (the part its adapter serves), with its own input size and the overrides."""
    from timm.data import resolve_model_data_config

    from lightning_rollout.models import find_adapter

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


# ------------------------------------------------------------------------------------------ explain


def find_images(paths: Sequence[str]) -> Tuple[List[Tuple[Path, Path]], bool]:
    """``(file, name relative to the output folder)`` for every image, and whether a folder was given."""
    found: List[Tuple[Path, Path]] = []
    any_folder = False
    for text in paths:
        path = Path(text)
        if path.is_dir():
            any_folder = True
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise CLIError(f"PATH {text!r} is a folder without image files ({', '.join(IMAGE_SUFFIXES)})")
            found.extend((file, file.relative_to(path)) for file in files)
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            raise CLIError(f"PATH {text!r} does not exist")
    return found, any_folder


def _read_image(path: Path, decode: bool = True) -> Any:
    """The image as RGB; with ``decode=False`` only its header is read (a quick check that it is one)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB") if decode else None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise CLIError(f"PATH {str(path)!r} is not a readable image: {_one_line(error)}") from None


def _enlarged(image: np.ndarray, min_size: int = 224) -> np.ndarray:
    """Nearest-neighbour upscaling by a whole factor so that the shorter side is at least ``min_size``."""
    factor = max(1, -(-min_size // min(image.shape[:2])))
    return image.repeat(factor, axis=0).repeat(factor, axis=1)


def _device(text: str) -> torch.device:
    import torch

    try:
        device = torch.device(text)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise CLIError(f"--device {text!r} is not usable here: {error}") from None
    return device


def _check_model(model: nn.Module, args: argparse.Namespace) -> None:
    """Says, before any image is explained, whether the model can serve every ``--method`` and ``--category``."""
    from lightning_rollout.engine.api import check_model

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


def run_explain(args: argparse.Namespace) -> None:
    """``lightning-rollout explain``: overlays and top-k predictions for image files."""
    if not 0 <= args.alpha <= 1:
        raise CLIError(f"--alpha must be in [0, 1], got {args.alpha}")
    files, any_folder = find_images(args.paths)
    for path, _ in files:
        _read_image(path, decode=False)
    import matplotlib

    if args.colormap not in matplotlib.colormaps:
        raise CLIError(f"--colormap {args.colormap!r} is not a matplotlib colour map name")
    _check_methods(args.method)
    import torch
    from PIL import Image
    from timm.data import create_transform
    from tqdm import tqdm

    from lightning_rollout.core.hooks import side_pass
    from lightning_rollout.engine.api import explain
    from lightning_rollout.rendering.images import to_display_images
    from lightning_rollout.rendering.figures import overlays

    device = _device(args.device)
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
        images = torch.stack([transform(_read_image(path)) for path, _ in chunk]).to(device)
        try:
            with side_pass(model, device, needs_grad=False):
                probabilities = model(images).float().softmax(dim=-1).cpu()
        except RuntimeError as error:  # e.g. an input size the model was not built for
            raise CLIError(f"the model cannot take inputs of shape {tuple(images.shape)} (see --image-size): "
                           f"{_one_line(error)[:300]}") from None
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
            top = row.topk(min(args.top_k, num_classes))
            labels = [
                f"{class_names[i] if class_names and i < len(class_names) else i} {p:.3f}"
                for p, i in zip(top.values.tolist(), top.indices.tolist())
            ]
            progress.write(f"{path}: " + ", ".join(labels), file=sys.stdout)
        progress.update(len(chunk))
    progress.close()
    print(f"wrote {len(files) * len(args.method)} overlay(s) to {output}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- replay


def _datamodule_bases() -> Tuple[type, ...]:
    """``LightningDataModule`` of every installed Lightning namespace (a config may use either)."""
    bases = []
    for namespace in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(namespace).LightningDataModule)
        except ImportError:
            continue
    return tuple(bases)


def _read_checkpoint(path: str) -> Dict[str, Any]:
    import torch

    if not Path(path).is_file():
        raise CLIError(f"CHECKPOINT {path!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises anything from EOFError to UnpicklingError
        raise CLIError(f"CHECKPOINT {path!r} cannot be read: {error}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise CLIError(f"CHECKPOINT {path!r} is not a Lightning checkpoint (no 'state_dict' / 'global_step')")
    return checkpoint


def run_replay(args: argparse.Namespace) -> None:
    """``lightning-rollout replay``: the callback's pictures and scalars for each checkpoint, in step order."""
    _check_methods(args.method)
    try:
        import lightning.pytorch as pl
    except ImportError:
        import pytorch_lightning as pl

    from lightning_rollout.callbacks.attention_rollout import AttentionRolloutCallback
    from lightning_rollout.monitor.step import log_maps

    config = _read_yaml(args.config)
    device = _device(args.device)
    checkpoints = sorted(((_read_checkpoint(p), p) for p in args.checkpoints), key=lambda c: c[0]["global_step"])
    seed = config.get("seed_everything")
    if isinstance(seed, int) and not isinstance(seed, bool):
        pl.seed_everything(seed, verbose=False)  # as LightningCLI does before it builds model and data
    model = _model_from_config(config, args.config)
    datamodule = _instantiate(config, "data", _datamodule_bases(), args.config) if config.get("data") else None
    entry = _callback_entry(config)
    try:
        callback = AttentionRolloutCallback(**(entry or {"methods": args.method or ["rollout"]}))
    except (TypeError, ValueError) as error:
        raise CLIError(f"--config {args.config!r}: the AttentionRolloutCallback entry is invalid: {error}") from None
    # A bare Trainer only lends the callback its logger, precision plugin and rank; it never runs a loop.
    # Its start-up notes ("GPU available: ...") would only be noise here.
    notes = logging.getLogger(f"{pl.__name__}.utilities.rank_zero")
    level = notes.level
    notes.setLevel(logging.WARNING)
    try:
        trainer = pl.Trainer(
            accelerator="cpu", devices=1, logger=pl.loggers.TensorBoardLogger(args.log_dir, name="", version=""),
            precision=(config.get("trainer") or {}).get("precision") or "32-true", enable_progress_bar=False,
            enable_model_summary=False, enable_checkpointing=False,
        )
    finally:
        notes.setLevel(level)
    try:
        callback.setup(trainer, model, "validate")
    except ValueError as error:  # the callback's checks of the model against its arguments
        raise CLIError(f"--config {args.config!r}: the AttentionRolloutCallback does not fit the model: {error}") \
            from None

    if datamodule is not None:
        datamodule.prepare_data()
        datamodule.setup("validate")
        loader = datamodule.val_dataloader()
    else:
        loader = model.val_dataloader()
    for index, batch in enumerate(loader):
        try:
            callback.on_validation_batch_end(trainer, model, None, batch, index, 0)
        except ValueError as error:  # the batch's form against the callback's keys, target and transform
            raise CLIError(f"--config {args.config!r}: the validation batch does not fit the callback: {error}") \
                from None
        if callback.fixed_batch is not None and len(callback.fixed_batch) >= callback.num_samples:
            break

    model.to(device)
    for checkpoint, path in checkpoints:
        try:
            model.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as error:
            first_line = str(error).splitlines()[0]
            raise CLIError(f"CHECKPOINT {path!r} does not fit the config's model: {first_line}") from None
        step, epoch = int(checkpoint["global_step"]), int(checkpoint.get("epoch", 0))
        label = "init" if step == 0 else f"e{epoch} s{step}"
        log_maps(callback, trainer, model, label=label, step=step)
        print(f"{path}: step {step} logged", file=sys.stderr)
    trainer.logger.finalize("success")
    print(f"wrote {len(checkpoints)} checkpoints' maps to {args.log_dir}; to see them:\n"
          f"    tensorboard --logdir {args.log_dir} --samples_per_plugin images=100", file=sys.stderr)
