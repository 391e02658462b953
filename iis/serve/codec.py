"""Request fields in, response fields out: base64 images and masks, clicks, thresholds, polygons.

Every refusal is a :class:`~iis.serve.errors.RequestError` naming the field and what was expected.
Images are decoded with Pillow after checking their header (format and pixel count) so that a
decompression bomb is refused before any pixel is decoded.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
import warnings
from typing import Any, Mapping

import cv2
import numpy as np
from PIL import Image, ImageOps

from ..api import Prediction
from ..core.types import Click
from .config import ServeConfig
from .errors import bad_request, invalid, too_large

__all__ = ["b64decode_field", "decode_image", "decode_mask", "png_b64", "parse_clicks", "parse_threshold",
           "require", "polygons_json", "largest_exterior", "with_threshold", "IMAGE_FORMATS"]

# formats a browser, CVAT (JPEG/PNG frames) and Label Studio send; others are refused by name
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
_DATA_URL = re.compile(r"^data:([\w/+.-]*)(;[\w=.+-]+)*;base64,", re.IGNORECASE)


def require(payload: Mapping[str, Any], key: str, where: str = "request") -> Any:
    """``payload[key]`` or a 422 naming the missing field."""
    if key not in payload or payload[key] is None:
        raise invalid(f"{where}: missing field {key!r}")
    return payload[key]


def b64decode_field(value: Any, field: str) -> bytes:
    """Base64 (standard alphabet, optional ``data:...;base64,`` prefix, whitespace ignored) -> bytes."""
    if not isinstance(value, str):
        raise invalid(f"{field}: expected a base64 string, got {type(value).__name__}")
    s = _DATA_URL.sub("", value.strip(), count=1)
    s = "".join(s.split())
    if not s:
        raise bad_request(f"{field}: empty base64 string")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise bad_request(f"{field}: not valid base64 ({e})") from None


def _open(raw: bytes, field: str, cfg: ServeConfig) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(raw))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise too_large(f"{field}: image too large (more than {cfg.max_image_pixels} pixels)") from None
    except Exception:  # noqa: BLE001 - Pillow raises several types for "not an image"
        head = raw[:8]
        raise bad_request(f"{field}: not an image Pillow can read ({len(raw)} bytes starting {head!r}); "
                          f"expected {'/'.join(IMAGE_FORMATS)}") from None
    if im.format not in IMAGE_FORMATS:
        raise bad_request(f"{field}: {im.format} image; expected {'/'.join(IMAGE_FORMATS)}")
    w, h = im.size
    if w < 1 or h < 1:
        raise bad_request(f"{field}: empty {w}x{h} image")
    if w * h > cfg.max_image_pixels:
        raise too_large(f"{field}: {w}x{h} image has {w * h} pixels; the limit is {cfg.max_image_pixels} "
                        "(iis-serve --max-image-pixels)")
    return im


def decode_image(raw: bytes, field: str, cfg: ServeConfig) -> np.ndarray:
    """Encoded image bytes -> ``uint8 (H, W, 3)`` RGB (EXIF orientation applied, as a browser shows it;
    gray, palette and alpha images are converted to RGB)."""
    im = _open(raw, field, cfg)
    try:
        im = ImageOps.exif_transpose(im)
        rgb = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file fails only when decoded
        raise bad_request(f"{field}: could not decode the {im.format} image ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return np.array(rgb, dtype=np.uint8, order="C")


def decode_mask(raw: bytes, field: str, shape: tuple[int, int], cfg: ServeConfig) -> np.ndarray:
    """Encoded mask image -> ``bool (H, W)``: gray value > 127 (the alpha channel for images with alpha,
    so a transparent-background overlay works too); its size must be the image's."""
    im = _open(raw, field, cfg)
    try:
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            m = np.asarray(im.convert("RGBA"))[..., 3]
        else:
            m = np.asarray(im.convert("L"))
    except Exception as e:  # noqa: BLE001
        raise bad_request(f"{field}: could not decode the {im.format} mask ({type(e).__name__})") from None
    if m.shape != tuple(shape):
        raise invalid(f"{field}: mask is {m.shape[1]}x{m.shape[0]}; expected the image's {shape[1]}x{shape[0]}")
    return m > 127


