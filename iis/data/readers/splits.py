"""Readers driven by a split list: SBD (``inst/*.mat``) and PASCAL VOC 2012 (``SegmentationObject``).

Both have several objects per image and give one sample per (image, instance), docs/protocol.md §B:
SBD val 6671 instances in 2857 images, VOC val 3417 instances in 1449 images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from ..io import EIGHT_BIT_MODES, DataFileError, describe_values, read_mask
from .base import EvalDataset, ImagePair, require_dir

__all__ = ["SplitListDataset", "SBDDataset", "PascalVOCDataset", "voc_colormap", "decode_voc_object_png",
           "read_sbd_instances"]


def voc_colormap(n: int = 256) -> np.ndarray:
    """The PASCAL VOC palette ``(n, 3) uint8``: bits of the index spread over the high bits of R, G, B."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


_VOC_RGB_TO_INDEX = {tuple(int(v) for v in rgb): i for i, rgb in enumerate(voc_colormap())}
VOC_VOID = 255  # palette index of the void/boundary band; colour (224, 224, 192), gray 220 via BGR2GRAY


def decode_voc_object_png(path: Path) -> np.ndarray:
    """``SegmentationObject/<id>.png`` -> int32 map: 0 background, instance index > 0, -1 void (§A.6).

    Palette (``P``) and index-valued gray (``L``) PNGs are read as indices; RGB PNGs are mapped back
    through the VOC colormap. The reference's gray-220 rule marks the same void region as index 255.

    Raises:
        DataFileError: undecodable file, more than 8 bits, a colour outside the VOC palette, or no instance.
    """
    enc = "a VOC object PNG: palette index 0 background, 1..254 instances, 255 void"
    mask = read_mask(path)
    if mask.bits > 8 or mask.mode not in EIGHT_BIT_MODES:
        raise DataFileError(path, f"VOC object mask {path}: {mask.describe_format()}, expected {enc}")
    if mask.mode in ("P", "L", "1"):
        m = mask.values
    elif mask.mode in ("RGB", "RGBA"):
        m = mask.values[..., :3]
        codes = (m[..., 0].astype(np.int32) << 16) | (m[..., 1].astype(np.int32) << 8) | m[..., 2]
        uniq, inv = np.unique(codes, return_inverse=True)
        lut = []
        for c in uniq:
            rgb = (int(c) >> 16, (int(c) >> 8) & 255, int(c) & 255)
            if rgb not in _VOC_RGB_TO_INDEX:
                raise DataFileError(path, f"VOC object mask {path}: colour {rgb} is not in the VOC palette; "
                                          f"expected {enc}")
            lut.append(_VOC_RGB_TO_INDEX[rgb])
        m = np.asarray(lut, np.int32)[inv.reshape(codes.shape)]
    else:
        raise DataFileError(path, f"VOC object mask {path}: {mask.describe_format()}, expected {enc}")
    out = m.astype(np.int32)
    out[out == VOC_VOID] = -1
    if not (out > 0).any():
        raise DataFileError(path, f"VOC object mask {path}: no instance (indices found: {describe_values(m)}); "
                                  f"expected {enc}")
    return out


def read_sbd_instances(path: Path) -> np.ndarray:
    """``inst/<id>.mat`` -> int32 instance map ``GTinst.Segmentation`` (``loadmat(...)['GTinst'][0][0][0]``).

    Raises:
        DataFileError: unreadable file, no ``GTinst.Segmentation``, not a 2-D non-negative integer map.
    """
    try:
        gt = loadmat(str(path))["GTinst"]
        rec = gt[0, 0]
        seg = rec["Segmentation"] if "Segmentation" in (gt.dtype.names or ()) else rec[0]
    except FileNotFoundError:
        raise DataFileError(path, f"SBD instance file {path}: file not found") from None
    except Exception as e:  # scipy raises many types on truncated or foreign files
        raise DataFileError(path, f"cannot read SBD instance file {path}: {type(e).__name__}: {e}") from None
    seg = np.asarray(seg)
    if seg.ndim != 2:
        raise DataFileError(path, f"SBD instance file {path}: GTinst.Segmentation has shape {seg.shape}, "
                                  "expected (H, W)")
    if seg.dtype.kind not in "iub" or (seg.size and seg.min() < 0):
        raise DataFileError(path, f"SBD instance file {path}: GTinst.Segmentation is {seg.dtype} with values "
                                  f"{describe_values(seg)}, expected non-negative integer instance ids")
    return seg.astype(np.int32)


