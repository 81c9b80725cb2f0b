"""Scores of explanation maps: localisation against object masks, faithfulness by perturbation, and the
model-randomisation sanity check.

- `localisation`: energy in the mask, pointing game, entropy, and class
  discrimination on scenes of several classes (need masks, except the entropy).
- `video`: the same per frame, for video maps and per-frame masks.
- `faithfulness`: deletion and insertion AUCs (need the model, no masks).
- `lightning_rollout.metrics.saco_score`: SaCo, whether the amounts of salience a map gives pixel groups match
  the drops of the prediction when each group is removed (Wu et al. 2024; needs the model, no masks).
- `randomisation`: rank correlation between maps, and a re-initialised copy
  of a model (Adebayo et al. 2018).
"""

from lightning_rollout.metrics.faithfulness import deletion_insertion_auc, perturbation_curves
from lightning_rollout.metrics.localisation import (
    class_discrimination,
    energy_in_mask,
    mask_area_fraction,
    mask_to_grid,
    normalized_entropy,
    pointing_game,
)
from lightning_rollout.metrics.randomisation import randomized_copy, rank_correlation
from lightning_rollout.metrics.saco_score import saco
from lightning_rollout.metrics.video import frame_maps, localisation_over_frames

__all__ = [
    "class_discrimination",
    "deletion_insertion_auc",
    "energy_in_mask",
    "frame_maps",
    "localisation_over_frames",
    "mask_area_fraction",
    "mask_to_grid",
    "normalized_entropy",
    "perturbation_curves",
    "pointing_game",
    "randomized_copy",
    "rank_correlation",
    "saco",
]
