"""The COCO+LVIS merge of RITM (protocol.md §C.3): the per-image rules and RITM's packed mask format.

Rules (RITM ``scripts/annotations_conversion/{coco_lvis,common}.py``, ``min_object_area=80``):

* LVIS polygons are rasterised; LVIS masks and COCO panoptic *thing* segments (crowd included) below
  80 px are dropped.
* A COCO mask is kept unless an LVIS mask has bbox IoU > 0.70 and mask IoU > 0.70 with it (LVIS wins).
* An LVIS mask is kept unless a *later* LVIS mask has bbox IoU > 0.70 and mask IoU > 0.85 with it.
* Instances = kept COCO masks, then kept LVIS masks. An image without instances is left out.
* Hierarchy: largest first; j is a child of i if ``|bbox_i ∩ bbox_j| / |bbox_j| >= 0.7`` and
  ``|m_i ∩ m_j| / |m_j| > 0.8``, attached at the deepest compatible descendant.
* Stuff: each panoptic stuff segment minus the union of the instances, kept if its area is > 500.
* Packing: largest first into the first layer it does not overlap, at most 255 objects per layer.

"bbox IoU" is RITM's ``get_bbox_iou``: the *product of the row and column interval IoUs* (inclusive
pixel bounds), not the area IoU of the boxes; we keep it so the merge matches the released annotation.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, Sequence

import cv2
import numpy as np

__all__ = ["MIN_AREA", "STUFF_MIN_AREA", "mask_bbox", "bbox_iou", "rasterize_segmentation",
           "decode_panoptic", "merge_masks", "masks_hierarchy", "encode_layers", "decode_layers",
           "dump_pickle", "merge_image"]

MIN_AREA = 80  # RITM create_annotations(min_object_area=80); LVIS and COCO masks need area >= 80
STUFF_MIN_AREA = 500  # stuff kept if area > 500 (coco_lvis.py)
COCO_VS_LVIS = (0.70, 0.70)  # (bbox IoU, mask IoU) above which LVIS replaces the COCO mask
LVIS_DUPLICATE = (0.70, 0.85)  # (bbox IoU, mask IoU) above which an earlier LVIS mask is a duplicate
CHILD_BBOX, CHILD_MASK = 0.7, 0.8  # common.py::get_masks_hierarchy: bbox cover >= 0.7, mask cover > 0.8
MAX_PER_LAYER = 255  # uint8 layers, 0 = none
PICKLE_PROTOCOL = 4  # fixed, so every Python >= 3.8 writes the same bytes

Box = tuple[int, int, int, int]  # (row min, row max, col min, col max), inclusive


def mask_bbox(mask: np.ndarray) -> Box:
    """Inclusive ``(rmin, rmax, cmin, cmax)`` of a non-empty boolean mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask_bbox: empty mask")
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def _interval_iou(a0: int, a1: int, b0: int, b1: int) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0) + 1)
    return inter / max(1e-6, max(a1, b1) - min(a0, b0) + 1)


def bbox_iou(b1: Box, b2: Box) -> float:
    """RITM ``get_bbox_iou``: row-interval IoU times column-interval IoU."""
    return _interval_iou(b1[0], b1[1], b2[0], b2[1]) * _interval_iou(b1[2], b1[3], b2[2], b2[3])


def _intersection(m1: np.ndarray, m2: np.ndarray, b1: Box, b2: Box) -> int:
    r0, r1, c0, c1 = max(b1[0], b2[0]), min(b1[1], b2[1]), max(b1[2], b2[2]), min(b1[3], b2[3])
    if r0 > r1 or c0 > c1:
        return 0
    return int(np.count_nonzero(m1[r0:r1 + 1, c0:c1 + 1] & m2[r0:r1 + 1, c0:c1 + 1]))


class _Mask:
    """A boolean mask with its bbox and area (the bbox crops every pairwise test)."""

    __slots__ = ("m", "box", "area")

    def __init__(self, m: np.ndarray) -> None:
        self.m = np.asarray(m, bool)
        self.area = int(np.count_nonzero(self.m))
        self.box = mask_bbox(self.m) if self.area else (0, -1, 0, -1)


def _overlaps(a: _Mask, b: _Mask, box_thr: float, mask_thr: float) -> bool:
    if bbox_iou(a.box, b.box) <= box_thr:
        return False
    inter = _intersection(a.m, b.m, a.box, b.box)
    return inter / (a.area + b.area - inter) > mask_thr


