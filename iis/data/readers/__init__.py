"""Dataset readers (one module per layout family); use :func:`iis.data.get_dataset` to build them."""

from .base import EvalDataset, ImagePair, index_cache_dir
from .paired import FolderDataset, PairedFolderDataset
from .splits import PascalVOCDataset, SBDDataset, voc_colormap

__all__ = ["EvalDataset", "ImagePair", "index_cache_dir", "FolderDataset", "PairedFolderDataset",
           "PascalVOCDataset", "SBDDataset", "voc_colormap"]
