"""Old home of the demo's data, now split into `shapes`, `canvas`, `scenes` and `datamodules`; each old name
warns once and forwards for one release."""

from lightning_rollout.core.deprecation import moved_names

__getattr__ = moved_names(
    __name__,
    {
        "COLOURS": "lightning_rollout.demo.canvas",
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