def rasterize_segmentation(segmentation: Any, height: int, width: int, method: str = "ritm") -> np.ndarray:
    """LVIS/COCO ``segmentation`` -> ``bool (H, W)``.

    Args:
        segmentation: list of polygons ``[x0, y0, x1, y1, ...]`` (LVIS), or an RLE dict.
        method: ``'ritm'``: vertices rounded to integers and filled with ``cv2.fillPoly`` (RITM
            ``LvisDataset.get_mask_from_polygon``; reproduces the released annotation); ``'coco'``:
            pycocotools ``frPyObjects`` + ``decode`` (the COCO API's rasteriser).
    """
    if method not in ("ritm", "coco"):
        raise ValueError(f"rasterizer: expected 'ritm' or 'coco', got {method!r}")
    if isinstance(segmentation, dict) or method == "coco":
        from pycocotools import mask as mask_utils

        seg = segmentation
        if isinstance(seg, dict) and isinstance(seg.get("counts"), list):
            seg = mask_utils.frPyObjects(seg, height, width)  # uncompressed RLE
        elif not isinstance(seg, dict):
            seg = mask_utils.merge(mask_utils.frPyObjects([list(map(float, p)) for p in seg], height, width))
        return mask_utils.decode(seg).astype(bool)
    mask = np.zeros((height, width), np.uint8)
    for poly in segmentation:
        pts = np.asarray(poly, np.float64)
        if pts.ndim != 1 or pts.size % 2:
            raise ValueError(f"polygon: expected a flat [x0, y0, x1, y1, ...] list, got {len(pts)} numbers")
        cv2.fillPoly(mask, np.round(pts.reshape(1, -1, 2)).astype(np.int32), 1)
    return mask.astype(bool)


