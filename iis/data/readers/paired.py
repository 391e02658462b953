"""Readers of ``images/ + masks/`` layouts paired by file stem (protocol.md §B).

GrabCut, Berkeley, DAVIS, COCO_MVal and BraTS have one object per image; ssTEM (4-connected
components), OAI-ZIB (one instance per label value) and the generic folder (binary or instance-id
masks, :mod:`iis.data.folder`) have several.

Each decoder reproduces the reference's reading (``cv2.imread(IMREAD_COLOR)``, then channel 0 or
the max over channels) and checks the file against the dataset's declared encoding first: 8-bit
samples (a 16-bit 0/255 PNG reads as all zeros through ``IMREAD_COLOR``), the declared values (a few
anti-aliased edge pixels allowed, see :data:`ANTIALIAS_TOLERANCE`), and a non-empty object. A
violation is a :class:`iis.data.io.DataFileError` naming the file, the values found and the encoding
expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from ..folder import DEFAULT_MIN_AREA, FolderEncoding, decode_folder_mask, folder_instance_problem, select_split
from ..io import EIGHT_BIT_MODES, DataFileError, MaskFile, describe_values, read_mask
from .base import EvalDataset, ImagePair, pair_by_stem, require_dir

__all__ = [
    "PairedFolderDataset",
    "FolderDataset",
    "ANTIALIAS_TOLERANCE",
    "ENCODINGS",
    "decode_grabcut",
    "decode_davis",
    "decode_channel0_binary",
    "decode_components",
    "decode_label_map",
]

# Values outside the declared set are accepted as anti-aliased edge pixels up to this share of the
# object's pixels. Our choice: the real sets stay far below it (Berkeley 8023: 2 of 10095 object pixels
# in channel 0; ssTEM: at most 0.12% per section), while a mask of ids or JPEG noise exceeds it.
ANTIALIAS_TOLERANCE = 0.01

# The declared encoding of each layout, quoted in error messages (iis/data/README.md has the table).
ENCODINGS = {
    "grabcut": "8-bit gray, channel 0: 0 background, 255 object, 128 ignore band (object = value > 128)",
    "davis": "8-bit gray or colour: 0 background, one object value (255 in the release; object = max over "
             "channels > 0)",
    "brats": "8-bit, channel 0: 0 background, object = any value > 0",
    "sstem": "8-bit gray, channel 0: 0 background, 255 mitochondria (every 4-connected component of "
             "values != 0 is one instance)",
    "oaizib": "8-bit label map, channel 0: 0 background, every non-zero label is one instance",
}


def _reference_view(path: Path, encoding: str) -> tuple[MaskFile, np.ndarray]:
    """The mask as the reference reads it (BGR of ``cv2.imread(IMREAD_COLOR)``), after the bit-depth check."""
    mask = read_mask(path)
    if mask.bits > 8 or mask.mode not in EIGHT_BIT_MODES:
        raise DataFileError(path, f"mask {path}: {mask.describe_format()}, expected {encoding} "
                                  "(the reference reads 8 bits: this file would decode to other values)")
    return mask, mask.bgr


def _check_values(path: Path, values: np.ndarray, declared: Sequence[int], n_object: int, encoding: str) -> None:
    """Refuse values outside ``declared`` beyond the anti-aliasing tolerance."""
    other = ~np.isin(values, declared)
    n_other = int(other.sum())
    if n_other and n_other > ANTIALIAS_TOLERANCE * n_object:
        share = f"{100 * n_other / n_object:.1f}% of the object's {n_object}" if n_object else "no object"
        raise DataFileError(path, f"mask {path}: {n_other} pixel(s) with values {describe_values(values[other])} "
                                  f"outside the declared {', '.join(map(str, declared))} ({share} pixels; at most "
                                  f"{100 * ANTIALIAS_TOLERANCE:g}% anti-aliased edge pixels are accepted); expected "
                                  f"{encoding}")


def _empty(path: Path, what: str, values: np.ndarray, encoding: str) -> DataFileError:
    return DataFileError(path, f"mask {path}: empty object: {what} (values found: {describe_values(values)}); "
                               f"expected {encoding}")


def decode_grabcut(path: Path) -> np.ndarray:
    """GrabCut/Berkeley: channel 0, 128 -> -1 (boundary band), > 128 -> 1, else 0 (protocol.md §A.6).

    Berkeley 8023's anti-aliased pixels (197, 243) therefore become object.
    """
    enc = ENCODINGS["grabcut"]
    _, bgr = _reference_view(path, enc)
    m = bgr[:, :, 0]
    out = np.zeros(m.shape, np.int32)
    out[m > 128] = 1
    out[m == 128] = -1
    n_obj = int((out == 1).sum())
    if n_obj == 0:
        raise _empty(path, "no value > 128 in channel 0", m, enc)
    _check_values(path, m, (0, 128, 255), n_obj, enc)
    return out


def decode_davis(path: Path) -> np.ndarray:
    """DAVIS/COCO_MVal ([RITM]/[SC] DavisDataset): max over the 3 channels > 0 -> 1; no ignore."""
    enc = ENCODINGS["davis"]
    _, bgr = _reference_view(path, enc)
    m = bgr.max(axis=2)
    obj = m > 0
    n_obj = int(obj.sum())
    if n_obj == 0:
        raise _empty(path, "every pixel is 0", m, enc)
    vals, counts = np.unique(m[obj], return_counts=True)
    _check_values(path, m, (0, int(vals[counts.argmax()])), n_obj, enc)  # one object value + anti-aliasing
    return obj.astype(np.int32)


def decode_channel0_binary(path: Path) -> np.ndarray:
    """BraTS ([SC]): channel 0 > 0 -> 1 (every tumour label value is object)."""
    enc = ENCODINGS["brats"]
    _, bgr = _reference_view(path, enc)
    m = bgr[:, :, 0]
    if not (m > 0).any():
        raise _empty(path, "every pixel is 0 in channel 0", m, enc)
    return (m > 0).astype(np.int32)


def decode_components(path: Path) -> np.ndarray:
    """ssTEM ([SC] ssTEM.py): 4-connected components of channel 0 != 0, labelled 1..n in scan order.

    Like the reference, any non-zero value is foreground (the few stray 1..254 pixels join their
    neighbours; on the real set the component count is the same as with a > 127 threshold).
    """
    enc = ENCODINGS["sstem"]
    _, bgr = _reference_view(path, enc)
    m = bgr[:, :, 0]
    fg = m != 0
    if not fg.any():
        raise _empty(path, "every pixel is 0 in channel 0", m, enc)
    _check_values(path, m, (0, 255), int(fg.sum()), enc)
    _, lab = cv2.connectedComponents(fg.astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
    return lab


def decode_label_map(path: Path) -> np.ndarray:
    """OAI-ZIB ([SC] oai_zib.py): channel 0 is a uint8 label map; every non-zero label is one instance."""
    enc = ENCODINGS["oaizib"]
    _, bgr = _reference_view(path, enc)
    m = bgr[:, :, 0]
    if not m.any():
        raise _empty(path, "every pixel is 0 in channel 0", m, enc)
    return m.astype(np.int32)


class PairedFolderDataset(EvalDataset):
    """Images and masks in two folders, paired by stem, sorted by image file name.

    Args:
        name: registry name.
        root: the dataset folder (e.g. ``<data root>/GrabCut``).
        images_dir, masks_dir: sub-folder names (may contain ``/``).
        decoder: mask path -> int32 label map (``-1`` ignore, object keys > 0); raises DataFileError.
        multi_instance: every key > 0 of the label map is a sample ``<stem>#<key>``;
            otherwise the key is 1 and the id is the stem.
        cache: whether a multi-instance index may be cached in the user cache dir.
        strict: raise on unpaired files (False: keep them as :meth:`check` problems).
    """

    def __init__(self, name: str, root: Path, images_dir: str, masks_dir: str,
                 decoder: Callable[[Path], np.ndarray], multi_instance: bool = False, cache: bool = True,
                 strict: bool = True):
        root = Path(root)
        what = f"{name} dataset"
        images = require_dir(root / images_dir, what)
        masks = require_dir(root / masks_dir, what)
        pairs, problems = pair_by_stem(images, masks)
        self.multi_instance = multi_instance
        self._decoder = decoder
        super().__init__(name, root, self._select(pairs), problems, cache=cache, strict=strict)

    def _select(self, pairs: list[ImagePair]) -> list[ImagePair]:
        return pairs

    def _labels(self, pair: ImagePair) -> np.ndarray:
        return self._decoder(pair.mask)


class FolderDataset(PairedFolderDataset):
    """Your own ``images/`` + ``masks/`` folder, decoded by an explicit :class:`FolderEncoding`.

    Ids are ``<stem>`` in ``binary`` mode and ``<stem>#<id>`` in ``instances`` mode (``<stem>`` for an
    image whose mask has no usable instance: loading it raises). Masks are read with Pillow, so
    palette indices and 16-bit ids survive.

    Args:
        root: the folder itself.
        images, masks: sub-folder names.
        mode, threshold, ignore_value, min_area, components: see :class:`FolderEncoding`.
        split, val_fraction, split_seed, files: which pairs to use, see :func:`iis.data.folder.select_split`;
            with ``val_fraction > 0`` the default split is ``"val"`` (the training source takes the rest).
        name: registry name.
        cache, strict: as :class:`PairedFolderDataset`.
    """

    def __init__(self, root: Path, images: str = "images", masks: str = "masks", mode: str = "binary",
                 threshold: int | None = None, ignore_value: int | None = None, min_area: int = DEFAULT_MIN_AREA,
                 components: bool = False, split: str | None = None, val_fraction: float = 0.0,
                 split_seed: int = 0, files: Sequence[str] | None = None, name: str = "folder",
                 cache: bool = True, strict: bool = True):
        self.encoding = FolderEncoding(mode, threshold, ignore_value, min_area, components)
        self._split = (split, val_fraction, split_seed, None if files is None else list(files))
        self._what = f"{name} dataset"
        super().__init__(name, root, images, masks, self._decode, multi_instance=mode == "instances",
                         cache=cache, strict=strict)

    def _select(self, pairs: list[ImagePair]) -> list[ImagePair]:
        split, frac, seed, files = self._split
        return select_split(pairs, lambda p: p.stem, split, frac, seed, default="val", files=files,
                            what=self._what)

    def _decode(self, path: Path) -> np.ndarray:
        return decode_folder_mask(path, self.encoding)

    def _instance_problem(self, p: int, labels: np.ndarray, key: int) -> str | None:
        why = super()._instance_problem(p, labels, key)
        if why:
            return why
        return folder_instance_problem(labels, key, self.encoding, self.pairs[p].mask, not self.multi_instance)

    def _index_params(self) -> list[Any]:
        return [self.encoding.to_dict()]

    def fingerprint(self) -> dict[str, Any]:
        """Which pairs are used (split options): part of the result identity of ``iis-eval``."""
        split, frac, seed, files = self._split
        return {"split": split, "val_fraction": frac, "split_seed": seed, "files": files}
