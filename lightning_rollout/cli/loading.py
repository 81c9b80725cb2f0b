"""What the sub-commands read: configs, models, checkpoints, image files, and the device.

Every failure is a `CLIError` naming the argument or file at fault.
"""

import argparse
import importlib
import inspect
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import yaml
from torch import Tensor, nn

from lightning_rollout.cli.errors import CLIError, one_line

__all__ = [
    "IMAGE_SUFFIXES",
    "build_section",
    "callback_entry",
    "datamodule_bases",
    "find_images",
    "load_file",
    "load_model",
    "load_weights",
    "read_checkpoint",
    "read_config",
    "read_image",
    "torch_device",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
"""Files taken from folders (a file named on the command line is read whatever its suffix)."""


# ------------------------------------------------------------------------------------------ configs


def read_config(path: str) -> Dict[str, Any]:
    """The LightningCLI config at `path` (a dict with a `model` section)."""
    try:
        with open(path) as file:
            config = yaml.safe_load(file)
    except (OSError, yaml.YAMLError) as error:
        raise CLIError(f"--config {path!r} cannot be read: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise CLIError(f"--config {path!r} is not a LightningCLI config with a `model: class_path: ...` section")
    return config


def callback_entry(config: Dict[str, Any]) -> Dict[str, Any]:
    """The config's AttentionRolloutCallback entry (`{class_path, init_args}`), or `{}`."""
    for entry in (config.get("trainer") or {}).get("callbacks") or []:
        if isinstance(entry, dict) and str(entry.get("class_path", "")).endswith("AttentionRolloutCallback"):
            return dict(entry)
    return {}


def build_section(section: Any, key: str, base: Union[type, Tuple[type, ...]], path: str) -> Any:
    """The object of a config's `{class_path, init_args}` section (named `key` in messages), built as
    LightningCLI builds it: dotted paths and nested `class_path`s in `init_args` become objects."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, key, required=True)
    try:
        parsed = parser.parse_object({key: section})
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # jsonargparse < 4.49
        return instantiate(parsed)[key]
    except Exception as error:  # jsonargparse reports bad class paths and init_args in many types
        raise CLIError(f"--config {path!r}: the {key} section cannot be built: {one_line(error)}") from None


def model_from_config(config: Dict[str, Any], path: str, datamodule: Any = None) -> nn.Module:
    """The module of the config's `model` section; with a `datamodule` that knows its `num_classes`, the
    model's `num_classes` argument (where it has one) takes it, as the training entry points link it
    (`lightning_rollout.data.linking`)."""
    section = config["model"]
    count = getattr(datamodule, "num_classes", None)
    if isinstance(section, dict) and isinstance(count, int) and not isinstance(count, bool):
        model_class = _class_of(section.get("class_path"))
        if model_class is not None and "num_classes" in inspect.signature(model_class).parameters:
            section = {**section, "init_args": {**(section.get("init_args") or {}), "num_classes": count}}
    return build_section(section, "model", nn.Module, path)


def _class_of(class_path: Any) -> Optional[type]:
    """The class a dotted `class_path` names, or `None` when it names none (build_section then says why)."""
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None
    return found if isinstance(found, type) else None


def datamodule_bases() -> Tuple[type, ...]:
    """`LightningDataModule` of every installed Lightning namespace (a config may use either)."""
    bases = []
    for namespace in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(namespace).LightningDataModule)
        except ImportError:
            continue
    return tuple(bases)


# ----------------------------------------------------------------------------- weights and models


def load_file(path: str) -> Any:
    """The object saved at `--checkpoint path` (a pickle, or a safetensors file)."""
    if not Path(path).is_file():
        raise CLIError(f"--checkpoint {path!r} is not a file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file as load_safetensors

            return load_safetensors(path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises anything from EOFError to UnpicklingError
        raise CLIError(f"--checkpoint {path!r} cannot be read as a checkpoint: {error}") from None


def load_weights(model: nn.Module, state: Any, path: str) -> None:
    """Loads a state dict (plain, under `state_dict`, or a LightningModule's `model.`-prefixed one)."""
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
        raise CLIError(f"--checkpoint {path!r} does not fit the model: {one_line(error)[:500]}") from None


def read_checkpoint(path: str) -> Dict[str, Any]:
    """The Lightning checkpoint at `CHECKPOINT path` (with `state_dict` and `global_step`)."""
    if not Path(path).is_file():
        raise CLIError(f"CHECKPOINT {path!r} is not a file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # unpickling raises anything from EOFError to UnpicklingError
        raise CLIError(f"CHECKPOINT {path!r} cannot be read: {error}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise CLIError(f"CHECKPOINT {path!r} is not a Lightning checkpoint (no 'state_dict' / 'global_step')")
    return checkpoint


def _import_object(path: str, argument: str) -> Any:
    module_name, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise CLIError(f"{argument} {path!r} cannot be imported: {error}") from None


def load_model(args: argparse.Namespace) -> Tuple[nn.Module, Dict[str, Any]]:
    """The model of `explain`'s arguments (eval mode, on the CPU) and what the config says about display.

    Returns:
        The model and `{"class_names", "mean", "std"}` found in `--config`'s callback entry (may be empty).
    """
    hints: Dict[str, Any] = {}
    config = None if args.config is None else read_config(args.config)
    if config is not None:
        entry = callback_entry(config).get("init_args") or {}
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
        cls = _import_object(args.module_class, "--module-class")
        if not callable(getattr(cls, "load_from_checkpoint", None)):
            raise CLIError(f"--module-class {args.module_class!r} is not a LightningModule class")
        load_file(checkpoint)  # a clear error for a missing or unreadable file first
        try:
            model = cls.load_from_checkpoint(checkpoint, map_location="cpu")
        except Exception as error:  # missing keys, wrong hyperparameters, not a Lightning checkpoint
            raise CLIError(f"--checkpoint {checkpoint!r} cannot be loaded into {args.module_class}: {error}") from None
    elif config is not None:
        model = model_from_config(config, args.config)
        if checkpoint is not None:
            load_weights(model, load_file(checkpoint), checkpoint)
    else:
        model = _timm_model(args)
        if checkpoint is not None:
            load_weights(model, load_file(checkpoint), checkpoint)
    return model.eval(), hints


def _timm_model(args: argparse.Namespace) -> nn.Module:
    """`--model`'s timm model, with `--num-classes`, `--image-size` and `--pretrained` (unless a checkpoint)."""
    import timm

    kwargs: Dict[str, Any] = {}
    if args.num_classes is not None:
        kwargs["num_classes"] = args.num_classes
    if args.image_size is not None:
        kwargs["img_size"] = args.image_size
    if not timm.is_model(args.model):
        raise CLIError(f"--model {args.model!r} is not a timm model name (see timm.list_models('vit_*'))")
    try:
        return timm.create_model(args.model, pretrained=args.pretrained and args.checkpoint is None, **kwargs)
    except Exception as error:  # hub downloads fail with many exception types
        if args.pretrained:
            raise CLIError(
                f"--pretrained weights of {args.model!r} cannot be loaded ({type(error).__name__}: {error}); "
                "without network access pass a local file with --checkpoint"
            ) from None
        raise CLIError(f"--model {args.model!r} cannot be built: {error}") from None


# ------------------------------------------------------------------------------ images and device


def find_images(paths: List[str]) -> Tuple[List[Tuple[Path, Path]], bool]:
    """`(file, name relative to the output folder)` for every image, and whether a folder was given."""
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


def read_image(path: Path, decode: bool = True) -> Any:
    """The image as RGB PIL image; with `decode=False` only its header is read (a quick check that it is one)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB") if decode else None
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise CLIError(f"PATH {str(path)!r} is not a readable image: {one_line(error)}") from None


def torch_device(text: str) -> torch.device:
    """`--device text` as a torch device, checked by allocating on it."""
    try:
        device = torch.device(text)
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:
        raise CLIError(f"--device {text!r} is not usable here: {error}") from None
    return device
