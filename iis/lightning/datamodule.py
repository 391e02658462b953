"""``IISDataModule``: training data for every method (protocol.md §C).

Batch size is **per device**: the global batch is ``batch_size * devices * num_nodes``. The
reference recipes quote global batches (SimpleClick: 32 over 4 GPUs = 8 per device here).

Every item is drawn from ``(seed, epoch, index)`` alone (source index, augmentation and clicks),
and the loader does not shuffle: the epoch's random draws replace shuffling, so a resumed run
(and every DDP rank, which Lightning gives a strided share of indices) sees exactly the data the
uninterrupted run would have seen.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from ..data.train import (AUGMENTATIONS, CocoJsonTrain, CocoLvis, FolderTrain, MultiPointSampler, SBDTrain,
                          SyntheticShapesTrain, SyntheticTrain, TrainDataset)

__all__ = ["IISDataModule", "SOURCES"]

SOURCES = {
    "synthetic": SyntheticShapesTrain,  # same family as the `synthetic` eval set, other seed
    "synthetic_multi": SyntheticTrain,  # several labelled objects per image (sampler merges, "other" negatives)
    "sbd": SBDTrain,
    "cocolvis": CocoLvis,
    "folder": FolderTrain,
    "coco_json": CocoJsonTrain,
}


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
        return DataLoader(self.train_set, batch_size=h.batch_size, shuffle=False, drop_last=True,
                          num_workers=h.num_workers, pin_memory=h.pin_memory,
                          persistent_workers=False)  # workers re-fork each epoch and see set_epoch
