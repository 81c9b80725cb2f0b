"""`lightning-rollout`: the command line (`explain` image files, `replay` checkpoints).

- `lightning-rollout explain PATH...`: one overlay PNG per image file and method, and the top-k
  predictions, for a timm model, a Lightning checkpoint or a plain state dict.
- `lightning-rollout replay CHECKPOINTS... --config CONFIG`: the pictures and scalars
  `lightning_rollout.AttentionRolloutCallback` would have logged, computed afterwards from a run's
  checkpoints (in step order) and written to TensorBoard.

Both also run as `python -m lightning_rollout`. Errors in the arguments or inputs end the command with
exit status 2 and one line on stderr naming the argument or file.

The rooms: `parser` (the arguments), `loading` (configs, models, checkpoints, image files), `explain_cmd`
and `replay_cmd` (one sub-command each), `entry` (`main`), `errors` (`CLIError`). Only the standard library
is imported until a sub-command is named, so `lightning-rollout --help` answers at once; a sub-command's
options take the method names and summaries from the method registry (`lightning_rollout.methods`).
"""

from lightning_rollout.cli.entry import main
from lightning_rollout.cli.errors import CLIError
from lightning_rollout.cli.parser import build_parser

__all__ = ["CLIError", "build_parser", "main"]