def decode_panoptic(png_bgr: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG as ``cv2.imread`` gives it (BGR) -> ``int32`` segment ids ``R + 256 G + 256² B``."""
    if png_bgr.ndim != 3 or png_bgr.shape[2] != 3:
        raise ValueError(f"panoptic PNG: expected an RGB image, got shape {png_bgr.shape}")
    p = png_bgr.astype(np.int32)
    return p[..., 2] + 256 * p[..., 1] + 65536 * p[..., 0]


def masks_hierarchy(masks: Sequence[np.ndarray]) -> dict[int, dict | None]:
    """RITM's part hierarchy: ``{i: None | {'children': [...], 'parent': p | None, 'node_level': l}}``.

    None marks an isolated root. Largest masks come first (ties: the later mask first, as RITM's
    reversed stable sort).
    """
    ms = [m if isinstance(m, _Mask) else _Mask(m) for m in masks]
    n = len(ms)
    order = sorted(range(n), key=lambda k: (ms[k].area, k), reverse=True)
    children: list[list[int]] = [[] for _ in range(n)]
    parent: list[int | None] = [None] * n
    level = [0] * n

    def contains(i: int, j: int) -> bool:  # is j (not larger) a part of i?
        a, b = ms[i], ms[j]
        if b.area == 0:
            return False
        rows = min(a.box[1], b.box[1]) - max(a.box[0], b.box[0]) + 1
        cols = min(a.box[3], b.box[3]) - max(a.box[2], b.box[2]) + 1
        box_inter = max(0, rows) * max(0, cols)
        box_j = (b.box[1] - b.box[0] + 1) * (b.box[3] - b.box[2] + 1)
        if box_inter / box_j < CHILD_BBOX:
            return False
        return _intersection(a.m, b.m, a.box, b.box) / b.area > CHILD_MASK

    def deepest(i: int, j: int) -> int | None:  # deepest node under i (or i) that contains j
        for c in children[i]:
            if ms[c].area >= ms[j].area and (d := deepest(c, j)) is not None:
                return d
        return i if contains(i, j) else None

    for a_pos, i in enumerate(order[:-1]):
        for j in order[a_pos + 1:]:
            if parent[j] is not None or not contains(i, j):
                continue
            p = deepest(i, j)
            assert p is not None  # contains(i, j) holds
            children[p].append(j)
            parent[j], level[j] = p, level[p] + 1
    return {k: None if parent[k] is None and not children[k] else
            {"children": children[k], "parent": parent[k], "node_level": level[k]} for k in range(n)}


def merge_masks(lvis_masks: Sequence[np.ndarray], coco_things: Sequence[np.ndarray],
                coco_stuff: Sequence[np.ndarray] = (), min_area: int = MIN_AREA,
                stuff_min_area: int = STUFF_MIN_AREA) -> tuple[list[np.ndarray], int, dict[int, dict | None]]:
    """Merges one image's masks by the module rules.

    Args:
        lvis_masks: rasterised LVIS masks, in annotation order (order matters for de-duplication).
        coco_things: COCO panoptic thing segments (crowd included), in ``segments_info`` order.
        coco_stuff: COCO panoptic stuff segments.

    Returns:
        ``(masks, num_instance_masks, hierarchy)``: instances first (kept COCO, then kept LVIS), then
        stuff; ``([], 0, {})`` when no instance survives (RITM leaves such images out).
    """
    lv = [m for m in map(_Mask, lvis_masks) if m.area >= min_area]
    co = [m for m in map(_Mask, coco_things) if m.area >= min_area]
    kept = [c for c in co if not any(_overlaps(v, c, *COCO_VS_LVIS) for v in lv)]
    kept += [v for k, v in enumerate(lv) if not any(_overlaps(v, w, *LVIS_DUPLICATE) for w in lv[k + 1:])]
    if not kept:
        return [], 0, {}
    hierarchy = masks_hierarchy(kept)
    union = np.zeros_like(kept[0].m)
    for m in kept:
        union |= m.m
    stuff = [s for s in (np.asarray(s, bool) & ~union for s in coco_stuff) if np.count_nonzero(s) > stuff_min_area]
    return [m.m for m in kept] + stuff, len(kept), hierarchy


def encode_layers(masks: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Packs masks into PNG-encoded ``uint8`` label layers (RITM ``encode_masks``).

    Returns:
        ``(layers, objs_mapping)``: ``layers[l]`` is a 1-D ``uint8`` array holding a PNG;
        ``objs_mapping[i] = (layer, local_id)`` with ``local_id`` in 1..255.
    """
    if not masks:
        raise ValueError("encode_layers: no masks")
    ms = [_Mask(m) for m in masks]
    shape = ms[0].m.shape
    layers, counts = [np.zeros(shape, np.uint8)], [0]
    mapping: list[tuple[int, int]] = [(-1, -1)] * len(ms)
    for k in sorted(range(len(ms)), key=lambda k: (ms[k].area, k), reverse=True):
        m = ms[k]
        if m.m.shape != shape:
            raise ValueError(f"encode_layers: mask {k} has shape {m.m.shape}, mask 0 has {shape}")
        crop = (slice(m.box[0], m.box[1] + 1), slice(m.box[2], m.box[3] + 1))
        sub = m.m[crop]
        for li, layer in enumerate(layers):
            if counts[li] < MAX_PER_LAYER and not layer[crop][sub].any():
                break
        else:
            layers.append(np.zeros(shape, np.uint8))
            counts.append(0)
            li = len(layers) - 1
        counts[li] += 1
        layers[li][crop][sub] = counts[li]
        mapping[k] = (li, counts[li])
    return [cv2.imencode(".png", x)[1] for x in layers], mapping


def decode_layers(layers: Sequence[Any], mapping: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Inverse of `encode_layers`: the boolean mask of every object, in object order."""
    dec = [cv2.imdecode(np.frombuffer(bytes(x), np.uint8), cv2.IMREAD_UNCHANGED) for x in layers]
    return [dec[li] == local for li, local in mapping]


def dump_pickle(obj: Any) -> bytes:
    """Pickles with protocol 4; numpy arrays as ``numpy.frombuffer(bytes, 'uint8')``.

    ``cv2.imdecode`` (RITM's loader) still gets arrays, and the bytes do not depend on the numpy version
    (a plain array pickle names ``numpy.core`` or ``numpy._core``), so manifests agree across labs.
    """
    buf = io.BytesIO()
    p = pickle.Pickler(buf, protocol=PICKLE_PROTOCOL)
    p.dispatch_table = {np.ndarray: lambda a: (np.frombuffer, (np.ascontiguousarray(a, np.uint8).tobytes(), "uint8"))}
    p.dump(obj)
    return buf.getvalue()


def merge_image(lvis_segmentations: Sequence[Any], height: int, width: int, panoptic_png: np.ndarray,
                segments: Sequence[tuple[int, bool]], rasterizer: str = "ritm", min_area: int = MIN_AREA
                ) -> tuple[list[np.ndarray], int, dict[int, dict | None]]:
    """One image from its raw annotations: LVIS segmentations + the panoptic PNG (BGR, as cv2 reads it).

    Args:
        segments: ``(segment id, is_thing)`` in ``segments_info`` order.
    """
    ids = decode_panoptic(panoptic_png)
    if ids.shape != (height, width):
        raise ValueError(f"panoptic PNG is {ids.shape[0]}x{ids.shape[1]} but LVIS says {height}x{width}")
    lvis = [rasterize_segmentation(s, height, width, rasterizer) for s in lvis_segmentations]
    things = [ids == sid for sid, thing in segments if thing]
    stuff = [ids == sid for sid, thing in segments if not thing]
    return merge_masks(lvis, things, stuff, min_area=min_area)
