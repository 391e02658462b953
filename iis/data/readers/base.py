"""Shared machinery of the evaluation readers: file pairing, decoding, validation, the instance index.

Every reader yields :class:`iis.core.types.Sample` objects (uint8 RGB image, int8 GT in
{1, 0, -1}) and never resizes (protocol.md §B "Nothing is resized at load time").

Validation happens at the door (``iis/data/README.md``):

* dataset level, when the reader is built: missing folders (``FileNotFoundError``), unpaired files
  and duplicated stems (``FileNotFoundError`` / ``IISError``), one line each;
* instance level, when an instance is loaded (``dataset[i]``): an undecodable image or mask, a mask
  that does not follow the dataset's declared encoding (bit depth, values), an empty object, a size
  mismatch raise :class:`iis.core.errors.InvalidSampleError` (``sample_id``, ``reason``), which
  ``iis-eval --skip-invalid`` records as skipped. A multi-instance image whose mask has no instance
  (or cannot be decoded) keeps one entry, id ``<stem>``, that raises the same way, so it never
  vanishes from the count.

:meth:`EvalDataset.check` reports both levels without raising (``iis-data check``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ...core.errors import IISError, InvalidSampleError
from ...core.types import GT_BACKGROUND, GT_IGNORE, GT_OBJECT, Sample
from ..io import IMAGE_EXTS, DataFileError, read_image

__all__ = [
    "IMAGE_EXTS",
    "ImagePair",
    "EvalDataset",
    "read_image",
    "labels_to_gt",
    "pair_by_stem",
    "raise_pairing_problems",
    "require_dir",
    "index_cache_dir",
    "NO_INSTANCE",
]

log = logging.getLogger(__name__)

_INDEX_VERSION = 2  # bump when the meaning of instance keys changes, invalidating old caches
NO_INSTANCE = 0  # index key of a multi-instance image without a usable instance (loading it raises)


@dataclass(frozen=True)
class ImagePair:
    """One image file and its mask file, paired by file stem."""

    stem: str
    image: Path
    mask: Path


def labels_to_gt(labels: np.ndarray, key: int) -> np.ndarray:
    """Label map (``-1`` ignore) -> int8 GT of object ``key``: 1 object, -1 ignore, 0 elsewhere."""
    gt = np.full(labels.shape, GT_BACKGROUND, dtype=np.int8)
    gt[labels == GT_IGNORE] = GT_IGNORE
    gt[labels == key] = GT_OBJECT
    return gt


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else FileNotFoundError naming the exact path expected."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: expected folder {path} (not found)")
    return path


def list_images(folder: Path, exts: Sequence[str] = IMAGE_EXTS) -> list[Path]:
    """Image files of ``folder`` (extension case-insensitive), sorted by name like the reference glob."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts), key=lambda p: p.name)


def pair_by_stem(images_dir: Path, masks_dir: Path, exts: Sequence[str] = IMAGE_EXTS,
                 mask_exts: Sequence[str] | None = None) -> tuple[list[ImagePair], list[str]]:
    """Pair images with masks of the same stem, in sorted image-name order.

    Returns:
        (pairs, problems): problems name unpaired images/masks and duplicated stems.
    """
    problems: list[str] = []
    masks: dict[str, Path] = {}
    for m in list_images(masks_dir, mask_exts or exts):
        if m.stem in masks:
            problems.append(f"duplicate mask stem {m.stem!r}: {masks[m.stem]} and {m} (using the first)")
            continue
        masks[m.stem] = m
    pairs, seen = [], set()
    for im in list_images(images_dir, exts):
        if im.stem in seen:
            problems.append(f"duplicate image stem {im.stem!r}: {im} ignored")
            continue
        seen.add(im.stem)
        if im.stem not in masks:
            problems.append(f"image without mask: {im} (expected {masks_dir / im.stem}.<ext>)")
            continue
        pairs.append(ImagePair(im.stem, im, masks[im.stem]))
    problems += [f"mask without image: {m} (expected {images_dir / s}.<ext>)" for s, m in masks.items()
                 if s not in seen]
    return pairs, problems


def raise_pairing_problems(what: str, problems: Sequence[str]) -> None:
    """Dataset-level problems (unpaired files, duplicated stems) as one line: ``FileNotFoundError``
    when files lack their counterpart, ``IISError`` otherwise; nothing when ``problems`` is empty."""
    if not problems:
        return
    more = f" (and {len(problems) - 1} more; `iis-data check` lists them all)" if len(problems) > 1 else ""
    msg = f"{what}: {problems[0]}{more}"
    if all(" without " in p or " lacks " in p for p in problems):
        raise FileNotFoundError(msg)
    raise IISError(msg)


