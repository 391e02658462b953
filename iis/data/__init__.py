"""Evaluation datasets (protocol.md §B) behind one registry: ``get_dataset(name, root)``; the one
strict image/mask reader (:mod:`iis.data.io`); the ``folder`` layout (:mod:`iis.data.folder`).
Encodings and validation rules: ``iis/data/README.md``."""

from .datasets import (
    DATASET_DIRS,
    EXPECTED_INSTANCES,
    EvalDataset,
    available_datasets,
    check_dataset,
    check_datasets,
    dataset_options,
    get_dataset,
    parse_dataset_args,
    list_datasets,
    register_dataset,
)
from .folder import FolderEncoding, split_files
from .io import DataFileError, read_image, read_mask
from .readers import FolderDataset, PairedFolderDataset, PascalVOCDataset, SBDDataset, index_cache_dir
from .synthetic import SyntheticDataset

__all__ = [
    "DATASET_DIRS",
    "EXPECTED_INSTANCES",
    "check_dataset",
    "check_datasets",
    "dataset_options",
    "parse_dataset_args",
    "FolderEncoding",
    "split_files",
    "DataFileError",
    "read_image",
    "read_mask",
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
