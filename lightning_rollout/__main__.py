"""``python -m lightning_rollout``: the ``lightning-rollout`` command line."""

import sys

from lightning_rollout.cli import main

sys.exit(main())
