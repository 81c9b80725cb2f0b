"""`python -m lightning_rollout.evaluation`: the evaluation table of a checkpoint."""

import sys

from lightning_rollout.evaluation.table import main

main(sys.argv[1:])
