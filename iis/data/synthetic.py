"""A deterministic procedural evaluation set: no files, identical on every run and machine.

Each sample is one filled shape (ellipse, star-like polygon or rotated rectangle) over a smooth,
striped, noisy background with 0-2 distractor shapes; the target is drawn last so it is fully
visible. Used for smoke tests, demos and the toy method; never for reported numbers.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .readers.base import EvalDataset

__all__ = ["SyntheticDataset"]


class SyntheticDataset(EvalDataset):
    """``num_samples`` images with sides drawn in ``size``; sample ``i`` depends only on ``(seed, i)``.

    Args:
        num_samples: number of images (= instances).
        size: side length in pixels, or ``(min, max)`` range for height and width (inclusive).
        seed: base seed.
        ignore_band: if > 0, pixels within this many pixels of the object boundary get GT -1
            (like GrabCut's band), to exercise ignore handling.
    """

    def __init__(self, num_samples: int = 20, size: int | tuple[int, int] = (96, 160), seed: int = 0,
                 ignore_band: int = 0, name: str = "synthetic"):
        lo, hi = (size, size) if isinstance(size, int) else tuple(size)
        if num_samples < 0 or not 32 <= lo <= hi:
            raise ValueError(f"num_samples/size: expected num_samples >= 0 and 32 <= min <= max side, "
                             f"got {num_samples}, {size}")
        if ignore_band < 0:
            raise ValueError(f"ignore_band: expected >= 0, got {ignore_band}")
        self.num_samples, self.size, self.seed, self.ignore_band = num_samples, (lo, hi), seed, ignore_band
        super().__init__(name, Path("."), [], cache=False)
        self._index = [(i, 1) for i in range(num_samples)]

    @property
    def num_images(self) -> int:
        return self.num_samples

    def dataset_problems(self) -> list[str]:
        return []  # no files

    def __repr__(self) -> str:
        return f"SyntheticDataset(num_samples={self.num_samples}, size={self.size}, seed={self.seed})"

    def _id(self, p: int, key: int) -> str:
        return f"synthetic_{p:03d}"

    def _load(self, p: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, p])
        h, w = (int(v) for v in rng.integers(self.size[0], self.size[1] + 1, size=2))
        image = _background(rng, h, w)
        for _ in range(int(rng.integers(0, 3))):  # distractors, partly covered by the target
            m = _shape(rng, h, w)
            _paint(rng, image, m)
        target = _shape(rng, h, w)
        _paint(rng, image, target)
        labels = target.astype(np.int32)
        if self.ignore_band:
            k = np.ones((3, 3), np.uint8)
            outer = cv2.dilate(target, k, iterations=self.ignore_band)
            inner = cv2.erode(target, k, iterations=self.ignore_band)
            labels[(outer > 0) & (inner == 0)] = -1
        return image, labels


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Smooth colour field + oriented stripes + pixel noise, uint8 (H, W, 3)."""
    coarse = rng.uniform(40, 215, size=(int(rng.integers(2, 6)), int(rng.integers(2, 6)), 3)).astype(np.float32)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * freq)
    img += stripes[..., None] * rng.uniform(0, 25, size=3).astype(np.float32)
    img += rng.normal(0, rng.uniform(2, 10), size=img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _shape(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A filled ellipse, star-like polygon or rotated rectangle; uint8 {0, 1} mask (H, W), >= 64 px."""
    m = np.zeros((h, w), np.uint8)
    side = min(h, w)
    cx, cy = rng.uniform(0.2 * w, 0.8 * w), rng.uniform(0.2 * h, 0.8 * h)
    r = rng.uniform(0.12, 0.35) * side
    kind = int(rng.integers(0, 3))
    if kind == 0:
        axes = (max(3, int(r)), max(3, int(r * rng.uniform(0.4, 1.0))))
        cv2.ellipse(m, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == 1:
        n = int(rng.integers(5, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.5, 1.0, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    else:
        box = cv2.boxPoints(((cx, cy), (2 * r, 2 * r * rng.uniform(0.3, 1.0)), float(rng.uniform(0, 90))))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 1)
    if m.sum() < 64:  # degenerate draw: fall back to a centred disc
        m[:] = 0
        cv2.circle(m, (w // 2, h // 2), max(6, side // 6), 1, -1)
    return m


def _paint(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray) -> None:
    """Fill ``mask`` with a noisy colour that differs from the local background mean."""
    sel = mask > 0
    bg = image[sel].mean(0)
    colour = rng.uniform(0, 255, size=3)
    if np.abs(colour - bg).max() < 60:  # keep the object visible
        colour = np.where(bg < 128, np.minimum(bg + 90, 255), np.maximum(bg - 90, 0))
    pix = colour + rng.normal(0, rng.uniform(2, 12), size=(int(sel.sum()), 3))
    image[sel] = np.clip(pix, 0, 255).astype(np.uint8)
