"""Random walker (Grady, TPAMI 2006) on click seeds, via :func:`skimage.segmentation.random_walker`."""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from iis.core.types import Click
from iis.models.registry import register_predictor

from .seeds import BG, FG, SeedPredictor, border_band

__all__ = ["RandomWalkerPredictor", "random_walker"]

_MODES = ("bf", "cg", "cg_j", "cg_mg")
_BORDERS = ("auto", "always")
_SPACES = ("rgb", "lab")


class RandomWalkerPredictor(SeedPredictor):
    """Object probability = probability that a random walk from the pixel first reaches a positive seed.

    Edge weights are ``exp(-beta * |I_p - I_q|^2)`` on the working copy of the image (skimage
    normalises ``beta`` by the data's standard deviation). Seeds are disks around the clicks; when
    there is no negative click a border band is the background seed (``border="auto"``), or always
    (``"always"``), where it never overrides a positive disk.

    Args:
        beta: edge-weight sharpness (skimage's default is 130; 10000 tuned on GrabCut, see README).
        radius: seed disk radius in original pixels (5, RITM's click disk, docs/protocol.md §D.1).
        max_side: longest side of the working copy (the walk is solved there and upsampled).
        border: ``"auto"`` or ``"always"`` (see above).
        border_width: band width in working pixels.
        colorspace: ``"lab"`` (CIELab, perceptual distances) or ``"rgb"`` features.
        mode: skimage solver, ``"bf"`` (direct sparse LU, exact and fastest at this size),
            ``"cg"``, ``"cg_j"``, or ``"cg_mg"`` (needs pyamg).
        tol: tolerance of the iterative solvers.
        blur: Gaussian sigma (working pixels) applied before the weights (0 = none); makes the
            high ``beta`` robust to pixel noise.
    """

    def __init__(self, beta: float = 10000.0, radius: float = 5.0, max_side: int | None = 200,
                 border: str = "always", border_width: int = 2, colorspace: str = "lab", mode: str = "bf",
                 tol: float = 1e-4, blur: float = 0.0):
        super().__init__()
        if not beta > 0:
            raise ValueError(f"beta: expected a positive number, got {beta}")
        if mode not in _MODES:
            raise ValueError(f"mode: expected one of {_MODES}, got {mode!r}")
        if border not in _BORDERS:
            raise ValueError(f"border: expected one of {_BORDERS}, got {border!r}")
        if colorspace not in _SPACES:
            raise ValueError(f"colorspace: expected one of {_SPACES}, got {colorspace!r}")
        if blur < 0:
            raise ValueError(f"blur: expected a sigma >= 0, got {blur}")
        if radius < 0 or border_width < 1 or (max_side is not None and max_side < 8):
            raise ValueError(f"radius >= 0, border_width >= 1, max_side >= 8 expected; got {radius}, "
                             f"{border_width}, {max_side}")
        self.beta, self.radius, self.max_side = float(beta), float(radius), max_side
        self.border, self.border_width, self.colorspace = border, int(border_width), colorspace
        self.mode, self.tol, self.blur = mode, float(tol), float(blur)

    def _prepare(self) -> None:
        rgb = self.image.astype(np.float32) / 255.0
        if self.blur > 0:
            rgb = cv2.GaussianBlur(rgb, (0, 0), self.blur)
        if self.colorspace == "lab":
            lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)
            self._data = (lab / np.float32([100.0, 127.0, 127.0])).astype(np.float64)
        else:
            self._data = rgb.astype(np.float64)

    def _predict(self, clicks: list[Click], seeds: np.ndarray) -> np.ndarray:
        labels = seeds.astype(np.int32)
        if self.border == "always" or not (labels == BG).any():
            labels[border_band(labels.shape, self.border_width) & (labels != FG)] = BG
        if not (labels == FG).any():  # only negative clicks: nothing is object
            return np.zeros(labels.shape, np.float32)
        with warnings.catch_warnings():
            # skimage warns when the iterative solution slightly leaves [0, 1]; we clip anyway
            warnings.simplefilter("ignore", UserWarning)
            prob = _skimage_rw(self._data, labels, beta=self.beta, mode=self.mode, tol=self.tol,
                               channel_axis=-1, return_full_prob=True)
        return prob[0].astype(np.float32)


def _skimage_rw(*args, **kwargs):
    from skimage.segmentation import random_walker as rw  # deferred: skimage import is slow

    return rw(*args, **kwargs)


@register_predictor("random_walker")
def random_walker(**kwargs) -> RandomWalkerPredictor:
    """Registry builder; keyword options as in :class:`RandomWalkerPredictor`."""
    return RandomWalkerPredictor(**kwargs)
