"""The `lightning-rollout` entry point: parse the arguments, run the sub-command, report errors on one line."""

import sys
from typing import Optional, Sequence

from lightning_rollout.cli.errors import CLIError, one_line
from lightning_rollout.cli.parser import build_parser, command_of

__all__ = ["main"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs `lightning-rollout` on `argv` (default: the command line); returns the exit status.

    Only the named sub-command's options are built (importing the method registry), so the top-level `--help`
    imports nothing beyond the standard library. A `CLIError` ends the command with exit status 2 and one line
    on stderr.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    parser = build_parser([] if command is None else [command])
    args = parser.parse_args(argv)
    try:
        if args.command == "explain":
            from lightning_rollout.cli.explain_cmd import run_explain

            run_explain(args)
        else:
            from lightning_rollout.cli.replay_cmd import run_replay

            run_replay(args)
    except CLIError as error:
        parser.exit(2, f"lightning-rollout {args.command}: error: {one_line(error)}\n")
    return 0
