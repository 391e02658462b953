"""Readers of ``images/ + masks/`` layouts paired by file stem (protocol.md §B).

GrabCut, Berkeley, DAVIS, COCO_MVal and BraTS have one object per image; ssTEM (4-connected
components), OAI-ZIB (one instance per label value) and the generic folder (instance-id masks)
have several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import cv2
import numpy as np
from PIL import Image

from .base import EvalDataset, ImagePair, pair_by_stem, read_mask_bgr, require_dir

__all__ = [
    "PairedFolderDataset",
    "FolderDataset",
    "decode_grabcut",
    "decode_davis",
    "decode_channel0_binary",
    "decode_components",
    "decode_label_map",
]


def decode_grabcut(path: Path) -> np.ndarray:
    """GrabCut/Berkeley: channel 0, 128 -> -1 (boundary band), > 128 -> 1, else 0 (protocol.md §A.6).

    Berkeley 8023's anti-aliased pixels (197, 243) therefore become object.
    """
    m = read_mask_bgr(path)[:, :, 0]
    out = np.zeros(m.shape, np.int32)
    out[m > 128] = 1
    out[m == 128] = -1
    return out


def decode_davis(path: Path) -> np.ndarray:
    """DAVIS/COCO_MVal ([RITM]/[SC] DavisDataset): max over the 3 channels > 0 -> 1; no ignore."""
    return (read_mask_bgr(path).max(axis=2) > 0).astype(np.int32)


def decode_channel0_binary(path: Path) -> np.ndarray:
    """BraTS ([SC]): channel 0 > 0 -> 1."""
    return (read_mask_bgr(path)[:, :, 0] > 0).astype(np.int32)


def decode_components(path: Path) -> np.ndarray:
    """ssTEM ([SC] ssTEM.py): 4-connected components of channel 0 != 0, labelled 1..n in scan order.

    Like the reference, any non-zero value is foreground (the few stray 1..254 pixels join their
    neighbours; on the real set the component count is the same as with a > 127 threshold).
    """
    m = read_mask_bgr(path)[:, :, 0]
    _, lab = cv2.connectedComponents((m != 0).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    return lab


def decode_label_map(path: Path) -> np.ndarray:
    """OAI-ZIB ([SC] oai_zib.py): channel 0 is a uint8 label map; every non-zero label is one instance."""
    return read_mask_bgr(path)[:, :, 0].astype(np.int32)


class PairedFolderDataset(EvalDataset):
    """Images and masks in two folders, paired by stem, sorted by image file name.

    Args:
        name: registry name.
        root: the dataset folder (e.g. ``<data root>/GrabCut``).
        images_dir, masks_dir: sub-folder names (may contain ``/``).
        decoder: mask path -> int32 label map (``-1`` ignore, object keys > 0).
        multi_instance: every key > 0 of the label map is a sample ``<stem>#<key>``;
            otherwise the key is 1 and the id is the stem.
        cache: whether a multi-instance index may be cached in the user cache dir.
    """

    def __init__(self, name: str, root: Path, images_dir: str, masks_dir: str,
                 decoder: Callable[[Path], np.ndarray], multi_instance: bool = False, cache: bool = True):
        root = Path(root)
        what = f"{name} dataset"
        images = require_dir(root / images_dir, what)
        masks = require_dir(root / masks_dir, what)
        pairs, problems = pair_by_stem(images, masks)
        self.multi_instance = multi_instance
        self._decoder = decoder
        super().__init__(name, root, pairs, problems, cache=cache)

    def _labels(self, pair: ImagePair) -> np.ndarray:
        return self._decoder(pair.mask)


class FolderDataset(PairedFolderDataset):
    """A generic ``images/`` + ``masks/`` folder with binary or instance-id masks.

    Masks are read with PIL so palette indices and 16-bit ids survive; 3-channel masks must have
    equal channels. ``mode="auto"`` treats a mask whose non-zero (non-ignore) pixels all share one
    value as binary (id ``<stem>``) and anything else as an instance-id map (ids ``<stem>#<id>``).

    Args:
        root: the folder itself.
        images_dir, masks_dir: sub-folder names.
        mode: ``"auto"``, ``"binary"`` (every non-zero pixel is the object) or ``"instances"``.
        ignore_value: mask value marking ignore pixels (e.g. 255 for VOC-style void, 128 for a
            GrabCut-style band); None for no ignore region.
    """

    def __init__(self, root: Path, images_dir: str = "images", masks_dir: str = "masks",
                 mode: Literal["auto", "binary", "instances"] = "auto", ignore_value: int | None = None,
                 name: str = "folder", cache: bool = True):
        if mode not in ("auto", "binary", "instances"):
            raise ValueError(f"mode: expected 'auto', 'binary' or 'instances', got {mode!r}")
        self.mode = mode
        self.ignore_value = ignore_value
        super().__init__(name, root, images_dir, masks_dir, self._decode, multi_instance=mode != "binary",
                         cache=cache)

    def _decode(self, path: Path) -> np.ndarray:
        try:
            with Image.open(path) as im:
                m = np.array(im)
        except OSError as e:
            raise ValueError(f"cannot read mask {path}: {e}") from None
        if m.ndim == 3:
            if (m[..., :3] != m[..., :1]).any():
                raise ValueError(f"mask {path}: expected a gray, palette or 16-bit id mask, got colours "
                                 f"(3 unequal channels); save instance ids as a palette or gray PNG")
            m = m[..., 0]
        m = m.astype(np.int64)
        ignore = (m == self.ignore_value) if self.ignore_value is not None else np.zeros(m.shape, bool)
        m[ignore] = 0
        if self.mode == "binary" or (self.mode == "auto" and len(np.unique(m[m != 0])) <= 1):
            m = (m != 0).astype(np.int64)
        m[ignore] = -1
        if m.max(initial=0) > np.iinfo(np.int32).max:
            raise ValueError(f"mask {path}: instance id {m.max()} too large")
        return m.astype(np.int32)

    def _id(self, p: int, key: int) -> str:
        # binary masks keep the bare stem; instance-id masks get <stem>#<id>
        if self.mode == "auto" and self._keys_per_pair[p] == [1]:
            return self.pairs[p].stem
        return super()._id(p, key)
