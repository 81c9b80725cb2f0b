"""`lightning-rollout`: the command line (`explain` image files, `replay` checkpoints).

Only the standard library is imported until a sub-command runs, so `--help` answers at once.
"""

from lightning_rollout.cli.commands import CLIError, build_parser, main

__all__ = ["CLIError", "build_parser", "main"]
