"""Training sources: each returns a multi-object `TrainSample` for an index (protocol.md §C.1-C.3).

A source is indexable (``len``, ``get(index, rng)``); the random draws some sources need (C+L stuff) come
from the caller's generator. A source may expose ``sample_probs`` (one probability per index) to make
`TrainDataset` redraw indices with those weights (SBD hard-sample weighting, §C.2).

Every file is read through :mod:`iis.data.io` (strict decoding, the reference's values); an item that
cannot be used raises :class:`iis.core.errors.InvalidSampleError` naming the file, and
``source.check()`` lists every such item before training starts (:mod:`iis.data.train.check`).
"""

from __future__ import annotations

import contextlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from iis.core.errors import InvalidSampleError
from iis.data.folder import DEFAULT_MIN_AREA, FolderEncoding, decode_folder_mask, folder_instance_problem, select_split
from iis.data.io import DataFileError, decode_mask_bytes, read_image, safe_pickle_load
from iis.data.readers.base import pair_by_stem, raise_pairing_problems
from iis.data.readers.splits import read_sbd_instances
from iis.data.train.sample import TrainSample, pack_masks

__all__ = ["TrainSource", "SBDTrain", "CocoLvis", "FolderTrain", "CocoJsonTrain", "SyntheticTrain",
           "SyntheticShapesTrain"]


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def _require_files(what: str, listed_in: Path, files: list[Path]) -> None:
    """Dataset level: every file the index lists exists (one line naming the first missing one)."""
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{what}: {len(missing)} file(s) listed in {listed_in} are missing, e.g. {missing[0]}")


