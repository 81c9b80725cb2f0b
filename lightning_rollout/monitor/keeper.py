"""Keeping the fixed batch: chosen from batches Lightning already loads, frozen, shared across ranks.

The callback hands every validation (or test) batch of dataloader 0 to `FixedBatchKeeper`, which
copies the candidate samples it may still need to the CPU. Collection spans the sanity check and, when that
is not enough, the first validation epoch; the batch never changes afterwards. With labels the default
selection spreads over classes: round-robin over the classes in the order they were met (one sample of each,
then a second of each, ...), over the classes met in the sanity check when it met two or more, else over
those of the first validation epoch. For a sharded model every rank must join the side pass on the same samples:
`FixedBatchKeeper.share` sends rank 0's batch to the others once.
"""

import math
from typing import Any, Dict, Hashable, List, Optional

import torch
from torch import Tensor

from lightning_rollout.core.distributed import broadcast_from_rank_zero
from lightning_rollout.monitor.batch import (
    BatchKey,
    FixedBatch,
    count_samples,
    is_class_indices,
    pick_labels,
    take_samples,
)
from lightning_rollout.monitor.notices import Warn

SAMPLE_SELECTIONS = ("per_class", "first")


class FixedBatchKeeper:
    """Collects, freezes and shares the samples the callback explains every logged epoch.

    Args:
        num_samples: how many samples to keep.
        image_key: where the images sit in a batch (see `take_samples`).
        label_key: where the labels sit.
        mask_key: where the object masks sit.
        needs_labels: whether the batch must carry labels (``target="label"``).
        sample_selection: ``"per_class"`` (round-robin over the classes met, when the batches carry class
            indices; otherwise as ``"first"``) or ``"first"`` (the first ``num_samples`` samples).
        warn: ``warn(key, message)``, warning once per key.
    """

    def __init__(
        self,
        num_samples: int,
        image_key: BatchKey,
        label_key: BatchKey,
        mask_key: BatchKey,
        needs_labels: bool,
        sample_selection: str,
        warn: Warn,
    ) -> None:
        self.num_samples = num_samples
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key
        self.needs_labels = needs_labels
        self.sample_selection = sample_selection
        self.warn = warn
        self.num_classes: Optional[int] = None  # the model's, when known (set in the callback's setup)
        self.batch: Optional[FixedBatch] = None
        self.frozen = False
        self.loader_batch_size: Optional[int] = None  # the first collected batch's size
        self._candidates: Dict[Hashable, List[FixedBatch]] = {}  # one-sample batches per class, in order met
        self._position = 0  # samples of dataloader 0 seen in the current validation/test epoch
        self._considered = 0  # samples of the loader's order considered already (a new epoch starts over)
        self._shared = False  # whether rank 0 has sent the batch to the other ranks (sharded models)

    @property
    def num_candidates(self) -> int:
        """How many one-sample candidates are held on the CPU while the samples are being chosen."""
        return sum(len(found) for found in self._candidates.values())

    def kept(self) -> FixedBatch:
        """The kept samples.

        Raises:
            RuntimeError: when no sample has been kept yet (no validation batch seen, or `stop` was called).
        """
        if self.batch is None:
            raise RuntimeError("no samples are kept yet: the fixed batch fills from validation (evaluation) batches")
        return self.batch

    def start_epoch(self) -> None:
        """A validation or test epoch starts: the loader starts over."""
        self._position = 0

    def collect(self, batch: Any, dataloader_idx: int, is_global_zero: bool) -> None:
        """Keeps the candidates of ``batch`` still needed (rank 0, dataloader 0, until frozen).

        Raises:
            ValueError: if labels are needed but the batch has none.
        """
        if self.frozen or dataloader_idx != 0 or not is_global_zero:
            return
        size = count_samples(batch, self.image_key)
        # An epoch after the sanity check starts the loader over: skip the samples considered already.
        start, self._position = max(0, self._considered - self._position), self._position + size
        if start >= size or self._full():
            return
        self._considered = self._position
        labels = pick_labels(batch, self.label_key)
        if self.needs_labels and labels is None:
            raise ValueError(
                "`target`='label' but the validation batch has no labels; set `label_key` or use `target`='prediction'"
            )
        if self.batch is None:
            self.loader_batch_size = size
        keys: List[Optional[Hashable]] = [None] * (size - start)
        if self.sample_selection == "per_class" and labels is not None and is_class_indices(labels):
            keys = labels[start:].tolist()
        wanted, found = [], {key: len(value) for key, value in self._candidates.items()}
        for index, key in enumerate(keys, start):
            if key not in found and len(found) >= self.num_samples:
                continue  # round-robin reaches no class met after the first num_samples
            # Round-robin over m classes takes at most num_samples - (m - 1) samples of any one class.
            if found.get(key, 0) < self.num_samples - len(found | {key: 0}) + 1:
                found[key] = found.get(key, 0) + 1
                wanted.append((index, key))
        if not wanted:
            return
        samples = take_samples(
            batch, size, self.image_key, self.label_key, self.mask_key, indices=[index for index, _ in wanted]
        )
        for row, (_, key) in enumerate(wanted):
            self._candidates.setdefault(key, []).append(samples.select(slice(row, row + 1)))
        limit = self.num_samples - len(self._candidates) + 1
        self._candidates = {key: kept[:limit] for key, kept in self._candidates.items()}
        self.batch = self._select()

    def _full(self) -> bool:
        """``"first"`` needs nothing more once it holds ``num_samples``; ``"per_class"`` sees the whole collection."""
        return self.sample_selection == "first" and self.batch is not None and len(self.batch) >= self.num_samples

    def _select(self) -> FixedBatch:
        """Round-robin over the candidates' classes in the order met, at most ``num_samples``."""
        chosen: List[FixedBatch] = []
        rounds = max(len(found) for found in self._candidates.values())
        for turn in range(rounds):
            chosen.extend(found[turn] for found in self._candidates.values() if turn < len(found))
        chosen = chosen[: self.num_samples]

        def cat(field: str) -> Optional[Tensor]:
            values = [getattr(sample, field) for sample in chosen]
            return None if any(value is None for value in values) else torch.cat(values)

        return FixedBatch(torch.cat([sample.images for sample in chosen]), cat("labels"), cat("masks"))

    def classes(self) -> List[Hashable]:
        """The classes among the kept samples (``[None]`` when they are not told apart by class)."""
        if self.batch is None or self.batch.labels is None or not is_class_indices(self.batch.labels):
            return [None]
        return sorted(set(self.batch.labels.tolist()))

    def stop(self) -> None:
        """Drops the batch and collects no more: nothing is explained in this run."""
        self.batch, self.frozen, self._candidates = None, True, {}

    def end_sanity_check(self) -> bool:
        """Freezes the batch after the sanity check when it is complete: ``num_samples`` samples and, with
        ``"per_class"``, at least 2 classes (a sanity check of one class, as from a validation set sorted by
        class, leaves the choice to the first validation epoch). Returns whether it did."""
        complete = self.batch is not None and len(self.batch) >= self.num_samples
        if complete and self.sample_selection == "per_class" and self.classes() != [None]:
            complete = len(self.classes()) >= min(2, self.num_classes or 2)
        if complete:
            self._freeze()
        return complete

    def not_ready_before_training(self) -> Optional[str]:
        """Why the batch is not final when training starts (so no initial maps), or ``None`` when it is."""
        if self.batch is None:
            return "it needs the sanity check (num_sanity_val_steps > 0) to capture the validation batch first"
        if self.frozen:
            return None
        if len(self.batch) >= self.num_samples:
            return (
                f"the sanity check met only class {self.classes()[0]}: the fixed batch is spread over the classes "
                "of the first validation epoch. Shuffle the validation set's order, raise `num_sanity_val_steps` "
                "or set `sample_selection`='first' to log them"
            )
        # The batch grows in the first validation epoch; an initial column of fewer samples could not stand in
        # the filmstrip beside the later ones.
        needed = math.ceil(self.num_samples / (self.loader_batch_size or 1))
        return (
            f"the sanity check captured only {len(self.batch)} of `num_samples`={self.num_samples} samples (the "
            f"filmstrip shows the same samples in every column). Set `num_sanity_val_steps` >= {needed} to log them"
        )

    def freeze(self, is_global_zero: bool, world_size: int) -> None:
        """Ends collection after the first validation (or test) epoch; says why when samples are missing and
        when they all show one class."""
        if self.frozen:
            return
        self._freeze(world_size)
        if self.batch is not None and is_global_zero and len(self.batch) < self.num_samples:
            self.warn(
                "short-batch",
                f"the first validation epoch gave only {len(self.batch)} samples for `num_samples`="
                f"{self.num_samples} (dataloader 0{', on rank 0' if world_size > 1 else ''}); "
                "the maps show these. Check `limit_val_batches` and the validation set's size",
            )

    def _freeze(self, world_size: int = 1) -> None:
        self.frozen, self._candidates = self.batch is not None, {}
        classes = self.classes()
        if self.batch is not None and len(self.batch) > 1 and classes != [None] and len(classes) == 1:
            how = (
                "the first validation epoch" + (", on rank 0," if world_size > 1 else "")
                if self.sample_selection == "per_class"
                else "the first samples (`sample_selection`='first')"
            )
            self.warn(
                "one-class",
                f"all {len(self.batch)} kept samples are of class {classes[0]}: {how} met no other class. "
                "Check `limit_val_batches` and the validation set's order",
            )

    def share(self, is_global_zero: bool, ready: bool) -> bool:
        """Rank 0's go/no-go and, the first time, its fixed batch, on every rank (a collective call)."""
        message = ((self.batch if not self._shared else True) if ready else None) if is_global_zero else None
        message = broadcast_from_rank_zero(message)
        if message is None:
            return False
        if isinstance(message, FixedBatch):
            self.batch, self.frozen, self._shared = message, True, True
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"batch": None if self.batch is None else self.batch.state_dict()}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        batch = state_dict.get("batch")
        self.batch = None if batch is None else FixedBatch(batch["images"], batch.get("labels"), batch.get("masks"))
        self.frozen = self.batch is not None
