"""``POST /predict``: the server's own JSON contract (image + clicks -> mask, polygons, RLE).

Request (JSON object)::

    {"image": "<base64 PNG/JPEG, optionally a data: URL>",
     "clicks": [[x, y, positive], ...],          # original pixels, in click order; positive true/false
     "mask": "<base64 PNG>",                     # optional starting mask (gray > 127; same size)
     "threshold": 0.49,                          # optional: re-threshold the probabilities
     "return_prob": false}                       # optional: also answer the probability map

Answer::

    {"mask": "<base64 8-bit PNG, object 255>", "polygons": [{"exterior": [[x, y], ...], "holes": [...]}],
     "rle": {"size": [H, W], "counts": "<COCO RLE>"}, "width": W, "height": H, "area": n_pixels,
     "threshold": t, "clicks": k, "method": "...", "latency_ms": ms, "prob": "<base64 PNG 0..255>"?}

No ``score``: the methods return a probability map, not a calibrated quality score.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from ..api import Prediction, Segmenter
from ..core.errors import IISError
from ..core.types import Click
from .codec import (b64decode_field, decode_image, decode_mask, parse_clicks, parse_threshold, png_b64,
                    polygons_json, require, with_threshold)
from .config import ServeConfig
from .errors import RequestError, invalid

__all__ = ["handle_predict", "run_segmenter", "check_object"]


def check_object(payload: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise invalid(f"{where}: expected a JSON object, got {type(payload).__name__}")
    return payload


def run_segmenter(seg: Segmenter, image: np.ndarray, clicks: list[Click],
                  init_mask: np.ndarray | None = None) -> Prediction:
    """``seg.predict`` (the stateless replay); the API's own input errors become 422s, anything else
    (a failing method) propagates for the server to answer 500."""
    try:
        return seg.predict(image, clicks, init_mask=init_mask)
    except RequestError:
        raise
    except IISError as e:
        raise invalid(str(e)) from None


def handle_predict(seg: Segmenter, payload: Any, cfg: ServeConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    payload = check_object(payload, "/predict body")
    unknown = set(payload) - {"image", "clicks", "mask", "threshold", "return_prob"}
    if unknown:
        raise invalid(f"/predict body: unknown fields {sorted(unknown)}; expected image, clicks, mask, threshold, "
                      "return_prob")
    image = decode_image(b64decode_field(require(payload, "image"), "image"), "image", cfg)
    shape = image.shape[:2]
    clicks = parse_clicks(require(payload, "clicks"), "clicks", shape, cfg)
    threshold = parse_threshold(payload.get("threshold"))
    return_prob = payload.get("return_prob", False)
    if not isinstance(return_prob, bool):
        raise invalid(f"return_prob: expected true/false, got {return_prob!r}")
    init = None
    if payload.get("mask") is not None:
        init = decode_mask(b64decode_field(payload["mask"], "mask"), "mask", shape, cfg)
    pred = with_threshold(run_segmenter(seg, image, clicks, init), threshold)
    out: dict[str, Any] = {
        "mask": png_b64(pred.mask.astype(np.uint8) * np.uint8(255)),
        "polygons": polygons_json(pred, cfg.polygon_tolerance),
        "rle": pred.to_rle(),
        "width": int(shape[1]), "height": int(shape[0]), "area": pred.area,
        "threshold": pred.threshold, "clicks": len(clicks), "method": seg.name,
    }
    if return_prob:
        out["prob"] = png_b64(np.clip(np.rint(pred.prob * 255.0), 0, 255).astype(np.uint8))
    out["latency_ms"] = round((time.perf_counter() - t0) * 1000.0, 2)
    return out
