"""Training sources: each returns a multi-object `TrainSample` for an index (protocol.md §C.1-C.3).

A source is indexable (``len``, ``get(index, rng)``); the random draws some sources need (C+L stuff) come
from the caller's generator. A source may expose ``sample_probs`` (one probability per index) to make
`TrainDataset` redraw indices with those weights (SBD hard-sample weighting, §C.2).
"""

from __future__ import annotations

import contextlib
import io
import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from iis.data.train.sample import TrainSample, pack_masks

__all__ = ["TrainSource", "SBDTrain", "CocoLvis", "FolderTrain", "CocoJsonTrain", "SyntheticTrain", "read_rgb"]

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | Path) -> np.ndarray:
    """Reads an image file as ``uint8 (H, W, 3)`` RGB; clear error naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot decode image file {path} (expected a readable JPEG/PNG/...)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}")
    return path


def _load_pickle(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"file not found: {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except Exception as e:  # corrupt or truncated pickle
        raise ValueError(f"cannot unpickle {path}: {e}") from e


class TrainSource:
    """Base class: ``len(source)`` items, ``source.get(index, rng) -> TrainSample``."""

    sample_probs: np.ndarray | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        raise NotImplementedError

    def __getitem__(self, index: int) -> TrainSample:
        if not 0 <= index < len(self):
            raise IndexError(f"{type(self).__name__}: index {index} out of range [0, {len(self)})")
        return self.get(index, np.random.default_rng(index))


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
        self.names = [ln.strip() for ln in split_file.read_text().splitlines() if ln.strip()]
        self.images_dir = _need_dir(self.root / "img", "SBDTrain images")
        self.inst_dir = _need_dir(self.root / "inst", "SBDTrain instance masks")
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
        path = self.inst_dir / f"{self.names[index]}.mat"
        if not path.is_file():
            raise FileNotFoundError(f"SBDTrain: instance file not found: {path}")
        from scipy.io import loadmat

        try:
            inst = np.asarray(loadmat(str(path))["GTinst"][0][0][0]).astype(np.int32)
        except Exception as e:
            raise ValueError(f"SBDTrain: cannot read GTinst.Segmentation from {path}: {e}") from e
        if inst.ndim != 2:
            raise ValueError(f"SBDTrain: {path}: expected a 2-D instance map, got shape {inst.shape}")
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
        image = read_rgb(self.images_dir / f"{self.names[index]}.jpg")
        inst = self.load_instances(index)
        if inst.shape != image.shape[:2]:
            raise ValueError(f"SBDTrain: {self.names[index]}: mask {inst.shape} and image {image.shape[:2]} differ")
        return TrainSample.from_instance_map(image, inst, id=self.names[index])


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
        anno = _load_pickle(self.split_dir / anno_file)
        if not isinstance(anno, dict):
            raise ValueError(f"{self.split_dir / anno_file}: expected a dict image_id -> annotation, got {type(anno)}")
        self.samples = sorted(anno.items())
        self.stuff_prob = stuff_prob

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        image_id, info = self.samples[index]
        image = read_rgb(self.images_dir / f"{image_id}.jpg")
        path = self.masks_dir / f"{image_id}.pickle"
        try:
            encoded, mapping = _load_pickle(path)
            layers = [cv2.imdecode(np.frombuffer(bytes(x), np.uint8), cv2.IMREAD_UNCHANGED) for x in encoded]
            n_inst, hierarchy = int(info["num_instance_masks"]), info["hierarchy"]
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"CocoLvis {image_id}: malformed masks file {path} or annotation: {e}") from e
        if any(x is None or x.shape != image.shape[:2] for x in layers):
            raise ValueError(f"CocoLvis: {path}: a layer failed to decode or does not match image {image.shape[:2]}")

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


def _read_mask(path: Path) -> np.ndarray:
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise ValueError(f"cannot decode mask file {path}")
    if m.ndim == 3:
        if m.shape[2] == 4:
            m = m[..., 3]  # RGBA: use the alpha channel
        elif (m == m[..., :1]).all():
            m = m[..., 0]
        else:
            raise ValueError(f"mask file {path}: expected a single-channel (or gray RGB) mask, got colour data")
    return m


class FolderTrain(TrainSource):
    """``root/images/*`` + ``root/masks/*``, matched by file stem.

    Args:
        mask_mode: ``'binary'`` (one object: value > 127, or > 0 for {0, 1} masks; alpha mattes too),
            ``'instance'`` (each non-zero value is an instance; 8- or 16-bit PNG) or ``'auto'`` (binary when
            the values are within {0, 1} or {0, 255}, instance otherwise).
        ignore_value: mask value marking ignore pixels (e.g. 255 for VOC-style maps), or None.
    """

    def __init__(self, root: str | Path, images: str = "images", masks: str = "masks", mask_mode: str = "auto",
                 ignore_value: int | None = None) -> None:
        if mask_mode not in ("auto", "binary", "instance"):
            raise ValueError(f"mask_mode: expected 'auto', 'binary' or 'instance', got {mask_mode!r}")
        root = Path(root)
        img_dir, mask_dir = _need_dir(root / images, "FolderTrain images"), _need_dir(root / masks, "FolderTrain masks")
        masks_by_stem = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() in IMAGE_EXTS}
        self.items = []
        missing = []
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() not in IMAGE_EXTS:
                continue
            if p.stem in masks_by_stem:
                self.items.append((p, masks_by_stem[p.stem]))
            else:
                missing.append(p.name)
        if missing:
            raise FileNotFoundError(f"FolderTrain: no mask in {mask_dir} for {len(missing)} image(s): {missing[:3]}")
        if not self.items:
            raise FileNotFoundError(f"FolderTrain: no images ({'/'.join(IMAGE_EXTS)}) in {img_dir}")
        self.mask_mode, self.ignore_value = mask_mode, ignore_value

    def __len__(self) -> int:
        return len(self.items)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        img_path, mask_path = self.items[index]
        image, m = read_rgb(img_path), _read_mask(mask_path)
        if m.shape != image.shape[:2]:
            raise ValueError(f"FolderTrain: mask {mask_path} is {m.shape}, image {img_path} is {image.shape[:2]}")
        ignore = None
        if self.ignore_value is not None:
            ignore = m == self.ignore_value
            m = np.where(ignore, 0, m)
        values = set(np.unique(m).tolist())
        mode = self.mask_mode
        if mode == "auto":
            mode = "binary" if values <= {0, 1} or values <= {0, 255} else "instance"
        if mode == "binary":
            inst = (m > (0 if values <= {0, 1} else 127)).astype(np.int32)
        else:
            inst = m.astype(np.int32)
        return TrainSample.from_instance_map(image, inst, ignore, id=img_path.stem)


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
        image = read_rgb(self.images_dir / info["file_name"])
        h, w = image.shape[:2]
        if (info.get("height", h), info.get("width", w)) != (h, w):
            raise ValueError(f"CocoJsonTrain: {info['file_name']} is {h}x{w} but the json says "
                             f"{info.get('height')}x{info.get('width')}")
        masks, ignore = [], np.zeros((h, w), bool)
        for ann in self.coco.imgToAnns.get(info["id"], []):
            if not self._usable(ann):
                continue
            try:
                m = self.coco.annToMask(ann).astype(bool)
            except Exception as e:
                raise ValueError(f"CocoJsonTrain: bad segmentation in annotation {ann.get('id')}: {e}") from e
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

    def __init__(self, n: int = 1000, size: int | tuple[int, int] = 96, seed: int = 0) -> None:
        from iis.data.synthetic import SyntheticDataset

        self._ds = SyntheticDataset(num_samples=n, size=size, seed=seed + 1)

    def __len__(self) -> int:
        return len(self._ds)

    def get(self, index: int, rng: np.random.Generator) -> TrainSample:
        s = self._ds[index]
        return TrainSample.from_instance_map(s.image, (s.gt == 1).astype(np.int32),
                                             ignore=(s.gt == -1) if (s.gt == -1).any() else None, id=s.id)
