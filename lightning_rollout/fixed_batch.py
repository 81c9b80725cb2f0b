"""Keeping the fixed batch: collected from batches Lightning already loads, frozen, shared across ranks.

The callback hands every validation (or test) batch of dataloader 0 to :class:`FixedBatchKeeper`, which
copies the samples it still needs to the CPU. Collection spans the sanity check and, when that was too
short, the first validation epoch; the batch never changes afterwards. For a sharded model every rank must
join the side pass on the same samples: :meth:`FixedBatchKeeper.share` sends rank 0's batch to the others
once.
"""

from typing import Any, Callable, Dict, Optional

from lightning_rollout.batch import BatchKey, FixedBatch, count_samples, take_samples
from lightning_rollout.distributed import broadcast_from_rank_zero

Warn = Callable[[str, str], None]
"""``warn(key, message)``: warns once per key."""


class FixedBatchKeeper:
    """Collects, freezes and shares the samples the callback explains every logged epoch.

    Args:
        num_samples: how many samples to keep.
        image_key, label_key, mask_key: where each field sits in a batch (see
            :func:`~lightning_rollout.batch.take_samples`).
        needs_labels: whether the batch must carry labels (``target="label"``).
        check_first: called with the first kept samples, before anything else happens with them; raises
            when they cannot be explained (e.g. not the model's float input).
        warn: ``warn(key, message)``, warning once per key.
    """

    def __init__(
        self,
        num_samples: int,
        image_key: BatchKey,
        label_key: BatchKey,
        mask_key: BatchKey,
        needs_labels: bool,
        check_first: Callable[[FixedBatch], None],
        warn: Warn,
    ) -> None:
        self.num_samples = num_samples
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key
        self.needs_labels = needs_labels
        self.check_first = check_first
        self.warn = warn
        self.batch: Optional[FixedBatch] = None
        self.frozen = False
        self.loader_batch_size: Optional[int] = None  # the first collected batch's size
        self._seen = 0  # samples of dataloader 0 seen in the current validation/test epoch
        self._shared = False  # whether rank 0 has sent the batch to the other ranks (sharded models)

    def start_epoch(self) -> None:
        """A validation or test epoch starts: the loader starts over."""
        self._seen = 0

    def collect(self, batch: Any, dataloader_idx: int, is_global_zero: bool) -> None:
        """Keeps the samples of ``batch`` still needed (rank 0, dataloader 0, until frozen).

        Raises:
            ValueError: if labels are needed but the batch has none, or the first samples cannot be explained.
        """
        if self.frozen or dataloader_idx != 0 or not is_global_zero:
            return
        kept = 0 if self.batch is None else len(self.batch)
        if kept >= self.num_samples:
            return
        # An epoch after the sanity check starts the loader over: skip the samples kept already.
        size = count_samples(batch, self.image_key)
        start, self._seen = max(0, kept - self._seen), self._seen + size
        if start >= size:
            return
        samples = take_samples(batch, self.num_samples - kept, self.image_key, self.label_key, self.mask_key, start)
        if self.needs_labels and samples.labels is None:
            raise ValueError(
                "`target`='label' but the validation batch has no labels; set `label_key` or use "
                "`target`='prediction'"
            )
        if self.batch is None:
            self.check_first(samples)
            self.loader_batch_size = size
        self.batch = samples if self.batch is None else self.batch.extend(samples, self.num_samples)

    def end_sanity_check(self) -> None:
        """A short sanity check may leave the batch incomplete: the first real epoch fills it up."""
        self.frozen = self.batch is not None and len(self.batch) >= self.num_samples

    def freeze(self, is_global_zero: bool, world_size: int) -> None:
        """Ends collection after the first validation (or test) epoch; says why when samples are missing."""
        if self.frozen:
            return
        self.frozen = self.batch is not None
        if self.batch is not None and len(self.batch) < self.num_samples and is_global_zero:
            self.warn(
                "short-batch",
                f"the first validation epoch gave only {len(self.batch)} samples for `num_samples`="
                f"{self.num_samples} (dataloader 0{', on rank 0' if world_size > 1 else ''}); "
                "the maps show these. Check `limit_val_batches` and the validation set's size",
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
