"""Offline evaluation of explanation methods: one table of faithfulness, localisation and randomisation.

`python -m lightning_rollout.evaluation --config CONFIG --ckpt_path CKPT` writes it; `evaluate` works on
tensors.
"""

from lightning_rollout.evaluation.table import COLUMNS, FLOORS, evaluate, format_markdown, main, save_table

__all__ = ["COLUMNS", "FLOORS", "evaluate", "format_markdown", "main", "save_table"]
