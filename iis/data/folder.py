"""Your own data: the ``images/`` + ``masks/`` folder layout, shared by evaluation and training.

:class:`FolderEncoding` says how a mask's pixels become objects; the evaluation reader
(``get_dataset("folder", DIR, ...)``) and the training source (``FolderTrain``) take the same
options and decode a mask with the same function, so what ``iis-data check`` accepts, both accept.

Modes (``iis/data/README.md`` has the full table):

* ``binary`` (default): one object per mask, ``value > threshold``. ``threshold=None`` means 127, or 0
  when every (non-ignore) value of the mask is 0 or 1, so 0/1, 0/255, gray and anti-aliased masks all
  work. RGB masks use the max over R, G, B (a coloured object on black).
* ``instances``: every non-zero value is one instance (palette indices, 8/16-bit ids), or, with
  ``components=True``, every 4-connected component of each non-zero value.

In both modes ``ignore_value`` marks ignore pixels (-1: never clicked, outside IoU), compared with the
stored values before thresholding, and an object or instance with fewer than ``min_area`` pixels is
refused (anti-aliasing or stray pixels would otherwise become objects of their own). An RGBA, LA or PA
mask whose alpha channel is not fully opaque is read from its alpha channel (a cut-out: opaque =
object); a fully opaque one from its colour channels.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence, TypeVar

import cv2
import numpy as np

from .io import IMAGE_EXTS, DataFileError, MaskFile, describe_values, read_mask

__all__ = ["FOLDER_MODES", "DEFAULT_MIN_AREA", "FolderEncoding", "decode_folder_mask", "folder_instance_problem",
           "split_files", "select_split"]

FOLDER_MODES = ("binary", "instances")
# Our choice (no paper fixes it): smaller than a 3x3 block is more likely stray or anti-aliased pixels
# than an object a user would click on.
DEFAULT_MIN_AREA = 10
_BINARY_THRESHOLD = 127  # 0/255 masks and their anti-aliased edges: > 127 is object (as Berkeley, ssTEM)

T = TypeVar("T")


@dataclass(frozen=True)
class FolderEncoding:
    """How the masks of a folder encode objects (see the module docstring).

    Args:
        mode: ``"binary"`` or ``"instances"``.
        threshold: binary only: object = value > threshold; None = 127, or 0 for masks holding only 0/1.
        ignore_value: stored value that marks ignore pixels, or None.
        min_area: objects / instances with fewer pixels are invalid (an error, or skipped with
            ``iis-eval --skip-invalid``); 0 accepts any size.
        components: instances only: split each value into 4-connected components.
    """

    mode: str = "binary"
    threshold: int | None = None
    ignore_value: int | None = None
    min_area: int = DEFAULT_MIN_AREA
    components: bool = False

    def __post_init__(self) -> None:
        if self.mode not in FOLDER_MODES:
            raise ValueError(f"mode: expected one of {', '.join(FOLDER_MODES)}, got {self.mode!r}")
        for name in ("threshold", "ignore_value"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0):
                raise ValueError(f"{name}: expected a non-negative integer or None, got {v!r}")
        if isinstance(self.min_area, bool) or not isinstance(self.min_area, (int, np.integer)) or self.min_area < 0:
            raise ValueError(f"min_area: expected a non-negative integer, got {self.min_area!r}")
        if self.mode != "binary" and self.threshold is not None:
            raise ValueError(f"threshold: only applies to mode='binary' (got mode={self.mode!r})")
        if self.mode != "instances" and self.components:
            raise ValueError("components: only applies to mode='instances'")

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line, e.g. ``binary (value > 127, or > 0 for 0/1 masks), ignore 128, min_area 10``."""
        if self.mode == "binary":
            thr = "value > 127, or > 0 for 0/1 masks" if self.threshold is None else f"value > {self.threshold}"
            s = f"binary ({thr})"
        else:
            s = "instances (" + ("4-connected components of each non-zero value" if self.components
                                 else "one per non-zero value") + ")"
        if self.ignore_value is not None:
            s += f", ignore {self.ignore_value}"
        return s + f", min_area {self.min_area}"


