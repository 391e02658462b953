"""Conventions of the whole package, written once.

Images
    Loaded as ``uint8`` RGB arrays of shape ``(H, W, 3)``. Models receive float tensors
    ``(B, 3, H, W)`` in ``[0, 1]`` and normalise internally.

Ground-truth masks
    ``int8`` arrays ``(H, W)``: ``1`` object, ``0`` background, ``-1`` ignore (never clicked,
    excluded from IoU).

Clicks
    ``Click(x, y, positive)`` in pixel coordinates of the *original* image (``x`` = column,
    ``y`` = row). Inside a model the clicks of a batch are one float tensor ``(B, N, 3)`` of rows
    ``(x, y, label)`` in pixels of the *network input* (after zoom/flip/resize); ``label`` is
    ``1`` positive, ``0`` negative and ``-1`` padding. Rows keep click order.

Predictions
    Models return logits ``(B, 1, H, W)`` at input resolution; the interactive loop binarises
    probabilities with the protocol threshold (0.49 by default, docs/protocol.md §A.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = [
    "Click",
    "GT_OBJECT",
    "GT_BACKGROUND",
    "GT_IGNORE",
    "PAD_LABEL",
    "Sample",
    "check_image",
]

GT_OBJECT, GT_BACKGROUND, GT_IGNORE = 1, 0, -1
PAD_LABEL = -1  # label of padding rows in a (B, N, 3) click tensor


class Click(NamedTuple):
    """One click in original-image pixel coordinates."""

    x: float
    y: float
    positive: bool


@dataclass
class Sample:
    """One evaluation instance: an image and the mask of one object.

    Attributes:
        image: ``uint8 (H, W, 3)`` RGB.
        gt: ``int8 (H, W)`` with 1 object / 0 background / -1 ignore.
        id: stable identifier ``<image stem>`` or ``<image stem>#<instance>``; results and resume key on it.
    """

    image: np.ndarray
    gt: np.ndarray
    id: str


def check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        got = getattr(image, "shape", None), getattr(image, "dtype", type(image))
        raise ValueError(f"{name}: expected a uint8 RGB array of shape (H, W, 3), got {got}")
    return image
