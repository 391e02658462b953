"""CVAT's interactor contract (``POST /cvat`` and the Nuclio function of ``iis-serve cvat-function``).

What CVAT's lambda manager sends an ``interactor`` function (``cvat/apps/lambda_manager/views.py``)::

    {"image": "<base64 of the frame, JPEG or PNG>",
     "pos_points": [[x, y], ...], "neg_points": [[x, y], ...],   # frame pixels, floats
     "obj_bbox": null,                  # [[x1, y1], [x2, y2]] only for functions with startswith_box
     "threshold": 0.5}                  # only when the caller set one

Stateless: every call carries all the points, and no previous mask. CVAT sends positive and negative
points in two lists, so the order between them is lost: the clicks are replayed positives first, then
negatives (what CVAT's own RITM/HRNet function does too), each list in its own order.

Answer (what CVAT's UI reads as ``InteractorResults``)::

    {"mask": [[0, 1, ...], ...],        # H x W, 1 = object
     "points": [[x, y], ...]}           # the outer ring of the largest object, frame pixels

CVAT >= 2.4 builds a mask object from ``mask`` (or, with "Convert masks to polygons", a polygon from
``points``; were ``points`` absent it would trace ``mask`` itself); older CVAT read ``points`` only.
Sending both serves either. ``points`` is ``[]`` for an empty mask. ``obj_bbox`` is accepted and
ignored (the iis methods take clicks only; the generated function does not ask CVAT for a box).
``threshold``, when sent, re-thresholds the probabilities (CVAT's RITM function does the same).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..api import Segmenter
from ..core.types import Click
from .codec import (b64decode_field, decode_image, largest_exterior, parse_threshold, require,
                    with_threshold)
from .config import ServeConfig
from .errors import invalid
from .predict import check_object, run_segmenter

__all__ = ["handle_cvat", "cvat_points"]


def cvat_points(value: Any, field: str, shape: tuple[int, int]) -> list[tuple[float, float]]:
    """``[[x, y], ...]`` -> (x, y) pairs inside the ``(H, W)`` image."""
    if not isinstance(value, list):
        raise invalid(f"{field}: expected a list of [x, y] points, got {type(value).__name__}")
    H, W = shape
    out = []
    for i, p in enumerate(value):
        if not (isinstance(p, (list, tuple)) and len(p) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
            raise invalid(f"{field}[{i}]: expected [x, y] numbers, got {p!r}")
        x, y = float(p[0]), float(p[1])
        if not (0.0 <= x < W and 0.0 <= y < H):
            raise invalid(f"{field}[{i}] (x={x:g}, y={y:g}): outside the {W}x{H} frame; expected 0 <= x < {W} "
                          f"and 0 <= y < {H}")
        out.append((x, y))
    return out


def handle_cvat(seg: Segmenter, payload: Any, cfg: ServeConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    payload = check_object(payload, "CVAT request")
    image = decode_image(b64decode_field(require(payload, "image", "CVAT request"), "image"), "image", cfg)
    shape = image.shape[:2]
    pos = cvat_points(require(payload, "pos_points", "CVAT request"), "pos_points", shape)
    neg = cvat_points(payload.get("neg_points") or [], "neg_points", shape)
    if not pos:
        raise invalid("pos_points: empty; expected at least 1 positive point (min_pos_points: 1)")
    if len(pos) + len(neg) > cfg.max_clicks:
        raise invalid(f"pos_points + neg_points: {len(pos) + len(neg)} points; the limit is {cfg.max_clicks} "
                      "(iis-serve --max-clicks)")
    box = payload.get("obj_bbox")
    if box is not None and not (isinstance(box, list) and len(box) in (2, 4)):
        raise invalid(f"obj_bbox: expected null or [[x1, y1], [x2, y2]], got {box!r}")
    threshold = parse_threshold(payload.get("threshold"))
    clicks = [Click(x, y, True) for x, y in pos] + [Click(x, y, False) for x, y in neg]
    pred = with_threshold(run_segmenter(seg, image, clicks), threshold)
    return {"mask": pred.mask.astype(np.uint8).tolist(),
            "points": largest_exterior(pred, cfg.polygon_tolerance),
            "latency_ms": round((time.perf_counter() - t0) * 1000.0, 2)}
