"""How the command line fails: `CLIError` for a bad argument or input, reported on one line."""

__all__ = ["CLIError", "one_line"]


class CLIError(Exception):
    """A bad argument or input; `lightning_rollout.cli.main` prints it on one line and exits with status 2."""


def one_line(text: object) -> str:
    """`text` with every run of whitespace (newlines too) made one space."""
    return " ".join(str(text).split())
