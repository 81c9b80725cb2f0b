"""Old home of the demo's data, split into `shapes`, `scenes` and `datamodules`; each name warns once and forwards
for one release."""

from lightning_rollout.core.deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "COLOURS": "lightning_rollout.demo.scenes",
        "SyntheticScenes": "lightning_rollout.demo.scenes",
        "TwoObjectScenes": "lightning_rollout.demo.scenes",
        "TARGET_SHAPES": "lightning_rollout.demo.shapes",
        "DISTRACTOR_SHAPES": "lightning_rollout.demo.shapes",
        "SyntheticScenesDataModule": "lightning_rollout.demo.datamodules",
        "TwoObjectScenesDataModule": "lightning_rollout.demo.datamodules",
        "IMAGENET_MEAN": "lightning_rollout.data.image_folder",
        "IMAGENET_STD": "lightning_rollout.data.image_folder",
    },
)
