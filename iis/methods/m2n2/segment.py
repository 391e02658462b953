"""Per-click threshold scores and the truncated nearest-neighbour merge (paper §3.4, docs/methods.md §2.6-2.7)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["integer_sobel", "stable_argsort", "ThresholdTable", "threshold_table", "select_threshold", "truncated_nn"]


def integer_sobel(m: np.ndarray, levels: int = 1024) -> np.ndarray:
    """Sobel magnitude of a map (3x3, reflect padding), divided by its max and floored to ``0..levels``.

    The edge score is computed on the Markov-map itself, not on the RGB image (methods.md §2.6).
    """
    m = np.asarray(m, np.float64)
    # scipy's "mirror" = torch's "reflect" (the edge pixel is not repeated)
    gx = ndimage.sobel(m, axis=1, mode="mirror")
    gy = ndimage.sobel(m, axis=0, mode="mirror")
    g = np.hypot(gx, gy)
    top = g.max()
    if top <= 0:
        return np.zeros(m.shape, np.int64)
    return (g / top * levels).astype(np.int64)


def stable_argsort(v: np.ndarray) -> np.ndarray:
    """``np.argsort(v, kind="stable")``, ~5x faster for float32 maps.

    Each float32 is mapped to a uint32 with the same order (the usual sign-flip trick, after
    ``+ 0.0`` turns -0.0 into +0.0, which the float sort treats as equal), shifted left and joined with
    its index into one uint64 key: keys are distinct, ties are broken by index, and a plain (SIMD)
    sort of the keys gives the stable order. Other dtypes use NumPy's stable sort.
    """
    v = np.asarray(v).ravel()
    bits = max(1, int(v.size - 1).bit_length())
    if v.dtype != np.float32 or bits > 32:
        return np.argsort(v, kind="stable")
    u = (v + np.float32(0)).view(np.uint32)
    key = np.where(u >> 31, ~u, u | np.uint32(0x80000000)).astype(np.uint64)
    key <<= np.uint64(bits)
    key |= np.arange(v.size, dtype=np.uint64)
    key.sort()
    return (key & np.uint64((1 << bits) - 1)).astype(np.int64)


@dataclass
class ThresholdTable:
    """Everything about one Markov-map's candidate thresholds that does not depend on the clicks.

    Attributes:
        thresholds: ``(M,)`` candidate lambdas, the sorted map values without the last one; candidate
            ``k`` is the segment made of the ``k + 1`` lowest pixels (stable order).
        edge: ``(M,)`` mean quantised Sobel gradient over the segment's outer boundary (4-adjacent
            pixels outside it).
    """

    thresholds: np.ndarray
    edge: np.ndarray


def threshold_table(m: np.ndarray, levels: int = 1024) -> ThresholdTable:
    """Candidate thresholds and edge scores of one ``(H, W)`` map, vectorised.

    A pixel ``q`` of rank ``r(q)`` lies on the outer boundary of segment ``k`` exactly when
    ``min_{n ~ q} r(n) <= k < r(q)``, so boundary lengths and sums over all ``k`` are two difference
    arrays (one ``bincount`` each) followed by a cumulative sum: ``O(HW log HW)`` for the sort.
    """
    m = np.asarray(m)
    H, W = m.shape
    n = H * W
    order = stable_argsort(m.ravel())
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(H, W)
    nb = np.full((H, W), n, np.int64)  # min rank of the 4 neighbours
    np.minimum(nb[1:], rank[:-1], out=nb[1:])
    np.minimum(nb[:-1], rank[1:], out=nb[:-1])
    np.minimum(nb[:, 1:], rank[:, :-1], out=nb[:, 1:])
    np.minimum(nb[:, :-1], rank[:, 1:], out=nb[:, :-1])
    grad = integer_sobel(m, levels).ravel()
    r, lo = rank.ravel(), nb.ravel()
    on = lo < r  # pixels that are boundary for k in [lo, r)
    length = np.bincount(lo[on], minlength=n + 1) - np.bincount(r[on], minlength=n + 1)
    total = (np.bincount(lo[on], grad[on], minlength=n + 1)
             - np.bincount(r[on], grad[on], minlength=n + 1))
    length = np.cumsum(length[: n - 1])
    total = np.cumsum(total[: n - 1])
    edge = total / np.maximum(length, 1)  # length > 0 for every proper segment of a connected grid
    return ThresholdTable(thresholds=m.ravel()[order[: n - 1]].astype(np.float64), edge=edge)


def select_threshold(table: ThresholdTable, same_values: np.ndarray, other_values: np.ndarray,
                     map_max: float, max_area: float = 0.4, prior: bool = True, edge: bool = True,
                     pos: bool = True, neg: bool = True) -> tuple[float, float]:
    """Best lambda for one click: argmax of the product of the enabled scores (paper Eq. 8-9).

    Args:
        table: the click's :class:`ThresholdTable`.
        same_values: map values at the clicks with the click's own label (itself included).
        other_values: map values at the clicks of the opposite label.
        map_max: the map's max (the bound of the negative gate when there are no opposite clicks).
        max_area: size prior, candidate index / #candidates must be below it (40%, paper §3.4).

    Returns:
        ``(lambda, score)``; lambda is 0.5 when every score is disabled (paper Table 2, row 1).
    """
    t = table.thresholds
    m = len(t)
    if not (prior or edge or pos or neg) or m == 0:
        return 0.5, 0.0
    # The size prior and the negative gate are 0/1 factors that hold on a prefix of the sorted
    # candidates (the prior on the first fraction, the gate below a bound of sorted values): the
    # product is computed on that prefix only, and everything after it scores 0 exactly as the
    # full product would (all factors are >= 0, so the first maximum is the same).
    n = _prior_cut(m, float(max_area)) if prior else m
    if neg:
        bound = min(float(np.min(other_values)) if len(other_values) else map_max, map_max)
        n = min(n, int(np.searchsorted(t, bound, side="left")))  # t < bound
    if n == 0:
        return float(t[0]), 0.0
    score = np.ones(n)
    if edge:
        score *= table.edge[:n]
    if pos and len(same_values):
        # fraction of same-label clicks with value <= lambda, via a search in the sorted click values
        score *= np.searchsorted(np.sort(same_values), t[:n], side="right") / len(same_values)
    k = int(np.argmax(score))
    return float(t[k]), float(score[k])


@functools.lru_cache(maxsize=64)
def _prior_cut(m: int, max_area: float) -> int:
    """Number of candidates passing the size prior ``linspace(0, 1, m) < max_area`` (a prefix)."""
    return int(np.count_nonzero(np.linspace(0.0, 1.0, m) < max_area))


def truncated_nn(adjusted: np.ndarray, positive: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Truncated 1-NN merge (paper Eq. 10-11).

    Args:
        adjusted: ``(K, H, W)`` maps ``M_k / lambda_k``.
        positive: ``(K,)`` bool labels.
        points: ``(K, 2)`` integer ``(x, y)``; each clicked pixel keeps its own label (later clicks win).

    Returns:
        ``(H, W)`` bool: the nearest click is positive and its adjusted distance is <= 1.
    """
    positive = np.asarray(positive, bool)
    nearest = np.argmin(adjusted, axis=0)
    best = np.take_along_axis(adjusted, nearest[None], 0)[0]
    mask = positive[nearest] & (best <= 1.0)
    for (x, y), p in zip(np.asarray(points, np.int64), positive):
        mask[y, x] = p
    return mask