def png_b64(array: np.ndarray) -> str:
    """A 2-D uint8 array -> base64 of an 8-bit single-channel PNG."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(array, dtype=np.uint8))
    if not ok:  # pragma: no cover - OpenCV encodes any 2-D uint8 array
        raise RuntimeError(f"OpenCV could not encode a {array.shape} PNG")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise invalid(f"{what}: expected a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f):
        raise invalid(f"{what}: expected a finite number, got {v!r}")
    return f


def _bool(v: Any, what: str) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    raise invalid(f"{what}: expected true/false (or 1/0), got {v!r}")


def parse_clicks(value: Any, field: str, shape: tuple[int, int], cfg: ServeConfig) -> list[Click]:
    """``[[x, y, positive], ...]`` (or ``{"x", "y", "positive"}`` objects) in original pixels -> clicks,
    checked against the image (``0 <= x < W``, ``0 <= y < H``) and ``cfg.max_clicks``."""
    if not isinstance(value, list):
        raise invalid(f"{field}: expected a list of [x, y, positive] clicks, got {type(value).__name__}")
    if len(value) > cfg.max_clicks:
        raise invalid(f"{field}: {len(value)} clicks; the limit is {cfg.max_clicks} (iis-serve --max-clicks)")
    out = []
    for i, c in enumerate(value):
        if isinstance(c, Mapping):
            if not {"x", "y"} <= set(c):
                raise invalid(f"{field}[{i}]: expected {{x, y, positive}}, got keys {sorted(c)}")
            x, y, pos = c["x"], c["y"], c.get("positive", True)
        elif isinstance(c, list) and len(c) in (2, 3):
            x, y, pos = (c[0], c[1], c[2] if len(c) == 3 else True)
        else:
            raise invalid(f"{field}[{i}]: expected [x, y, positive], got {c!r}")
        out.append(Click(_number(x, f"{field}[{i}] x"), _number(y, f"{field}[{i}] y"), _bool(pos, f"{field}[{i}] positive")))
    H, W = shape
    for i, c in enumerate(out):
        if not (0.0 <= c.x < W and 0.0 <= c.y < H):
            raise invalid(f"{field}[{i}] (x={c.x:g}, y={c.y:g}): outside the {W}x{H} image; expected 0 <= x < {W} "
                          f"and 0 <= y < {H} (original pixels)")
    return out


def parse_threshold(value: Any, field: str = "threshold") -> float | None:
    """None, or a probability in [0, 1)."""
    if value is None:
        return None
    t = _number(value, field)
    if not 0.0 <= t < 1.0:
        raise invalid(f"{field}: {value!r}; expected a probability in [0, 1)")
    return t


def with_threshold(pred: Prediction, threshold: float | None) -> Prediction:
    """``pred`` re-thresholded at ``threshold`` (its probabilities unchanged); ``pred`` itself for None."""
    if threshold is None or threshold == pred.threshold:
        return pred
    return Prediction.from_prob(pred.prob, pred.clicks, threshold)


def _ring(a: np.ndarray) -> list[list[int | float]]:
    return [[_num_out(x), _num_out(y)] for x, y in a.tolist()]


def _num_out(v: float) -> int | float:
    return int(v) if float(v).is_integer() else round(float(v), 2)


def polygons_json(pred: Prediction, tolerance: float) -> list[dict[str, Any]]:
    """``Prediction.to_polygons`` as JSON: ``[{"exterior": [[x, y], ...], "holes": [[[x, y], ...], ...]}]``."""
    return [{"exterior": _ring(p.exterior), "holes": [_ring(h) for h in p.holes]}
            for p in pred.to_polygons(tolerance=tolerance)]


def largest_exterior(pred: Prediction, tolerance: float) -> list[list[int | float]]:
    """The outer ring of the largest object, ``[[x, y], ...]`` (``[]`` for an empty mask): the one polygon
    a CVAT interactor answers (CVAT polygons have no holes; CVAT's own RITM function answers the largest
    external contour too)."""
    polys = pred.to_polygons(tolerance=tolerance)
    if not polys:
        return []
    best = max(polys, key=lambda p: cv2.contourArea(p.exterior.reshape(-1, 1, 2)))
    return _ring(best.exterior)
