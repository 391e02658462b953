"""Training data layer: multi-object sources, augmentation recipes, the click sampler, the torch Dataset.

Pipeline (protocol.md §C): ``source.get(i, rng) -> TrainSample`` (checked for every item before step 1 by
`require_valid_source`) -> `augment_sample` (albumentations
recipe) -> ``remove_small_objects`` -> `MultiPointSampler` -> `TrainDataset` item
``{'image' (3,H,W), 'points' (48,3) rows (x, y, label), 'mask' (1,H,W)}``.
"""

from iis.data.train.augment import (
    AUGMENTATIONS,
    RandomFlip,
    UniformRandomResize,
    augment_sample,
    cocolvis_augment,
    sbd_augment,
    val_augment,
)
from iis.data.train.datasets import (
    CocoJsonTrain,
    CocoLvis,
    FolderTrain,
    SBDTrain,
    SyntheticShapesTrain,
    SyntheticTrain,
    TrainSource,
)
from iis.data.train.check import TRAIN_SOURCES, build_train_source, check_train_source, require_valid_source
from iis.data.train.sample import TrainSample, pack_masks
from iis.data.train.sampler import MultiPointSampler, SampledTarget, geometric_probs
from iis.data.train.train_dataset import TrainDataset

__all__ = [
    "AUGMENTATIONS",
    "TRAIN_SOURCES",
    "build_train_source",
    "check_train_source",
    "require_valid_source",
    "CocoJsonTrain",
    "CocoLvis",
    "FolderTrain",
    "MultiPointSampler",
    "RandomFlip",
    "SBDTrain",
    "SampledTarget",
    "SyntheticShapesTrain",
    "SyntheticTrain",
    "TrainDataset",
    "TrainSample",
    "TrainSource",
    "UniformRandomResize",
    "augment_sample",
    "cocolvis_augment",
    "geometric_probs",
    "pack_masks",
    "sbd_augment",
    "val_augment",
]
