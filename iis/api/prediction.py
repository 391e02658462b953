"""What a click returns: :class:`Prediction` (mask, probabilities) and its export formats."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from ..core.types import Click

__all__ = ["Prediction", "Polygon"]


class Polygon(NamedTuple):
    """One connected outer contour with its holes.

    Attributes:
        exterior: ``float32 (K, 2)`` vertices ``(x, y)`` in original pixels, K >= 3.
        holes: list of ``(K_i, 2)`` vertex arrays, one per hole inside ``exterior``.
    """

    exterior: np.ndarray
    holes: list[np.ndarray]


@dataclass(frozen=True, eq=False)
class Prediction:
    """A segmentation after some clicks.

    Attributes:
        mask: ``bool (H, W)``: ``prob > threshold`` (the method's protocol threshold, as in evaluation).
        prob: ``float32 (H, W)`` in [0, 1] (training-free methods may return hard 0/1 maps).
        clicks: the clicks that produced it, in order.
        threshold: the threshold that made ``mask``.
    """

    mask: np.ndarray
    prob: np.ndarray
    clicks: tuple[Click, ...] = ()
    threshold: float = 0.5

    @classmethod
    def from_prob(cls, prob: np.ndarray, clicks, threshold: float) -> "Prediction":
        prob = np.array(prob, dtype=np.float32, copy=True)  # never a view of a predictor's state
        mask = prob > threshold
        prob.setflags(write=False)
        mask.setflags(write=False)
        return cls(mask, prob, tuple(clicks), float(threshold))

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def to_polygons(self, tolerance: float = 1.0, min_area: float = 0.0) -> list[Polygon]:
        """Outer contours with their holes, simplified.

        Format: a list of :class:`Polygon` ``(exterior, holes)``; vertices are ``(x, y)`` pixel centres of
        boundary pixels (OpenCV ``findContours``, 8-connected objects, two-level hierarchy: an object
        inside a hole is its own polygon), simplified by Douglas-Peucker with ``tolerance`` pixels
        (``cv2.approxPolyDP``; 0 keeps every boundary pixel). ``cv2.fillPoly`` of the exteriors minus the
        holes gives the mask back up to the simplification. For CVAT/Label Studio, flatten with
        ``exterior.ravel().tolist()``. Contours of area < ``min_area`` pixels are dropped.
        """
        if tolerance < 0:
            raise ValueError(f"tolerance: expected >= 0 pixels, got {tolerance}")
        contours, hier = cv2.findContours(self.mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
        if hier is None:
            return []
        hier = hier[0]

        def ring(c: np.ndarray) -> np.ndarray | None:
            if tolerance > 0:
                c = cv2.approxPolyDP(c, float(tolerance), True)
            pts = c.reshape(-1, 2).astype(np.float32)
            return pts if len(pts) >= 3 else None

        out = []
        for i, c in enumerate(contours):
            if hier[i][3] != -1:  # a hole: handled with its parent
                continue
            if cv2.contourArea(c) < min_area and len(c) > 2:
                continue
            ext = ring(c)
            if ext is None:  # 1-2 pixel objects: keep their pixels as a degenerate ring
                ext = c.reshape(-1, 2).astype(np.float32)
            holes = []
            j = hier[i][2]
            while j != -1:
                h = ring(contours[j]) if cv2.contourArea(contours[j]) >= min_area else None
                if h is not None:
                    holes.append(h)
                j = hier[j][0]
            out.append(Polygon(ext, holes))
        return out

    def to_rle(self) -> dict:
        """COCO RLE (``pycocotools.mask.encode``): ``{"size": [H, W], "counts": str}`` (column-major)."""
        from pycocotools import mask as mask_utils

        rle = mask_utils.encode(np.asfortranarray(self.mask.astype(np.uint8)))
        return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}

    def to_png(self, path: str | os.PathLike, value: int = 255) -> Path:
        """Write the mask as an 8-bit single-channel PNG (object = ``value``, background 0), atomically
        (a temporary file in the same folder, then renamed)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise FileNotFoundError(f"to_png: folder {path.parent} does not exist")
        if not 1 <= int(value) <= 255:
            raise ValueError(f"value: expected 1..255, got {value}")
        ok, buf = cv2.imencode(".png", self.mask.astype(np.uint8) * np.uint8(value))
        if not ok:
            raise ValueError(f"to_png: OpenCV could not encode a {self.mask.shape} mask")
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buf.tobytes())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path
