"""The `lightning-rollout` argument parser: the `explain` and `replay` sub-commands and their options.

Standard library only: `lightning-rollout --help` answers without importing torch.
"""

import argparse
from typing import Any, NoReturn, Optional, Sequence

from lightning_rollout.cli.errors import CLIError, one_line

__all__ = ["HEAD_FUSION_NAMES", "METHOD_NAMES", "build_parser", "check_methods"]

METHOD_NAMES = ("rollout", "grad_rollout", "chefer", "gradcam", "legrad", "attention")
"""The methods `--help` lists; `lightning_rollout.methods.METHODS` (which imports torch) decides what runs,
and tests/test_cli.py checks that this list names each of them."""

HEAD_FUSION_NAMES = ("mean", "max", "min")
"""`--head-fusion` choices, as `lightning_rollout.methods.HEAD_FUSIONS` (checked likewise)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit status 2), naming the way to the help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see '{self.prog} --help')\n")


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


def check_methods(methods: Optional[Sequence[str]]) -> None:
    """Raises `CLIError` for a `--method` name the registry does not know (imports the registry)."""
    from lightning_rollout.methods import method_names

    for method in methods or []:
        if method not in method_names():
            raise CLIError(f"--method {method!r} is not a method; choose from {', '.join(method_names())}")


def build_parser() -> argparse.ArgumentParser:
    """The `lightning-rollout` argument parser (`explain` and `replay` sub-commands)."""
    parser = Parser(
        prog="lightning-rollout",
        description="Explanation maps of Vision Transformers: attention rollout, gradient rollout, "
        "Chefer relevance and ViT Grad-CAM.",
        epilog="Run 'lightning-rollout explain --help' or 'lightning-rollout replay --help' for the options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="{explain,replay}")
    _add_explain(commands)
    _add_replay(commands)
    return parser


def _add_explain(commands: Any) -> None:
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


def _add_replay(commands: Any) -> None:
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
