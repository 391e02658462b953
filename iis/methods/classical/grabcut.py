"""GrabCut (Rother et al., SIGGRAPH 2004) driven by click seeds, via OpenCV's ``cv2.grabCut``."""

from __future__ import annotations

import cv2
import numpy as np

from iis.core.types import Click
from iis.models.registry import register_predictor

from .seeds import BG, FG, SeedPredictor, border_band

__all__ = ["GrabCutPredictor", "grabcut"]

_INITS = ("frame", "box")
_BORDERS = ("auto", "always")
_GMM_K = 5  # components per colour GMM, fixed inside cv2.grabCut


class GrabCutPredictor(SeedPredictor):
    """Iterated graph cut with colour GMMs, initialised from a trimap built from the clicks.

    Trimap (``cv2.GC_INIT_WITH_MASK``): positive/negative click disks are definite foreground /
    background. A band of ``border_width`` pixels along the image border is definite background
    when there is no negative click (``border="auto"``) or always (``"always"``), except under a
    positive disk; it plays the role of the area outside GrabCut's user rectangle. The rest is
    *probable foreground* inside the region given by ``init`` and *probable background* outside:

    * ``"frame"``: the whole image (GrabCut with the largest possible rectangle);
    * ``"box"``: the bounding box of the positive clicks grown by ``box_pad`` times the image's
      longer side on each side.

    ``cv2.grabCut`` seeds its k-means from OpenCV's global RNG; it is reset before every call so
    that identical inputs give identical outputs. The output is the hard 0/1 segmentation at the
    working size, bilinearly upsampled (soft only along the boundary).

    Args:
        iterations: GrabCut iterations (GMM re-fit + graph cut); 5 tuned on GrabCut-20 (see README).
        radius: seed disk radius in original pixels (5, RITM's click disk, docs/protocol.md §D.1).
        max_side: longest side of the working copy (OpenCV's max-flow dominates the run time).
        init: ``"frame"`` or ``"box"``, see above.
        box_pad: growth of the positive-click box (fraction of the longer side), ``init="box"`` only.
        border: ``"auto"`` or ``"always"``, see above.
        border_width: band width in working pixels.
    """

    def __init__(self, iterations: int = 5, radius: float = 5.0, max_side: int | None = 240,
                 init: str = "frame", box_pad: float = 0.25, border: str = "always", border_width: int = 2):
        super().__init__()
        if int(iterations) < 1:
            raise ValueError(f"iterations: expected an integer >= 1, got {iterations}")
        if init not in _INITS:
            raise ValueError(f"init: expected one of {_INITS}, got {init!r}")
        if border not in _BORDERS:
            raise ValueError(f"border: expected one of {_BORDERS}, got {border!r}")
        if radius < 0 or border_width < 1 or box_pad < 0 or (max_side is not None and max_side < 8):
            raise ValueError(f"radius >= 0, border_width >= 1, box_pad >= 0, max_side >= 8 expected; got "
                             f"{radius}, {border_width}, {box_pad}, {max_side}")
        self.iterations, self.radius, self.max_side = int(iterations), float(radius), max_side
        self.init, self.box_pad = init, float(box_pad)
        self.border, self.border_width = border, int(border_width)

    def _prepare(self) -> None:
        self._bgr = np.ascontiguousarray(self.image[..., ::-1])  # OpenCV wants BGR

    def trimap(self, clicks: list[Click], seeds: np.ndarray) -> np.ndarray:
        """The ``cv2.GC_*`` label map ``uint8 (h, w)`` handed to ``cv2.grabCut``."""
        h, w = seeds.shape
        tri = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
        if self.init == "frame":
            tri[:] = cv2.GC_PR_FGD
        else:
            ys, xs = np.nonzero(seeds == FG)
            pad = self.box_pad * max(h, w)
            r0, r1 = max(int(ys.min() - pad), 0), min(int(ys.max() + pad) + 1, h)
            c0, c1 = max(int(xs.min() - pad), 0), min(int(xs.max() + pad) + 1, w)
            tri[r0:r1, c0:c1] = cv2.GC_PR_FGD
        if self.border == "always" or not (seeds == BG).any():
            tri[border_band((h, w), self.border_width)] = cv2.GC_BGD
        tri[seeds == FG] = cv2.GC_FGD
        tri[seeds == BG] = cv2.GC_BGD
        return tri

    def _predict(self, clicks: list[Click], seeds: np.ndarray) -> np.ndarray:
        if not (seeds == FG).any():  # only negative clicks: nothing is object
            return np.zeros(seeds.shape, np.float32)
        tri = self.trimap(clicks, seeds)
        n_fg = np.count_nonzero((tri == cv2.GC_FGD) | (tri == cv2.GC_PR_FGD))
        if min(n_fg, tri.size - n_fg) < _GMM_K:
            # OpenCV's k-means needs >= 5 colour samples per side (e.g. a disk covering a tiny image)
            return (tri % 2 == 1).astype(np.float32)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)
        cv2.grabCut(self._bgr, tri, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
        return ((tri == cv2.GC_FGD) | (tri == cv2.GC_PR_FGD)).astype(np.float32)


@register_predictor("grabcut")
def grabcut(**kwargs) -> GrabCutPredictor:
    """Registry builder; keyword options as in :class:`GrabCutPredictor`."""
    return GrabCutPredictor(**kwargs)