def _load_pickle(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    return safe_pickle_load(path)


class TrainSource:
    """Base class: ``len(source)`` items, ``source.get(index, rng) -> TrainSample``.

    ``get`` raises :class:`InvalidSampleError` (one line naming the file) for an item that cannot be
    used; :meth:`check` runs every item and lists those lines.
    """

    sample_probs: np.ndarray | None = None
    reads_files: bool = True  # False: generated data, nothing to check

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> TrainSample:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range [0, {len(self)})")
        return self.get(index, np.random.default_rng(index))

    def check_item(self, index: int) -> str | None:
        """Why item ``index`` cannot be used (one line), or None; decodes its files."""
        try:
            self.get(index, np.random.default_rng(index))
        except (ValueError, OSError) as e:  # InvalidSampleError / DataFileError, or a file gone since listing
            return str(e)
        return None

    def check(self, workers: int | None = None) -> list[str]:
        """One line per item that training would refuse (decodes everything; threads, as decoding
        releases the GIL). Empty when every item is fine."""
        if not self.reads_files or len(self) == 0:
            return []
        workers = workers or min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(max(1, workers)) as ex:
            return [p for p in ex.map(self.check_item, range(len(self))) if p]

    def check_key(self) -> list[Any] | None:
        """What a successful check depends on (options and files), to remember it; None: never cached."""
        return None


class SBDTrain(TrainSource):
    """SBD instance masks (protocol.md §C.2): ``root/{split}.txt``, ``root/img/<id>.jpg``, ``root/inst/<id>.mat``.

    Args:
        root: the SBD ``dataset`` folder.
        split: ``'train'`` (8498 images) or ``'val'``.
        buggy_mask_thresh: instances with area / bbox area below this are erased (RITM 0.08).
        samples_weights: optional pickle of ``(index, image_name, score)`` tuples (RITM
            ``assets/sbd_samples_weights.pkl``); index ``i`` is then drawn with probability
            ``∝ (1 - score_i) ** scores_gamma``.
        scores_gamma: RITM ``samples_scores_gamma`` (1.25).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        buggy_mask_thresh: float = 0.08,
        samples_weights: str | Path | None = None,
        scores_gamma: float = 1.25,
    ) -> None:
        self.root = _need_dir(Path(root), "SBDTrain root")
        split_file = self.root / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"SBDTrain: split file not found: {split_file} (split={split!r})")
        self.split_file = split_file
        self.names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        self.images_dir = _need_dir(self.root / "img", "SBDTrain images")
        self.inst_dir = _need_dir(self.root / "inst", "SBDTrain instance masks")
        _require_files("SBDTrain", split_file, [d / f"{n}{ext}" for n in self.names
                                                for d, ext in ((self.images_dir, ".jpg"), (self.inst_dir, ".mat"))])
        self.buggy_mask_thresh = buggy_mask_thresh
        self._buggy: dict[int, list[int]] = {}
        if samples_weights is not None:
            self.sample_probs = self._load_weights(Path(samples_weights), scores_gamma)

    def __len__(self) -> int:
        return len(self.names)

    def _load_weights(self, path: Path, gamma: float) -> np.ndarray:
        entries = _load_pickle(path)
        probs = np.zeros(len(self), np.float64)
        try:
            for idx, name, score in entries:
                if not 0 <= int(idx) < len(self):
                    raise ValueError(f"index {idx} out of range for {len(self)} images")
                if Path(str(name)).stem != self.names[int(idx)]:
                    raise ValueError(f"entry {idx} names {name!r} but the split lists {self.names[int(idx)]!r}")
                probs[int(idx)] = (1.0 - float(score)) ** gamma
        except (TypeError, ValueError) as e:
            raise ValueError(f"samples_weights {path}: expected (index, image_name, score) tuples: {e}") from e
        if probs.sum() <= 0:
            raise ValueError(f"samples_weights {path}: all weights are zero")
        return probs / probs.sum()

    def load_instances(self, index: int) -> np.ndarray:
        """``int32 (H, W)`` instance map of image ``index`` with buggy masks erased."""
        inst = read_sbd_instances(self.inst_dir / f"{self.names[index]}.mat")
        if self.buggy_mask_thresh > 0:
            if index not in self._buggy:
                self._buggy[index] = self._find_buggy(inst)
            for oid in self._buggy[index]:
                inst[inst == oid] = 0
        return inst

    def _find_buggy(self, inst: np.ndarray) -> list[int]:
        buggy = []
        for oid in np.unique(inst):
            if oid <= 0:
                continue
            rows, cols = np.nonzero(inst == oid)
            bbox_area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
            if len(rows) / bbox_area < self.buggy_mask_thresh:
                buggy.append(int(oid))
        return buggy

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        name = self.names[index]
        try:
            image = read_image(self.images_dir / f"{name}.jpg")
            inst = self.load_instances(index)
        except DataFileError as e:
            raise InvalidSampleError(name, str(e)) from None
        if inst.shape != image.shape[:2]:
            raise InvalidSampleError(name, f"SBD instance map {self.inst_dir / name}.mat is {inst.shape} but image "
                                           f"{self.images_dir / name}.jpg is {image.shape[:2]}")
        return TrainSample.from_instance_map(image, inst, id=name)

    def check_key(self) -> list[Any] | None:
        files = [self.split_file]
        files += [d / f"{n}{ext}" for n in self.names for d, ext in ((self.images_dir, ".jpg"), (self.inst_dir, ".mat"))]
        return ["SBDTrain", self.names, files]


class CocoLvis(TrainSource):
    """RITM's packed COCO+LVIS layout (protocol.md §C.3) under ``root/{split}/``.

    ``images/<id>.jpg``; ``masks/<id>.pickle`` = ``(PNG-encoded uint8 layers, objs_mapping)`` with
    ``objs_mapping[i] = (layer, local_id)``; ``hannotation.pickle`` = ``{id: {'num_instance_masks': N,
    'hierarchy': {i: None | {'children', 'parent', 'node_level'}}}}``. Objects ``>= N`` are stuff: with
    probability ``stuff_prob`` they are added as roots, otherwise erased to background. Object ``i`` gets
    id ``i + 1``.

    Args:
        stuff_prob: 0.30 in every C+L config (RITM's class default is 0).
    """

    def __init__(self, root: str | Path, split: str = "train", stuff_prob: float = 0.3,
                 anno_file: str = "hannotation.pickle") -> None:
        self.split_dir = _need_dir(Path(root) / split, f"CocoLvis split {split!r}")
        self.images_dir = _need_dir(self.split_dir / "images", "CocoLvis images")
        self.masks_dir = _need_dir(self.split_dir / "masks", "CocoLvis masks")
        self.anno_path = self.split_dir / anno_file
        anno = _load_pickle(self.anno_path)
        if not isinstance(anno, dict):
            raise ValueError(f"{self.split_dir / anno_file}: expected a dict image_id -> annotation, got {type(anno)}")
        self.samples = sorted(anno.items())
        self.stuff_prob = stuff_prob
        _require_files("CocoLvis", self.anno_path, [d / f"{i}{ext}" for i, _ in self.samples
                                                    for d, ext in ((self.images_dir, ".jpg"), (self.masks_dir, ".pickle"))])

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        image_id, info = self.samples[index]
        path = self.masks_dir / f"{image_id}.pickle"
        try:
            image = read_image(self.images_dir / f"{image_id}.jpg")
            encoded, mapping = _load_pickle(path)
            layers = [decode_mask_bytes(bytes(x), path, "mask layer in").values for x in encoded]
            n_inst, hierarchy = int(info["num_instance_masks"]), info["hierarchy"]
        except (DataFileError, FileNotFoundError) as e:
            raise InvalidSampleError(str(image_id), str(e)) from None
        except (TypeError, ValueError, KeyError) as e:
            raise InvalidSampleError(str(image_id), f"CocoLvis: malformed masks file {path} or annotation: "
                                                    f"{type(e).__name__}: {e}") from None
        if any(x.ndim != 2 or x.shape != image.shape[:2] for x in layers):
            raise InvalidSampleError(str(image_id), f"CocoLvis: {path}: a mask layer is not a single-channel map of "
                                                    f"the image's size {image.shape[:2]}")

        parents: dict[int, int | None] = {}
        for idx, node in hierarchy.items():
            parent = None if node is None else node.get("parent")
            parents[int(idx) + 1] = None if parent is None else int(parent) + 1
        if self.stuff_prob > 0 and rng.random() < self.stuff_prob:
            for idx in range(n_inst, len(mapping)):
                parents[idx + 1] = None  # stuff becomes extra root objects
        # Local ids -> global ids per layer; anything not live (e.g. erased stuff) becomes 0.
        out = np.zeros((*image.shape[:2], max(len(layers), 1)), np.int32)
        for li, layer in enumerate(layers):
            lut = np.zeros(256, np.int32)
            for oid in parents:
                l_idx, local = mapping[oid - 1]
                if l_idx == li:
                    lut[local] = oid
            out[..., li] = lut[layer]
        return TrainSample(image, out, parents, id=str(image_id))

    def check_key(self) -> list[Any] | None:
        files = [self.anno_path]
        files += [d / f"{i}{ext}" for i, _ in self.samples for d, ext in ((self.images_dir, ".jpg"),
                                                                           (self.masks_dir, ".pickle"))]
        return ["CocoLvis", self.stuff_prob > 0, files]


class FolderTrain(TrainSource):
    """Your own data: ``root/images/*`` + ``root/masks/*`` matched by file stem (``iis/data/README.md``).

    Masks are decoded by the same :class:`iis.data.folder.FolderEncoding` as the evaluation ``folder``
    reader, so one folder trains and evaluates with the same objects.

    Args:
        root: the folder.
        images, masks: sub-folder names.
        mode: ``'binary'`` (one object, value > threshold) or ``'instances'`` (one object per non-zero
            value, or per 4-connected component with ``components=True``).
        threshold: binary: object = value > threshold; None = 127, or 0 for masks holding only 0/1.
        ignore_value: stored value marking ignore pixels (target -1, never clicked), or None.
        min_area: an object with fewer pixels is an error (0 accepts any size).
        components: instances: split each value into 4-connected components.
        allow_empty: accept masks without any object (background-only samples); default: an error.
        split, val_fraction, split_seed, files: which pairs to use (:func:`iis.data.folder.select_split`);
            with ``val_fraction > 0`` the default split is ``'train'``, and the evaluation reader
            ``get_dataset('folder', root, val_fraction=..., split_seed=...)`` takes the rest.
    """

    def __init__(self, root: str | Path, images: str = "images", masks: str = "masks", mode: str = "binary",
                 threshold: int | None = None, ignore_value: int | None = None, min_area: int = DEFAULT_MIN_AREA,
                 components: bool = False, allow_empty: bool = False, split: str | None = None,
                 val_fraction: float = 0.0, split_seed: int = 0, files: Sequence[str] | None = None) -> None:
        self.encoding = FolderEncoding(mode, threshold, ignore_value, min_area, components)
        self.root = _need_dir(Path(root), "FolderTrain root")
        img_dir = _need_dir(self.root / images, "FolderTrain images")
        mask_dir = _need_dir(self.root / masks, "FolderTrain masks")
        pairs, problems = pair_by_stem(img_dir, mask_dir)
        raise_pairing_problems("FolderTrain", problems)
        if not pairs:
            raise FileNotFoundError(f"FolderTrain: no image/mask pairs in {img_dir} and {mask_dir}")
        self.pairs = select_split(pairs, lambda p: p.stem, split, val_fraction, split_seed, default="train",
                                  files=files, what="FolderTrain")
        self.items = [(p.image, p.mask) for p in self.pairs]
        self.allow_empty = allow_empty
        self._split = (split, val_fraction, split_seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        pair = self.pairs[index]
        try:
            image = read_image(pair.image)
            labels = decode_folder_mask(pair.mask, self.encoding, empty_ok=self.allow_empty)
        except DataFileError as e:
            raise InvalidSampleError(pair.stem, str(e)) from None
        if labels.shape != image.shape[:2]:
            raise InvalidSampleError(pair.stem, f"mask {pair.mask} is {labels.shape[0]}x{labels.shape[1]} (HxW) but "
                                                f"image {pair.image} is {image.shape[0]}x{image.shape[1]}")
        binary = self.encoding.mode == "binary"
        for key in np.unique(labels[labels > 0]):
            why = folder_instance_problem(labels, int(key), self.encoding, pair.mask, binary)
            if why:
                raise InvalidSampleError(pair.stem, why)
        ignore = labels == -1
        return TrainSample.from_instance_map(image, np.maximum(labels, 0), ignore if ignore.any() else None,
                                             id=pair.stem)

    def check_key(self) -> list[Any] | None:
        return ["FolderTrain", self.encoding.to_dict(), self.allow_empty, [f for p in self.pairs for f in (p.image, p.mask)]]


class CocoJsonTrain(TrainSource):
    """COCO instances json (polygons, RLE or uncompressed RLE; also LVIS-style files) via pycocotools.

    Overlapping annotations go to separate layers (all objects are roots).

    Args:
        crowd: what ``iscrowd=1`` annotations become: ``'object'`` (C+L keeps crowd segments, §C.3),
            ``'ignore'`` or ``'skip'``.
        skip_empty: leave out images without usable annotations.
    """

    def __init__(self, images_dir: str | Path, annotation_json: str | Path, crowd: str = "object",
                 skip_empty: bool = True) -> None:
        if crowd not in ("object", "ignore", "skip"):
            raise ValueError(f"crowd: expected 'object', 'ignore' or 'skip', got {crowd!r}")
        from pycocotools.coco import COCO

        self.images_dir = _need_dir(Path(images_dir), "CocoJsonTrain images_dir")
        ann_path = Path(annotation_json)
        if not ann_path.is_file():
            raise FileNotFoundError(f"CocoJsonTrain: annotation file not found: {ann_path}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(ann_path))
        except Exception as e:
            raise ValueError(f"CocoJsonTrain: cannot parse COCO json {ann_path}: {e}") from e
        self.crowd = crowd
        ids = sorted(self.coco.getImgIds())
        if skip_empty:
            ids = [i for i in ids if any(self._usable(a) for a in self.coco.imgToAnns.get(i, []))]
        self.image_ids = ids

    def _usable(self, ann: dict) -> bool:
        return "segmentation" in ann and not (ann.get("iscrowd", 0) and self.crowd == "skip")

    def __len__(self) -> int:
        return len(self.image_ids)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        info = self.coco.imgs[self.image_ids[index]]
        try:
            image = read_image(self.images_dir / info["file_name"])
        except DataFileError as e:
            raise InvalidSampleError(Path(info["file_name"]).stem, str(e)) from None
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise InvalidSampleError(Path(info["file_name"]).stem, f"CocoJsonTrain: {self.images_dir / info['file_name']} "
                                     f"is {h}x{w} but the json says {info.get('height')}x{info.get('width')}")
        masks, ignore = [], np.zeros((h, w), bool)
        for ann in self.coco.imgToAnns.get(info["id"], []):
            if not self._usable(ann):
                continue
            try:
                m = self.coco.annToMask(ann).astype(bool)
            except Exception as e:
                raise InvalidSampleError(Path(info["file_name"]).stem, f"CocoJsonTrain: bad segmentation in annotation "
                                         f"{ann.get('id')}: {e}") from None
            if ann.get("iscrowd", 0) and self.crowd == "ignore":
                ignore |= m
            elif m.any():
                masks.append(m)
        layers = pack_masks(masks, (h, w))
        return TrainSample(image, layers, {i + 1: None for i in range(len(masks))},
                           ignore if ignore.any() else None, id=Path(info["file_name"]).stem)


class SyntheticTrain(TrainSource):
    """Generated images with 1-``max_objects`` shapes (ellipses, polygons) over textured backgrounds.

    Each index is generated from ``(seed, index)`` alone, so the set is deterministic and needs no disk.
    Objects are flat-coloured with mild noise and contrast with the striped background, so a tiny model
    learns them in minutes (quickstart, smoke tests).

    Args:
        n: number of images.
        size: ``H`` or ``(H, W)``.
        seed: generation seed.
        max_objects: up to this many shapes (later shapes occlude earlier ones).
    """

    reads_files = False

    def __init__(self, n: int = 1000, size: int | tuple[int, int] = 96, seed: int = 0, max_objects: int = 4) -> None:
        if n < 1 or max_objects < 1:
            raise ValueError(f"SyntheticTrain: n and max_objects must be >= 1, got n={n}, max_objects={max_objects}")
        self.n, self.seed, self.max_objects = n, seed, max_objects
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if min(self.size) < 16:
            raise ValueError(f"SyntheticTrain: size must be at least 16 px, got {size}")

    def __len__(self) -> int:
        return self.n

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        g = np.random.default_rng([self.seed, index])  # per-index stream: independent of the caller's rng
        h, w = self.size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        c1, c2 = g.uniform(0, 255, 3), g.uniform(0, 255, 3)
        theta, freq = g.uniform(0, np.pi), g.uniform(0.05, 0.3)
        stripes = 0.5 + 0.5 * np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)))
        image = c1 * stripes[..., None] + c2 * (1 - stripes[..., None]) + g.normal(0, 6, (h, w, 3))
        inst = np.zeros((h, w), np.int32)
        bg_mean = (c1 + c2) / 2
        for oid in range(1, int(g.integers(1, self.max_objects + 1)) + 1):
            colour = g.uniform(0, 255, 3)
            for _ in range(10):  # keep objects distinguishable from the background
                if np.abs(colour - bg_mean).max() > 70:
                    break
                colour = g.uniform(0, 255, 3)
            canvas = np.zeros((h, w), np.uint8)
            cy, cx = g.uniform(0.15, 0.85) * h, g.uniform(0.15, 0.85) * w
            r = g.uniform(0.1, 0.28) * min(h, w)
            if g.random() < 0.5:
                axes = (max(2, int(r)), max(2, int(r * g.uniform(0.5, 1.0))))
                cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(g.uniform(0, 180)), 0, 360, 1, -1)
            else:
                k = int(g.integers(3, 8))  # jittered even angles: no degenerate slivers
                ang = (np.arange(k) + g.uniform(-0.3, 0.3, k)) * (2 * np.pi / k)
                rad = r * g.uniform(0.6, 1.0, k)
                pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
                cv2.fillPoly(canvas, [pts], 1)
            m = canvas.astype(bool)
            inst[m] = oid
            image[m] = colour + g.normal(0, 6, (int(m.sum()), 3))
        image = np.clip(image, 0, 255).astype(np.uint8)
        ids, counts = np.unique(inst, return_counts=True)
        for oid, c in zip(ids, counts):  # drop slivers left by occlusion
            if oid > 0 and c < 20:
                inst[inst == oid] = 0
        if not inst.any():  # should not happen with the sizes above; keeps "at least one object" true
            canvas = np.zeros((h, w), np.uint8)
            cv2.circle(canvas, (w // 2, h // 2), max(3, min(h, w) // 5), 1, -1)
            inst[canvas > 0] = 1
            image[canvas > 0] = (255 - bg_mean).astype(np.uint8)
        return TrainSample.from_instance_map(image, inst, id=f"synthetic_{self.seed}_{index}")


class SyntheticShapesTrain(TrainSource):
    """Training images from the same procedural family as the ``synthetic`` evaluation set.

    Sample ``i`` is image ``i`` of ``iis.data.synthetic.SyntheticDataset`` built with seed
    ``seed + 1`` (the evaluation set uses seed 0, so train and eval images never coincide): one target
    shape over a smooth background with unlabelled distractors. The quickstart trains on it, so the
    NoC it reports measures generalisation to unseen images of the same kind.
    """

    reads_files = False

    def __init__(self, n: int = 1000, size: int | tuple[int, int] = 96, seed: int = 0) -> None:
        from iis.data.synthetic import SyntheticDataset

        self._ds = SyntheticDataset(num_samples=n, size=size, seed=seed + 1)

    def __len__(self) -> int:
        return len(self._ds)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        s = self._ds[index]
        return TrainSample.from_instance_map(s.image, (s.gt == 1).astype(np.int32),
                                             ignore=(s.gt == -1) if (s.gt == -1).any() else None, id=s.id)