def index_cache_dir() -> Path:
    """User cache for instance indexes: ``$IIS_CACHE_DIR`` or ``$XDG_CACHE_HOME/iis`` or ``~/.cache/iis``."""
    base = os.environ.get("IIS_CACHE_DIR")
    if base:
        return Path(base) / "dataset-index"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "iis" / "dataset-index"


class EvalDataset:
    """An evaluation set: one :class:`Sample` per object instance.

    Subclasses set ``self.pairs`` (image/mask files, cheap to list) and implement
    :meth:`_labels`, which decodes and validates a mask against the dataset's declared encoding
    (raising :class:`iis.data.io.DataFileError`); multi-instance readers set ``multi_instance = True``
    so that every non-zero key of the label map becomes a sample ``<stem>#<key>``.

    Args:
        name: lower-case registry name.
        root: the dataset folder.
        pairs: image/mask files.
        problems: dataset-level problems found while listing (unpaired files, ...).
        cache: whether a multi-instance index may be cached in the user cache dir.
        strict: raise on ``problems`` (one line); False keeps them for :meth:`check`.

    Attributes:
        name: lower-case registry name (``"grabcut"``), used by protocol overrides.
        root: the dataset folder that was resolved.
    """

    multi_instance: bool = False

    def __init__(self, name: str, root: Path, pairs: list[ImagePair], problems: Iterable[str] = (),
                 cache: bool = True, strict: bool = True):
        self.name = name
        self.root = Path(root)
        self.pairs = pairs
        self._problems = list(problems)
        self._cache = cache
        self._index: list[tuple[int, int]] | None = None
        self._keys_per_pair: list[list[int]] = []  # filled with the multi-instance index
        self._last: tuple[int, np.ndarray, np.ndarray] | None = None  # (pair, image, labels) of the last item
        if strict:
            raise_pairing_problems(f"{name} dataset", self._problems)

    # ----- hooks -----------------------------------------------------------------------------
    def _labels(self, pair: ImagePair) -> np.ndarray:
        """Integer label map ``(H, W)`` of ``pair``: 0 background, -1 ignore, object keys > 0.

        Raises :class:`DataFileError` when the mask cannot be decoded or breaks the declared encoding
        (for single-instance datasets this includes an empty object)."""
        raise NotImplementedError

    def _keys(self, labels: np.ndarray) -> list[int]:
        """Instance keys present in a label map (sorted, > 0)."""
        u = np.unique(labels)
        return [int(k) for k in u if k > 0]

    def _instance_problem(self, p: int, labels: np.ndarray, key: int) -> str | None:
        """Why instance ``key`` of a decoded pair is not usable, or None (hook; e.g. folder ``min_area``)."""
        if key == NO_INSTANCE:
            return f"mask {self.pairs[p].mask} has no object instance"
        if not (labels == key).any():
            where = f" in mask {self.pairs[p].mask} (the file changed after indexing?)" if self.pairs else ""
            return f"object {key} not found{where}"
        return None

    def _fingerprint_extra(self) -> list[str]:
        """Extra files whose mtimes key the index cache (e.g. a split list)."""
        return []

    def _index_params(self) -> list[Any]:
        """Reader options that change the instance keys (they key the index cache)."""
        return []

    # ----- public API --------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        """Number of paired image files (no decoding)."""
        return len(self.pairs)

    def __len__(self) -> int:
        return len(self.index)

    def ids(self) -> list[str]:
        """Stable, unique ids: ``<stem>`` or ``<stem>#<key>``; decodes no image (masks only if multi-instance)."""
        return [self._id(p, k) for p, k in self.index]

    def __getitem__(self, i: int) -> Sample:
        """Instance ``i``.

        Raises:
            IndexError: ``i`` out of range.
            InvalidSampleError: the instance must not be scored (undecodable file, mask outside the
                declared encoding, empty or too small object, size mismatch); one line naming the file.
        """
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.name}: index {i} out of range for {n} instances")
        p, key = self.index[i]
        image, labels = self._load_valid(p, key)
        return Sample(image=image.copy(), gt=labels_to_gt(labels, key), id=self._id(p, key))

    def validate(self, i: int) -> None:
        """Raises :class:`InvalidSampleError` if instance ``i`` is not usable (decodes it; no copy)."""
        p, key = self.index[i]
        self._load_valid(p, key)

    def invalid(self) -> dict[str, str]:
        """``{sample id: reason}`` of every unusable instance (decodes every file once)."""
        out: dict[str, str] = {}
        by_pair: dict[int, list[int]] = {}
        for p, key in self.index:
            by_pair.setdefault(p, []).append(key)
        for p, keys in by_pair.items():
            try:
                _, labels = self._load(p)
            except (ValueError, OSError) as e:
                for key in keys:
                    out[self._id(p, key)] = str(e)
                continue
            for key in keys:
                why = self._instance_problem(p, labels, key)
                if why:
                    out[self._id(p, key)] = why
        return out

    def check(self) -> list[str]:
        """Every problem, one line each (empty when fine); decodes everything, never raises for data.

        Dataset-level problems (unpaired files, ...) come first, then one line per unusable image
        or instance: ``<sample id>: <reason naming the file>``.
        """
        return self.dataset_problems() + [f"{sid}: {why}" for sid, why in self.invalid().items()]

    def dataset_problems(self) -> list[str]:
        """Dataset-level problems found while listing (unpaired files, duplicated stems, no pairs)."""
        problems = list(self._problems)
        if not self.pairs:
            problems.append(f"{self.name}: no image/mask pairs found in {self.root}")
        return problems

    def __repr__(self) -> str:
        n = len(self) if self._index is not None or not self.multi_instance else "?"
        return f"{type(self).__name__}(name={self.name!r}, root='{self.root}', images={self.num_images}, instances={n})"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_last"] = None  # do not ship a decoded image to DataLoader workers
        return state

    # ----- internals ---------------------------------------------------------------------------
    def _id(self, p: int, key: int) -> str:
        stem = self.pairs[p].stem
        return f"{stem}#{key}" if self.multi_instance and key != NO_INSTANCE else stem

    def _load_pair(self, pair: ImagePair) -> tuple[np.ndarray, np.ndarray]:
        image = read_image(pair.image)
        labels = self._labels(pair)
        if labels.shape != image.shape[:2]:
            raise DataFileError(pair.mask, f"mask {pair.mask} is {labels.shape[0]}x{labels.shape[1]} (HxW) but "
                                           f"image {pair.image} is {image.shape[0]}x{image.shape[1]}")
        return image, labels

    def _load(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        if self._last is not None and self._last[0] == p:  # consecutive instances of one image
            return self._last[1], self._last[2]
        image, labels = self._load_pair(self.pairs[p])
        self._last = (p, image, labels)
        return image, labels

    def _load_valid(self, p: int, key: int) -> tuple[np.ndarray, np.ndarray]:
        sid = self._id(p, key)
        try:
            image, labels = self._load(p)
        except (ValueError, OSError) as e:  # DataFileError, or a file removed after listing
            raise InvalidSampleError(sid, str(e)) from None
        why = self._instance_problem(p, labels, key)
        if why:
            raise InvalidSampleError(sid, why)
        return image, labels

    @property
    def index(self) -> list[tuple[int, int]]:
        """``(pair position, instance key)`` per sample, built lazily (mask decoding only if multi-instance).

        A multi-instance image without a usable instance keeps one entry with key :data:`NO_INSTANCE`.
        """
        if self._index is None:
            if not self.multi_instance:
                self._index = [(p, GT_OBJECT) for p in range(len(self.pairs))]
            else:
                self._index = self._build_multi_index()
        return self._index

    def _pair_keys(self, pair: ImagePair) -> list[int]:
        try:
            return self._keys(self._labels(pair))
        except (ValueError, OSError):  # reported when the entry is loaded or checked
            return []

    def _build_multi_index(self) -> list[tuple[int, int]]:
        path = self._cache_path() if self._cache else None
        keys = _read_index_cache(path, [p.stem for p in self.pairs]) if path else None
        if keys is None:
            keys = [self._pair_keys(pair) for pair in self.pairs]
            if path:
                _write_index_cache(path, [p.stem for p in self.pairs], keys)
        self._keys_per_pair = keys
        return [(p, k) for p, ks in enumerate(keys) for k in (ks or [NO_INSTANCE])]

    def _cache_path(self) -> Path | None:
        """Cache file keyed by the reader, its options, the dataset path, mask names, sizes and mtimes."""
        h = hashlib.sha256()
        h.update(json.dumps([_INDEX_VERSION, type(self).__name__, self.name, str(self.root.resolve()),
                             self._index_params()]).encode())
        try:
            for f in [*(p.mask for p in self.pairs), *map(Path, self._fingerprint_extra())]:
                st = f.stat()
                h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        except OSError:
            return None  # unreadable files: no caching; decoding will report them
        return index_cache_dir() / f"{self.name}-{h.hexdigest()[:20]}.json"


def _read_index_cache(path: Path, stems: list[str]) -> list[list[int]] | None:
    try:
        data = json.loads(path.read_text())
        if data.get("stems") == stems and len(data["keys"]) == len(stems):
            return [[int(k) for k in ks] for ks in data["keys"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _write_index_cache(path: Path, stems: list[str], keys: list[list[int]]) -> None:
    """Atomic best-effort write; a read-only cache dir only costs re-indexing next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"stems": stems, "keys": keys}, fh)
        os.replace(tmp, path)
    except OSError as e:
        log.debug("could not write index cache %s: %s", path, e)
