"""``IISDataModule``: training data for every method (protocol.md §C).

Batch size is **per device**: the global batch is ``batch_size * devices * num_nodes``. The
reference recipes quote global batches (SimpleClick: 32 over 4 GPUs = 8 per device here).

Every item is drawn from ``(seed, epoch, index)`` alone (source index, augmentation and clicks),
and the loader does not shuffle: the epoch's random draws replace shuffling, so a resumed run
(and every DDP rank, which Lightning gives a strided share of indices) sees exactly the data the
uninterrupted run would have seen.

The loader is resumable (:class:`ResumableLoader`): a checkpoint records the epoch and the number of batches
the training loop has consumed in it; loaded, the next iteration starts at that batch of that epoch (the
items themselves need no state, they are a function of their index). So a resume from a mid-epoch checkpoint
continues exactly where the run was killed, as Lightning's stateful-dataloader protocol
(``state_dict``/``load_state_dict`` on the loader) intends.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..data.train import (AUGMENTATIONS, CocoJsonTrain, CocoLvis, FolderTrain, MultiPointSampler, SBDTrain,
                          SyntheticShapesTrain, SyntheticTrain, TrainDataset)

__all__ = ["IISDataModule", "ResumableLoader", "SOURCES"]

SOURCES = {
    "synthetic": SyntheticShapesTrain,  # same family as the `synthetic` eval set, other seed
    "synthetic_multi": SyntheticTrain,  # several labelled objects per image (sampler merges, "other" negatives)
    "sbd": SBDTrain,
    "cocolvis": CocoLvis,
    "folder": FolderTrain,
    "coco_json": CocoJsonTrain,
}


class _SkipBatches:
    """A batch sampler without its first ``skip`` batches (index lists only: no item is loaded to skip it)."""

    def __init__(self, batches: Any, skip: int) -> None:
        self.batches, self.skip = batches, skip

    def __iter__(self) -> Iterator[list[int]]:
        return itertools.islice(iter(self.batches), self.skip, None)

    def __len__(self) -> int:
        return max(len(self.batches) - self.skip, 0)


class ResumableLoader(DataLoader):
    """The training loader, with the position in the epoch as its state.

    ``position()`` returns ``(epoch, batches consumed by the training loop in it)``, read from the trainer when
    a checkpoint is written (the loader itself cannot count: Lightning and the workers fetch ahead).
    ``load_state_dict`` makes the next ``iter`` continue there: the dataset's epoch is set and the epoch's first
    ``batches`` batches are skipped, at the level of the batch sampler (so also on a DDP rank, whose sampler
    Lightning replaces); a finished epoch continues with the next one.
    """

    def __init__(self, dataset: Any, position: Callable[[], tuple[int, int] | None] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.position = position
        self._pending: tuple[int, int] | None = None
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        pos = self.position() if self.position is not None else None
        return {} if pos is None else {"epoch": int(pos[0]), "batches": int(pos[1])}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if "epoch" in state_dict:
            self._pending = (int(state_dict["epoch"]), int(state_dict["batches"]))

    @property
    def _index_sampler(self):  # what DataLoader's iterator draws its index lists from
        base = super()._index_sampler
        return _SkipBatches(base, self._skip) if self._skip else base

    def __iter__(self):
        if self._pending is None:
            return super().__iter__()
        epoch, batches = self._pending
        self._pending = None
        mid_epoch = batches < len(super()._index_sampler)
        self.dataset.set_epoch(epoch if mid_epoch else epoch + 1)
        if not mid_epoch:  # the next epoch's iterator draws its worker seed from the restored RNG, as uninterrupted
            return super().__iter__()
        # mid-epoch, the uninterrupted run drew that seed before the checkpoint's RNG state: do not draw again
        state = torch.get_rng_state()
        self._skip = batches
        try:
            return super().__iter__()  # the iterator keeps the shortened sampler
        finally:
            self._skip = 0  # len(loader) stays the epoch's length (Lightning counts batch_idx on from `batches`)
            torch.set_rng_state(state)


class IISDataModule(L.LightningDataModule):
    """Training DataModule.

    Args:
        source: ``synthetic``, ``synthetic_multi``, ``sbd``, ``cocolvis``, ``folder`` or ``coco_json``.
        root: dataset folder (SBD ``benchmark_RELEASE/dataset``; C+L root holding ``train/``; a
            folder with ``images/`` + ``masks/``); not used by ``synthetic``.
        source_kwargs: extra arguments of the source (e.g. ``samples_weights``, ``stuff_prob``,
            ``annotation_json``, synthetic ``n``/``size``).
        augment: ``sbd``, ``cocolvis`` or ``none`` (protocol.md §C.6).
        crop_size: training crop (h, w); 448x448 for SimpleClick ViTs, 320x480 RITM HRNet.
        epoch_len: items per epoch (C+L 30000); <= 0 means the source length.
        min_object_area: 80 (SBD) / 1000 (C+L).
        keep_background_prob: 0.01 (SBD iter-mask) / 0.05 (C+L).
        sampler: ``MultiPointSampler`` keyword arguments (defaults = §C.4).
        batch_size: per device.
        num_workers, pin_memory: DataLoader settings.
        seed: base seed of all data randomness.
    """

    def __init__(
        self,
        source: str = "synthetic",
        root: str | None = None,
        source_kwargs: dict[str, Any] | None = None,
        augment: str = "cocolvis",
        crop_size: tuple[int, int] = (448, 448),
        epoch_len: int = -1,
        min_object_area: int = 80,
        keep_background_prob: float = 0.0,
        sampler: dict[str, Any] | None = None,
        batch_size: int = 8,
        num_workers: int = 4,
        pin_memory: bool = True,
        seed: int = 0,
    ):
        super().__init__()
        if source not in SOURCES:
            raise ValueError(f"data.source: {source!r} is not one of {sorted(SOURCES)}")
        if augment != "none" and augment not in AUGMENTATIONS:
            raise ValueError(f"data.augment: {augment!r} is not one of {sorted(AUGMENTATIONS)} or 'none'")
        self.save_hyperparameters()
        self.train_set: TrainDataset | None = None

    def _source(self):
        h = self.hparams
        kw = dict(h.source_kwargs or {})
        if h.source in ("synthetic", "synthetic_multi"):
            return SOURCES[h.source](**kw)
        if h.source == "coco_json":
            return CocoJsonTrain(**kw)
        if not h.root:
            raise ValueError(f"data.root: required for source {h.source!r}")
        return SOURCES[h.source](h.root, **kw)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        h = self.hparams
        src = self._source()
        from ..data.train import require_valid_source  # every item decodes and has a valid mask, before step 1
        require_valid_source(src)
        aug = None if h.augment == "none" else AUGMENTATIONS[h.augment](tuple(h.crop_size))
        # always redraw the source index per item (uniform, or by the source's weights): no shuffle
        epoch_len = h.epoch_len if h.epoch_len > 0 else len(src)
        self.train_set = TrainDataset(src, aug, MultiPointSampler(**(h.sampler or {})), epoch_len=epoch_len,
                                      min_object_area=h.min_object_area, keep_background_prob=h.keep_background_prob,
                                      seed=h.seed)

    def set_epoch(self, epoch: int) -> None:
        if self.train_set is not None:
            self.train_set.set_epoch(epoch)

    def train_dataloader(self) -> DataLoader:
        h = self.hparams
        return ResumableLoader(self.train_set, position=self._position, batch_size=h.batch_size, shuffle=False,
                               drop_last=True, num_workers=h.num_workers, pin_memory=h.pin_memory,
                               persistent_workers=False)  # workers re-fork each epoch and see set_epoch

    def _position(self) -> tuple[int, int] | None:
        """(epoch, training batches completed in it) of the running fit, for the loader's checkpoint state."""
        trainer = getattr(self, "trainer", None)
        if trainer is None or self.train_set is None:
            return None
        # the epoch whose stream the loader iterates (trainer.current_epoch already counts a finished epoch at
        # on_train_end); processed: the batches whose step ran (a save in on_train_batch_end includes the current)
        return self.train_set.epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed
