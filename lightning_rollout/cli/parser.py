"""The `lightning-rollout` argument parser: the `explain` and `replay` sub-commands and their options.

The top level (the sub-commands' names and one-line descriptions) is standard library only, so
`lightning-rollout --help` answers without importing torch. A sub-command's own options are built when it is
named: its `--method` and `--head-fusion` choices and the methods' one-line summaries come from the method
registry (`lightning_rollout.methods`, which imports torch), so a method registered at run time is listed
and accepted like the built-in ones.
"""

import argparse
import shutil
import textwrap
from typing import Any, Dict, NoReturn, Optional, Sequence

from lightning_rollout.cli.errors import one_line

__all__ = ["COMMANDS", "Parser", "build_parser", "command_of"]

COMMANDS = {
    "explain": "write overlay PNGs of image files and print the top-k predictions",
    "replay": "log a run's checkpoints' maps to TensorBoard, as the callback would have",
}
"""The sub-commands and their one-line descriptions (the top-level `--help`)."""


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


def command_of(argv: Sequence[str]) -> Optional[str]:
    """The sub-command `argv` names (its first word that is no option), or `None` (none, an unknown one, or a
    top-level `--help` before it)."""
    for word in argv:
        if word in ("-h", "--help"):
            return None
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(commands: Optional[Sequence[str]] = None) -> argparse.ArgumentParser:
    """The `lightning-rollout` argument parser.

    Args:
        commands: the sub-commands given their options (default: all); the others are only listed, by name and
            description. Building any imports the method registry (torch); `[]` imports nothing beyond the
            standard library.
    """
    full = set(COMMANDS if commands is None else commands)
    parser = Parser(
        prog="lightning-rollout",
        description="Explanation maps of Vision Transformers (attention rollout and other methods) from the "
        "command line.",
        epilog="Run 'lightning-rollout explain --help' or 'lightning-rollout replay --help' for the options "
        "and the methods.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, help_line in COMMANDS.items():
        if name not in full:
            subparsers.add_parser(name, help=help_line, description=help_line)
        elif name == "explain":
            _add_explain(subparsers.add_parser(name, help=help_line, **_explain_text()))
        else:
            _add_replay(subparsers.add_parser(name, help=help_line, **_replay_text()))
    return parser


def _methods_section() -> str:
    """Every registered method with its one-line summary, wrapped as argparse wraps its help."""
    from lightning_rollout.methods import method_summaries

    summaries = method_summaries()
    width = max(shutil.get_terminal_size().columns - 2, 40)  # argparse's own width
    column = max(map(len, summaries)) + 4
    lines = ["methods (--method):"]
    for name, summary in summaries.items():
        lines.append(textwrap.fill(
            summary or "-", width, initial_indent=f"  {name}".ljust(column), subsequent_indent=" " * column,
            break_long_words=False, break_on_hyphens=False,
        ))
    return "\n".join(lines)


def _explain_text() -> Dict[str, Any]:
    return dict(
        description="Explain image files: one overlay PNG per image and method in --output, and the\n"
        "top-k predictions printed per image. The model is a timm model (--model), a Lightning\n"
        "checkpoint (--checkpoint with --module-class or --config) or a plain state dict\n"
        "(--checkpoint with --model). Images are preprocessed with the model's timm data config.",
        epilog=_methods_section() + "\n\nExamples:\n"
        "  lightning-rollout explain cat.jpg --model vit_base_patch16_224 --pretrained\n"
        "  lightning-rollout explain photos/ --checkpoint last.ckpt --config configs/demo.yaml "
        "--method rollout gradcam\n"
        "  lightning-rollout explain a.png --checkpoint weights.pth --model vit_small_patch16_224 "
        "--num-classes 10",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _replay_text() -> Dict[str, Any]:
    return dict(
        description="Rebuild model and data module from a LightningCLI config, take the validation\n"
        "samples the AttentionRolloutCallback would keep (settings from the config's callback entry,\n"
        "else the callback's defaults), explain them with each checkpoint in global-step order and\n"
        "write the samples, the filmstrip (one column per checkpoint) and the scalars to TensorBoard.",
        epilog=_methods_section() + "\n\nExample:\n"
        "  lightning-rollout replay logs/run/checkpoints/*.ckpt --config configs/demo.yaml --log-dir logs/replay\n"
        "  tensorboard --logdir logs/replay --samples_per_plugin images=100",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_explain(ex: argparse.ArgumentParser) -> None:
    from lightning_rollout.methods import HEAD_FUSIONS, method_names

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
        "--method", nargs="+", default=["rollout"], choices=method_names(), metavar="METHOD",
        help="one or several of the methods listed below (default: rollout)",
    )
    expl.add_argument(
        "--head-fusion", default="mean", choices=list(HEAD_FUSIONS),
        help=f"how rollout fuses the heads: {', '.join(HEAD_FUSIONS)} (default: mean)",
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


def _add_replay(rp: argparse.ArgumentParser) -> None:
    from lightning_rollout.methods import method_names

    rp.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="Lightning checkpoints of one run")
    rp.add_argument("--config", required=True, metavar="YAML", help="the LightningCLI config of the run")
    rp.add_argument(
        "--log-dir", default="logs/replay", metavar="DIR", help="TensorBoard log dir (default: logs/replay)"
    )
    rp.add_argument(
        "--method", nargs="+", choices=method_names(), metavar="METHOD",
        help="methods (listed below) when the config has no AttentionRolloutCallback entry (default: rollout)",
    )
    rp.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
