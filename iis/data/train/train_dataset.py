"""`TrainDataset`: source -> augmentation -> small-object filter -> click sampler (protocol.md §C.1).

Reproducibility: every item draws from ``numpy.random.default_rng([seed, epoch, index])`` and nothing
else (the index redraw, the C+L stuff draw, the augmentation seed, the keep-background draw and the
clicks), so a resumed run at the same epoch sees the same data and augmentations. The reference code
seeds nothing (§C.7). Call `set_epoch` at the start of each epoch; with DataLoader workers this only
reaches the workers when they are re-created each epoch (``persistent_workers=False``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from iis.data.train.augment import augment_sample
from iis.data.train.sample import TrainSample
from iis.data.train.sampler import MultiPointSampler

__all__ = ["TrainDataset"]


class TrainDataset(Dataset):
    """Training items ``{'image': (3, H, W) float32 in [0, 1], 'points': (2N, 3) float32, 'mask': (1, H, W)}``.

    ``points`` rows are ``(x, y, label)`` (label 1 positive block, 0 negative block, -1 padding; see
    `MultiPointSampler`); ``mask`` is 1 object / 0 background / -1 ignore.

    Args:
        source: a `TrainSource` (``len`` + ``get(index, rng)``; optional ``sample_probs``).
        augment: an albumentations pipeline (`sbd_augment`, `cocolvis_augment`, ...) or None.
        sampler: the click sampler; default `MultiPointSampler()` with the §C.4 settings.
        epoch_len: if > 0, ``len(self) = epoch_len`` and each item redraws a uniform source index
            (RITM ``epoch_len``; C+L uses 30000). Weighted sources (``sample_probs``) always redraw with
            their weights, and ``len`` is the source length unless ``epoch_len > 0``.
        min_object_area: objects smaller than this after augmentation are dropped (80 SBD, 1000 C+L).
        keep_background_prob: chance of accepting a crop without objects (0.01 SBD iter-mask, 0.05 C+L);
            otherwise the sample is re-augmented (§C.1). Negative: accept every crop.
        seed: base seed of the per-item generators.
        max_augment_tries: bound on re-augmentation (the reference loops forever); the last draw is kept.
    """

    def __init__(
        self,
        source: Any,
        augment: Callable[..., dict] | None = None,
        sampler: MultiPointSampler | None = None,
        epoch_len: int = -1,
        min_object_area: int = 80,
        keep_background_prob: float = 0.0,
        seed: int = 0,
        max_augment_tries: int = 100,
    ) -> None:
        if len(source) == 0:
            raise ValueError(f"source: {type(source).__name__} has no samples")
        probs = getattr(source, "sample_probs", None)
        if probs is not None:
            probs = np.asarray(probs, np.float64)
            if probs.shape != (len(source),) or (probs < 0).any() or not np.isclose(probs.sum(), 1.0):
                raise ValueError(f"source.sample_probs: expected {len(source)} non-negative probabilities summing to 1")
        self.source = source
        self.sample_probs = probs
        self.augment = augment
        self.sampler = sampler if sampler is not None else MultiPointSampler()
        self.epoch_len = int(epoch_len)
        self.min_object_area = min_object_area
        self.keep_background_prob = keep_background_prob
        self.seed = int(seed)
        self.max_augment_tries = max(1, int(max_augment_tries))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the random stream of an epoch (call before iterating it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.epoch_len if self.epoch_len > 0 else len(self.source)

    def rng_for(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def get_sample(self, index: int, rng: np.random.Generator) -> TrainSample:
        """Source draw + augmentation loop + small-object filter (everything before the click sampler)."""
        if self.sample_probs is not None:
            index = int(rng.choice(len(self.sample_probs), p=self.sample_probs))
        elif self.epoch_len > 0:
            index = int(rng.integers(len(self.source)))
        raw = self.source.get(index, rng)
        sample = augment_sample(raw, self.augment, rng)
        for _ in range(self.max_augment_tries - 1):
            keep = self.keep_background_prob < 0 or rng.random() < self.keep_background_prob  # < 0: keep all (RITM)
            if len(sample) > 0 or len(raw) == 0 or keep:
                break
            sample = augment_sample(raw, self.augment, rng)
        sample.remove_small_objects(self.min_object_area)
        return sample

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"TrainDataset: index {index} out of range [0, {len(self)})")
        rng = self.rng_for(index)
        sample = self.get_sample(index, rng)
        target = self.sampler(sample, rng)
        image = torch.from_numpy(np.ascontiguousarray(sample.image.transpose(2, 0, 1))).float().div_(255.0)
        return {
            "image": image,
            "points": torch.from_numpy(target.points),
            "mask": torch.from_numpy(target.mask),
        }
