"""Evaluation datasets (protocol.md §B) behind one registry: ``get_dataset(name, root)``."""

from .datasets import (
    DATASET_DIRS,
    EXPECTED_INSTANCES,
    EvalDataset,
    available_datasets,
    check_datasets,
    get_dataset,
    list_datasets,
    register_dataset,
)
from .readers import FolderDataset, PairedFolderDataset, PascalVOCDataset, SBDDataset, index_cache_dir
from .synthetic import SyntheticDataset

__all__ = [
    "DATASET_DIRS",
    "EXPECTED_INSTANCES",
    "check_datasets",
    "EvalDataset",
    "available_datasets",
    "get_dataset",
    "list_datasets",
    "register_dataset",
    "FolderDataset",
    "PairedFolderDataset",
    "PascalVOCDataset",
    "SBDDataset",
    "SyntheticDataset",
    "index_cache_dir",
]