def _channel(mask: MaskFile) -> tuple[np.ndarray, str, bool]:
    """``(values (H, W) int64, how they were taken, colour)``; colour: RGB with unequal channels."""
    v = mask.values
    if mask.mode == "F" or v.dtype.kind == "f":
        raise DataFileError(mask.path, f"mask {mask.path}: {mask.describe_format()}, expected integer values "
                                       "(1/8/16-bit gray, palette, RGB(A))")
    if v.ndim == 2:
        return v.astype(np.int64), mask.describe_format(), False
    if v.ndim != 3 or v.shape[2] not in (1, 2, 3, 4):
        raise DataFileError(mask.path, f"mask {mask.path}: unsupported shape {v.shape} ({mask.describe_format()})")
    if v.shape[2] in (2, 4):  # LA, PA, RGBA: a cut-out if the alpha channel is used
        alpha = v[..., -1]
        if (alpha != 255).any():
            return alpha.astype(np.int64), f"alpha channel of {mask.describe_format()}", False
        v = v[..., :-1]
    if v.shape[2] == 1 or (v == v[..., :1]).all():
        return v[..., 0].astype(np.int64), mask.describe_format(), False
    return v.max(axis=2).astype(np.int64), f"max over R, G, B of {mask.describe_format()}", True


def decode_folder_mask(path: str | Path, enc: FolderEncoding, mask: MaskFile | None = None,
                       empty_ok: bool = False) -> np.ndarray:
    """A folder mask -> ``int32 (H, W)`` label map: 0 background, -1 ignore, object ids > 0.

    Binary masks give id 1; instance masks their value (or component number, from 1 in scan order
    of increasing value). ``empty_ok`` returns a mask without object instead of raising (training
    sources with background-only images).

    Raises:
        DataFileError: undecodable file, float values, colours in instances mode, negative values,
            or no object at all (empty objects are an error), naming the file and the values found.
    """
    mask = mask if mask is not None else read_mask(path)
    path = mask.path
    vals, how, colour = _channel(mask)
    ignore = vals == enc.ignore_value if enc.ignore_value is not None else np.zeros(vals.shape, bool)
    if (vals < 0).any():
        raise DataFileError(path, f"mask {path}: negative values ({describe_values(vals[vals < 0])}) in {how}")
    ign = f"; ignore value {enc.ignore_value}" if enc.ignore_value is not None else ""
    if enc.mode == "binary":
        rest = vals[~ignore]
        thr = enc.threshold
        if thr is None:
            thr = 0 if rest.size and rest.max(initial=0) <= 1 else _BINARY_THRESHOLD
        obj = (vals > thr) & ~ignore
        if not obj.any() and not empty_ok:
            raise DataFileError(path, f"mask {path}: empty object: no value > {thr} in {how} (values found: "
                                      f"{describe_values(vals)}{ign}); expected a binary mask (0/1, 0/255), or "
                                      "mode=instances for instance ids, or a lower threshold")
        out = obj.astype(np.int32)
        out[ignore] = -1
        return out
    if colour:
        raise DataFileError(path, f"mask {path}: RGB colours (unequal channels), expected instance ids as gray, "
                                  "palette or 16-bit values; save colour-coded masks as a palette PNG")
    fg = (vals != 0) & ~ignore
    if not fg.any() and not empty_ok:
        raise DataFileError(path, f"mask {path}: no instance: every pixel is 0 or ignore in {how} (values found: "
                                  f"{describe_values(vals)}{ign})")
    if vals.max(initial=0) > np.iinfo(np.int32).max:
        raise DataFileError(path, f"mask {path}: instance id {int(vals.max())} too large (at most 2^31 - 1)")
    out = np.zeros(vals.shape, np.int32)
    if enc.components:
        n = 0
        for v in np.unique(vals[fg]):
            k, lab = cv2.connectedComponents((fg & (vals == v)).astype(np.uint8), connectivity=4, ltype=cv2.CV_32S)
            sel = lab > 0
            out[sel] = lab[sel] + n
            n += k - 1
    else:
        out[fg] = vals[fg]
    out[ignore] = -1
    return out


