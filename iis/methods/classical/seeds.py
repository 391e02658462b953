"""What the classical baselines share: input checks, clicks -> seed maps, working resolution.

Every baseline turns the clicks into *seeds*: a disk of ``radius`` pixels around each click carries
the click's label (1 object, 2 background; a later click overwrites an earlier one where disks
overlap, and each click's own pixel always keeps its label). When there is no negative click the
problem is ill posed (random walker and geodesic need two labels, GrabCut needs background colour
samples), so a band along the image border becomes background seeds; see each method's
``border`` option.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from iis.core.types import Click, check_image

__all__ = ["SeedPredictor", "check_clicks", "seed_map", "border_band", "FG", "BG", "NONE"]

NONE, FG, BG = 0, 1, 2  # seed labels (skimage random_walker needs 0 = unlabelled, labels >= 1)


def check_clicks(clicks: Sequence[Click], shape: tuple[int, int]) -> list[Click]:
    """Validate clicks against an image of ``shape`` (H, W); returns them as a list of :class:`Click`."""
    if isinstance(clicks, (str, bytes)) or not hasattr(clicks, "__len__"):
        raise TypeError(f"clicks: expected a sequence of Click(x, y, positive), got {type(clicks).__name__}")
    h, w = shape
    out = []
    for i, c in enumerate(clicks):
        if not isinstance(c, tuple) or len(c) != 3:
            raise TypeError(f"clicks[{i}]: expected Click(x, y, positive), got {c!r}")
        x, y, pos = c
        if not (np.isfinite(x) and np.isfinite(y) and 0 <= x < w and 0 <= y < h):
            raise ValueError(f"clicks[{i}]: ({x}, {y}) lies outside the {w}x{h} image")
        out.append(Click(float(x), float(y), bool(pos)))
    return out


def seed_map(clicks: Sequence[Click], shape: tuple[int, int], radius: float, scale: float = 1.0) -> np.ndarray:
    """Label map ``uint8 (h, w)``: disks of ``radius`` (pixels of this map) around the clicks.

    Args:
        clicks: clicks in original-image pixels.
        shape: ``(h, w)`` of the map (the working resolution).
        radius: disk radius in pixels of the map; 0 marks only the click's pixel.
        scale: working size / original size; click ``(x, y)`` lands on pixel centre
            ``((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5)``.

    Returns:
        0 unlabelled, 1 (:data:`FG`) positive, 2 (:data:`BG`) negative.
    """
    h, w = shape
    out = np.zeros((h, w), np.uint8)
    if not clicks:
        return out
    ys = np.arange(h, dtype=np.float32)[:, None]
    xs = np.arange(w, dtype=np.float32)[None, :]
    centres = []
    for c in clicks:
        cx = min(max((c.x + 0.5) * scale - 0.5, 0.0), w - 1.0)
        cy = min(max((c.y + 0.5) * scale - 0.5, 0.0), h - 1.0)
        r0, r1 = max(int(cy - radius) - 1, 0), min(int(cy + radius) + 2, h)
        c0, c1 = max(int(cx - radius) - 1, 0), min(int(cx + radius) + 2, w)
        disk = (ys[r0:r1] - cy) ** 2 + (xs[:, c0:c1] - cx) ** 2 <= radius * radius
        out[r0:r1, c0:c1][disk] = FG if c.positive else BG
        centres.append((int(round(cy)), int(round(cx)), FG if c.positive else BG))
    for r, c, lab in centres:  # a later disk may cover an earlier click: its own pixel wins back
        out[r, c] = lab
    return out


def border_band(shape: tuple[int, int], width: int) -> np.ndarray:
    """Bool ``(h, w)``: the pixels within ``width`` (>= 1) of the image border."""
    h, w = shape
    width = max(1, min(int(width), (min(h, w) + 1) // 2))
    band = np.ones((h, w), bool)
    band[width:h - width, width:w - width] = False
    return band


class SeedPredictor:
    """Base of the classical predictors: checks inputs, works at a reduced size, upsamples back.

    Subclasses set ``radius`` (seed disk radius in original pixels) and ``max_side`` (longest side of
    the working copy; None keeps full resolution) and implement ``_predict(clicks, seeds)`` returning
    the object probability ``(h, w)`` at the working size. The clicked disks themselves are forced
    to their label at full resolution, so a click is never contradicted by the upsampled map.
    """

    radius: float = 5.0
    max_side: int | None = None

    def __init__(self) -> None:
        self.image: np.ndarray | None = None  # working copy, uint8 (h, w, 3) RGB
        self.full_shape: tuple[int, int] | None = None
        self.scale = 1.0

    def set_image(self, image: np.ndarray) -> None:
        """Store ``image`` (uint8 RGB ``(H, W, 3)``) and precompute what depends only on it."""
        check_image(image, "image")
        h, w = image.shape[:2]
        s = 1.0 if not self.max_side or max(h, w) <= self.max_side else self.max_side / max(h, w)
        if s < 1.0:
            size = (max(1, round(w * s)), max(1, round(h * s)))
            small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            self.scale = size[0] / w  # the actual ratio after rounding (x and y differ by < 1 px)
        else:
            small, self.scale = np.ascontiguousarray(image), 1.0
        self.image, self.full_shape = small, (h, w)
        self._prepare()

    def _prepare(self) -> None:
        """Hook: per-image precomputation on ``self.image``."""

    def predict(self, clicks: Sequence[Click]) -> np.ndarray:
        """Object probability ``float32 (H, W)`` in [0, 1] for ``clicks`` (original pixels).

        With no click at all the prediction is empty (all zeros).
        """
        if self.image is None:
            raise RuntimeError(f"{type(self).__name__}.predict: call set_image(image) first")
        clicks = check_clicks(clicks, self.full_shape)
        H, W = self.full_shape
        if not clicks:
            return np.zeros((H, W), np.float32)
        seeds = seed_map(clicks, self.image.shape[:2], max(self.radius * self.scale, 0.0), self.scale)
        prob = np.asarray(self._predict(clicks, seeds), np.float32)
        if prob.shape != (H, W):
            prob = cv2.resize(prob, (W, H), interpolation=cv2.INTER_LINEAR)
        full = seed_map(clicks, (H, W), self.radius)
        prob[full == FG], prob[full == BG] = 1.0, 0.0
        return np.clip(prob, 0.0, 1.0, out=prob)

    def _predict(self, clicks: list[Click], seeds: np.ndarray) -> np.ndarray:
        raise NotImplementedError