def _sbd_labels(path: Path) -> np.ndarray:
    seg = read_sbd_instances(path)
    if not seg.any():
        raise DataFileError(path, f"SBD instance file {path}: no instance (GTinst.Segmentation is all 0)")
    return seg


class SplitListDataset(EvalDataset):
    """Images named by a split list; one sample per instance of each image (ids ``<stem>#<key>``)."""

    multi_instance = True

    def __init__(self, name: str, root: Path, split_file: Path, images_dir: Path, image_ext: str,
                 masks_dir: Path, mask_ext: str, cache: bool = True, strict: bool = True):
        if not split_file.is_file():
            raise FileNotFoundError(f"{name} dataset: expected split list {split_file} (not found)")
        require_dir(images_dir, f"{name} dataset")
        require_dir(masks_dir, f"{name} dataset")
        self._split_file = split_file
        stems = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
        pairs, problems, seen = [], [], set()
        for stem in stems:
            if stem in seen:
                problems.append(f"{split_file}: {stem!r} listed twice (kept once)")
                continue
            seen.add(stem)
            img, mask = images_dir / f"{stem}{image_ext}", masks_dir / f"{stem}{mask_ext}"
            missing = [str(p) for p in (img, mask) if not p.is_file()]
            if missing:
                problems.append(f"{split_file}: {stem!r} lacks {' and '.join(missing)}")
                continue
            pairs.append(ImagePair(stem, img, mask))
        super().__init__(name, root, pairs, problems, cache=cache, strict=strict)

    def _fingerprint_extra(self) -> list[str]:
        return [str(self._split_file)]


class SBDDataset(SplitListDataset):
    """SBD (``benchmark_RELEASE/dataset``): ``img/<id>.jpg``, ``inst/<id>.mat``, ``<split>.txt``.

    Like [RITM] ``SBDEvaluationDataset``, every non-zero instance id is one sample, in increasing
    id order, with no ignore region and no buggy-mask filtering at evaluation time.
    """

    def __init__(self, root: Path, split: str = "val", name: str = "sbd", cache: bool = True, strict: bool = True):
        if split not in ("train", "val"):
            raise ValueError(f"split: expected 'train' or 'val' for SBD, got {split!r}")
        root = Path(root)
        super().__init__(name, root, root / f"{split}.txt", root / "img", ".jpg", root / "inst", ".mat", cache,
                         strict)

    def _labels(self, pair: ImagePair) -> np.ndarray:
        return _sbd_labels(pair.mask)


class PascalVOCDataset(SplitListDataset):
    """PASCAL VOC 2012: ``JPEGImages/<id>.jpg``, ``SegmentationObject/<id>.png``,
    ``ImageSets/Segmentation/<split>.txt``; every instance (palette index 1..254) is one sample, void -> -1.
    """

    def __init__(self, root: Path, split: str = "val", name: str = "pascalvoc", cache: bool = True,
                 strict: bool = True):
        root = Path(root)
        super().__init__(name, root, root / "ImageSets" / "Segmentation" / f"{split}.txt", root / "JPEGImages",
                         ".jpg", root / "SegmentationObject", ".png", cache, strict)

    def _labels(self, pair: ImagePair) -> np.ndarray:
        return decode_voc_object_png(pair.mask)