def folder_instance_problem(labels: np.ndarray, key: int, enc: FolderEncoding, mask_path: Path | str,
                            binary: bool) -> str | None:
    """Why object ``key`` of a decoded folder mask is not usable (too small), or None."""
    area = int((labels == key).sum())
    if area >= max(enc.min_area, 1):
        return None
    what = "object" if binary else f"instance {key}"
    return (f"{what} of mask {mask_path} has {area} pixel(s), fewer than min_area={enc.min_area} "
            "(anti-aliased or stray pixels?); fix the mask or lower min_area")


def _key(f: object) -> str:
    name = Path(str(f)).name
    return Path(name).stem if Path(name).suffix.lower() in IMAGE_EXTS else name


def split_files(files: Sequence[T], fraction: float, seed: int = 0) -> tuple[list[T], list[T]]:
    """Deterministic train/val split of a file list.

    Each file is ranked by ``sha256(f"{seed}:{stem}")`` and the ``round(fraction * n)`` lowest
    (at least 1, at most ``n - 1``) go to val. The choice depends only on the set of stems, the
    fraction and the seed (not on the listing order or on the extensions), so the training source and
    the evaluation reader of one folder agree, on every machine. Both lists keep the input order.

    Args:
        files: paths or names (a known image extension is dropped: ``a.jpg`` and ``a.png`` are ``a``).
        fraction: share of files for validation, ``0 < fraction < 1``.
        seed: split seed.

    Raises:
        ValueError: fraction out of range, fewer than 2 files, or two files with one stem.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {fraction!r}")
    files = list(files)
    keys = [_key(f) for f in files]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"split: two files share the stem {dup[0]!r}; stems must be unique")
    if len(files) < 2:
        raise ValueError(f"val_fraction: cannot split {len(files)} file(s) into train and val")
    n_val = min(max(int(round(fraction * len(files))), 1), len(files) - 1)
    rank = sorted(range(len(files)), key=lambda i: hashlib.sha256(f"{int(seed)}:{keys[i]}".encode()).hexdigest())
    val = set(rank[:n_val])
    return [f for i, f in enumerate(files) if i not in val], [f for i, f in enumerate(files) if i in val]


def select_split(items: Sequence[T], stem_of, split: str | None, val_fraction: float, seed: int,
                 default: str, files: Sequence[str] | None = None, what: str = "folder") -> list[T]:
    """The part of ``items`` (image/mask pairs) that a folder reader uses.

    Args:
        items: pairs in listing order; ``stem_of(item)`` gives the image stem.
        split: ``"train"``, ``"val"``, ``"all"``, or None for ``default``.
        val_fraction: 0 = no split (every item; split must then be None or ``"all"``).
        seed: split seed of :func:`split_files`.
        default: the split that None means when ``val_fraction > 0``.
        files: optional explicit list of stems or file names to keep (applied first).
    """
    items = list(items)
    if files is not None:
        want = [_key(f) for f in files]
        have = {stem_of(it): it for it in items}
        missing = [w for w in want if w not in have]
        if missing:
            raise FileNotFoundError(f"{what}: files: {len(missing)} listed name(s) have no image/mask pair, e.g. "
                                    f"{missing[0]!r}")
        keep = set(want)
        items = [it for it in items if stem_of(it) in keep]
    if split not in (None, "all", "train", "val"):
        raise ValueError(f"split: expected 'train', 'val' or 'all', got {split!r}")
    if not val_fraction:
        if split in ("train", "val"):
            raise ValueError(f"split: {split!r} needs val_fraction in (0, 1) (or give the validation folder itself)")
        return items
    split = split or default
    if split == "all":
        return items
    train, val = split_files([stem_of(it) for it in items], val_fraction, seed)
    keep = set(train if split == "train" else val)
    return [it for it in items if stem_of(it) in keep]
