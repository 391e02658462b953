"""Geodesic segmentation (after Bai & Sapiro, IJCV 2009, and Criminisi et al.'s GeoS, ECCV 2008).

Each pixel goes to the label whose seeds are geodesically closer. The geodesic metric integrates a
per-pixel cost along 8-connected paths (exact Dijkstra, :class:`skimage.graph.MCP_Geometric`):

    cost = eps + w_grad * |grad I| / mean|grad I| + w_lik * |grad P_F|

where ``I`` is the (slightly smoothed) CIELab image and ``P_F = h_F / (h_F + h_B)`` is the
foreground colour likelihood of Bai & Sapiro, from smoothed colour histograms of the seed pixels.
The probability follows Bai & Sapiro's weights ``w_l = D_l^(-r) * P_l^q`` (l = F, B; ``P_B = 1 - P_F``):
``p = w_F / (w_F + w_B)``. With ``q = 0`` and ``r = 1`` this is ``D_B / (D_F + D_B)``, a pure
geodesic-distance competition (0.5 where both distances are equal).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from iis.core.types import Click
from iis.models.registry import register_predictor

from .seeds import BG, FG, SeedPredictor, border_band

__all__ = ["GeodesicPredictor", "geodesic", "colour_likelihood"]

_BORDERS = ("auto", "always")


def colour_likelihood(bins: np.ndarray, fg: np.ndarray, bg: np.ndarray, n_bins: int, sigma: float) -> np.ndarray:
    """``P_F`` per pixel from smoothed colour histograms of the seed pixels.

    Args:
        bins: int ``(h, w)`` joint colour-bin index of each pixel, in ``[0, n_bins**3)``.
        fg, bg: bool ``(h, w)`` foreground / background sample pixels.
        n_bins: bins per channel.
        sigma: Gaussian smoothing of the 3-D histograms, in bins (a cheap Parzen estimate).

    Returns:
        float32 ``(h, w)`` in [0, 1]; 0.5 where neither histogram has mass.
    """
    hists = []
    for sel in (fg, bg):
        h = np.bincount(bins[sel], minlength=n_bins ** 3).astype(np.float64).reshape((n_bins,) * 3)
        if sigma > 0:
            h = ndimage.gaussian_filter(h, sigma, mode="constant")
        hists.append(h.ravel() / max(h.sum(), 1e-12))
    hf, hb = hists[0][bins], hists[1][bins]
    den = hf + hb
    return np.where(den > 1e-12, hf / np.maximum(den, 1e-12), 0.5).astype(np.float32)


class GeodesicPredictor(SeedPredictor):
    """Geodesic-distance competition between positive and negative click seeds.

    A band of ``border_width`` pixels along the image border is a negative seed when there is no
    negative click (``border="auto"``) or always (``"always"``), except under a positive disk.

    Args:
        w_grad: weight of the normalised image-gradient term (GeoS-style edges).
        w_lik: weight of the colour-likelihood gradient term (Bai & Sapiro's metric).
        eps: constant cost per unit length (keeps flat regions from being free; a spatial prior).
        radius: seed disk radius in original pixels (5, RITM's click disk, docs/protocol.md §D.1).
        max_side: longest side of the working copy.
        blur: Gaussian sigma (working pixels) applied to the Lab image before the gradient.
        n_bins: colour-histogram bins per channel; hist_sigma: their smoothing (in bins).
        border: ``"auto"`` or ``"always"``, see above.
        border_width: band width in working pixels.
        r: distance exponent of the weights (Bai & Sapiro use r in [0, 2]); q: likelihood exponent.
    """

    def __init__(self, w_grad: float = 1.0, w_lik: float = 100.0, eps: float = 0.02, radius: float = 5.0,
                 max_side: int | None = 320, blur: float = 1.5, n_bins: int = 32, hist_sigma: float = 0.5,
                 border: str = "always", border_width: int = 2, r: float = 1.0, q: float = 0.0):
        super().__init__()
        if min(w_grad, w_lik) < 0 or eps <= 0:
            raise ValueError(f"w_grad, w_lik >= 0 and eps > 0 expected; got {w_grad}, {w_lik}, {eps}")
        if border not in _BORDERS:
            raise ValueError(f"border: expected one of {_BORDERS}, got {border!r}")
        if radius < 0 or border_width < 1 or blur < 0 or not 2 <= n_bins <= 64 or hist_sigma < 0 \
                or (max_side is not None and max_side < 8):
            raise ValueError(f"radius >= 0, border_width >= 1, blur >= 0, 2 <= n_bins <= 64, hist_sigma >= 0, "
                             f"max_side >= 8 expected; got {radius}, {border_width}, {blur}, {n_bins}, "
                             f"{hist_sigma}, {max_side}")
        self.w_grad, self.w_lik, self.eps = float(w_grad), float(w_lik), float(eps)
        self.radius, self.max_side, self.blur = float(radius), max_side, float(blur)
        self.n_bins, self.hist_sigma = int(n_bins), float(hist_sigma)
        self.border, self.border_width = border, int(border_width)
        if r <= 0 or q < 0:
            raise ValueError(f"r > 0 and q >= 0 expected; got {r}, {q}")
        self.r, self.q = float(r), float(q)

    def _prepare(self) -> None:
        rgb = self.image
        q = (rgb.astype(np.int64) * self.n_bins) // 256
        self._bins = (q[..., 0] * self.n_bins + q[..., 1]) * self.n_bins + q[..., 2]
        lab = cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)
        if self.blur > 0:
            lab = cv2.GaussianBlur(lab, (0, 0), self.blur)
        grad = _grad_mag(lab)
        self._grad = grad / max(float(grad.mean()), 1e-6)

    def cost(self, seeds: np.ndarray, pf: np.ndarray | None = None) -> np.ndarray:
        """Per-pixel cost ``float64 (h, w)`` for the seed map ``seeds`` (border already added)."""
        cost = self.eps + self.w_grad * self._grad
        if self.w_lik > 0:
            if pf is None:
                pf = colour_likelihood(self._bins, seeds == FG, seeds == BG, self.n_bins, self.hist_sigma)
            cost = cost + self.w_lik * _grad_mag(pf[..., None])
        return cost.astype(np.float64)

    def _predict(self, clicks: list[Click], seeds: np.ndarray) -> np.ndarray:
        from skimage.graph import MCP_Geometric  # deferred: skimage import is slow

        seeds = seeds.copy()
        if self.border == "always" or not (seeds == BG).any():
            seeds[border_band(seeds.shape, self.border_width) & (seeds != FG)] = BG
        if not (seeds == FG).any():  # only negative clicks: nothing is object
            return np.zeros(seeds.shape, np.float32)
        pf = None
        if self.w_lik > 0 or self.q > 0:
            pf = colour_likelihood(self._bins, seeds == FG, seeds == BG, self.n_bins, self.hist_sigma)
        cost = self.cost(seeds, pf)
        dist = []
        for lab in (FG, BG):
            d, _ = MCP_Geometric(cost, fully_connected=True).find_costs(np.argwhere(seeds == lab))
            dist.append(d)
        # log-domain weights: log w_l = -r log D_l + q log P_l; p = sigmoid(log w_F - log w_B)
        logit = self.r * (np.log(np.maximum(dist[1], 1e-9)) - np.log(np.maximum(dist[0], 1e-9)))
        if self.q > 0:
            pf = np.clip(pf, 1e-4, 1 - 1e-4)
            logit = logit + self.q * (np.log(pf) - np.log1p(-pf))
        return (0.5 * (1.0 + np.tanh(0.5 * logit))).astype(np.float32)


def _grad_mag(x: np.ndarray) -> np.ndarray:
    """Gradient magnitude ``(h, w)`` of a multi-channel image ``(h, w, c)`` (central differences)."""
    gy = np.gradient(x, axis=0)
    gx = np.gradient(x, axis=1)
    return np.sqrt((gx ** 2 + gy ** 2).sum(-1))


@register_predictor("geodesic")
def geodesic(**kwargs) -> GeodesicPredictor:
    """Registry builder; keyword options as in :class:`GeodesicPredictor`."""
    return GeodesicPredictor(**kwargs)
