"""Robot users: where the next simulated click goes.

``next_click`` is the evaluation clicker of RITM/SimpleClick (protocol.md §A.2-A.3) with exact,
reproducible distances; ``next_click_m2n2`` is M2N2's variant (methods.md §2.10);
``training_clicks`` is the batched half-max random rule used during iterative training (§C.5).
"""

from __future__ import annotations

import cv2
import numpy as np

from .types import Click

__all__ = ["next_click", "next_click_m2n2", "CLICKERS", "get_clicker", "error_sqdist", "training_clicks"]


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def error_sqdist(region: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Exact squared Euclidean distance of each ``region`` pixel to the nearest non-region pixel.

    The image border counts as non-region (the reference zero-pads by one pixel). Only the bounding
    box of the region, grown by one pixel, is transformed: the nearest background pixel of any
    region pixel always lies inside that grown box, so the result equals the full-image transform.

    Returns:
        ``(sq, (r0, c0))``: int64 squared distances on the crop and the crop's top-left corner in
        image coordinates. ``sq`` is empty when the region is empty.
    """
    box = _bbox(region)
    if box is None:
        return np.zeros((0, 0), np.int64), (0, 0)
    r0, r1, c0, c1 = box
    crop = np.zeros((r1 - r0 + 2, c1 - c0 + 2), dtype=np.uint8)
    crop[1:-1, 1:-1] = region[r0:r1, c0:c1]
    # OpenCV's precise mode is an exact EDT (Felzenszwalb) but its float32 output can differ by
    # one ULP between identical calls (threading), which flips ties. The true squared distance is
    # an integer and the noise is far below 0.5 at any image size we meet (< 2^11 px per side), so
    # rounding the square recovers it exactly: equal distances become equal integers, ties are real
    # ties, and the result is reproducible (tests check it against scipy's exact EDT).
    dt = cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    sq = np.rint(np.square(dt, dtype=np.float64)).astype(np.int64)
    return sq, (r0, c0)


# Pieces at least this large are split further along empty rows/columns before transforming.
_SPLIT_AREA = 4096


def _runs(occupied: np.ndarray) -> np.ndarray:
    """``(n, 2)`` [start, stop) index pairs of the runs of True in a 1-D bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], occupied, [False])).view(np.int8)))
    return edges.reshape(-1, 2)


def _pieces(region: np.ndarray, r0: int, r1: int, c0: int, c1: int, depth: int = 3) -> list[tuple[int, int, int, int]]:
    """Split a box of ``region`` along rows/columns that are empty inside it (recursive XY-cut).

    Every returned box is surrounded (inside the parent box or on its border) by pixels outside the
    region, so the exact distance of each of its pixels can be computed on the box alone, grown by
    one pixel: the nearest outside pixel is never farther than the box's ring (clamping a farther
    one onto the ring only shortens both coordinate differences).
    """
    out = []
    rows = _runs(region[r0:r1, c0:c1].any(axis=1))
    for a, b in rows:
        cols = _runs(region[r0 + a:r0 + b, c0:c1].any(axis=0))
        for c, d in cols:
            box = (r0 + int(a), r0 + int(b), c0 + int(c), c0 + int(d))
            if depth > 1 and (len(rows) > 1 or len(cols) > 1) and (b - a) * (d - c) >= _SPLIT_AREA:
                out.extend(_pieces(region, *box, depth=depth - 1))
            else:
                out.append(box)
    return out


def _bound(box: tuple[int, int, int, int]) -> int:
    """Upper bound of the squared distance inside a box: no pixel is deeper than half its short side."""
    r0, r1, c0, c1 = box
    return ((min(r1 - r0, c1 - c0) + 1) // 2) ** 2


_MAX_PIECES = 64
# Pieces at least this large get the tighter city-block bound (one cheap integer transform).
_L1_AREA = 1024

_Piece = tuple[int, tuple[int, int, int, int], np.ndarray]  # (bound, box, zero-padded uint8 crop)


def _prepare(region: np.ndarray) -> list[_Piece]:
    """The region's pieces with an upper bound of their largest squared distance each.

    The bound is the box bound or, for larger pieces, the square of the largest city-block distance
    (exact integer transform, about a tenth of the cost of the Euclidean one): the Euclidean distance
    never exceeds the city-block one, so a piece whose bound cannot reach the running maximum is
    skipped without its Euclidean transform.
    """
    box = _bbox(region)
    if box is None:
        return []
    u8 = region.view(np.uint8)
    boxes = _pieces(region, *box)
    if len(boxes) > _MAX_PIECES:  # speckle noise: per-piece overhead would exceed one transform
        boxes = [box]
    out = []
    for b in boxes:
        r0, r1, c0, c1 = b
        crop = cv2.copyMakeBorder(u8[r0:r1, c0:c1], 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        ub = _bound(b)
        if (r1 - r0) * (c1 - c0) >= _L1_AREA:
            l1 = int(cv2.distanceTransform(crop, cv2.DIST_L1, 3, dstType=cv2.CV_8U).max())
            if l1 < 255:  # 255 may be saturated
                ub = min(ub, l1 * l1)
        out.append((ub, b, crop))
    out.sort(key=lambda t: -t[0])
    return out


def _piece_max(crop: np.ndarray, box: tuple[int, int, int, int],
               clicked: np.ndarray | None) -> tuple[int, int, int]:
    """(max squared distance, row, col) of the first row-major maximum inside one piece, clicked
    pixels excluded; the values are those of :func:`error_sqdist` (same rounding), but only the few
    pixels within one unit of the float maximum are squared and rounded."""
    r0, r1, c0, c1 = box
    dt = cv2.distanceTransform(crop, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    wp = dt.shape[1]
    for attempt in range(2):
        m = float(dt.max())
        if m <= 0.0:
            return 0, 0, 0
        # Pixels with dt^2 < m^2 - 1.5 round to an integer below rint(m^2): they cannot be the maximum.
        # The float32 threshold is lowered by two ULPs so that its own rounding never drops a candidate.
        t = np.float32(np.sqrt(max(m * m - 1.5, 0.25)))
        t = np.nextafter(np.nextafter(t, np.float32(0)), np.float32(0))
        idx = np.flatnonzero(dt >= t)
        sq = np.rint(np.square(dt.ravel()[idx], dtype=np.float64)).astype(np.int64)
        rr, cc = np.divmod(idx, wp)
        rr += r0 - 1
        cc += c0 - 1
        if clicked is None:
            k = int(np.argmax(sq))
            return int(sq[k]), int(rr[k]), int(cc[k])
        sq[clicked[rr, cc]] = 0
        k = int(np.argmax(sq))
        if sq[k] == int(np.rint(m * m)):  # an unclicked pixel reaches the top value: it is the maximum
            return int(sq[k]), int(rr[k]), int(cc[k])
        # every top pixel was clicked before: zero all clicked pixels and look again (exact, rare)
        dt[1:-1, 1:-1][clicked[r0:r1, c0:c1]] = 0.0
    return 0, 0, 0  # not reached: after zeroing, the top pixel is unclicked


def _masked_max(region: np.ndarray, clicked: np.ndarray | None, above: int = 1,
                pieces: list[_Piece] | None = None) -> tuple[int, int, int]:
    """(max squared distance, row, col) of the first row-major maximum, clicked pixels excluded.

    Only values ``>= above`` matter: returns (0, 0, 0) when no pixel reaches ``above`` (in particular
    for an empty region). Pieces are visited by decreasing bound; one whose bound cannot reach the
    running maximum (or ``above``), or only tie it at a later row-major position, is skipped.
    """
    if pieces is None:
        pieces = _prepare(region)
    best, br, bc = 0, 0, 0
    for ub, box, crop in pieces:
        if ub < above or (best and (ub < best or (ub == best and (box[0], box[2]) > (br, bc)))):
            if ub < max(best, above):
                break  # sorted by bound: no later piece can do better
            continue
        v, r, c = _piece_max(crop, box, clicked)
        if v >= above and (v > best or (v == best and (r, c) < (br, bc))):
            best, br, bc = v, r, c
    return (best, br, bc) if best else (0, 0, 0)


def next_click(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None) -> Click:
    """The RITM/SimpleClick evaluation clicker (protocol.md §A.2).

    Args:
        gt: int8 ``(H, W)``, 1 object / 0 background / -1 ignore.
        pred: bool ``(H, W)`` current binary prediction (all False before the first click).
        clicked: bool ``(H, W)`` map of pixels already clicked, or None.

    Returns:
        A positive click at the FN pixel farthest from the FN boundary if that distance is strictly
        larger than the FP one, else a negative click at the farthest FP pixel; ties go negative and
        the first maximum in row-major order wins. With no error at all the click is negative at (0, 0).
    """
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ in shape")
    pred = pred.astype(bool, copy=False)
    fn = np.greater(gt == 1, pred)  # object pixels are never ignore pixels
    fp = np.logical_and(gt == 0, pred)
    pfn, pfp = _prepare(fn), _prepare(fp)
    # the region with the larger bound first: its maximum then usually rules out the other's pieces
    if (pfn[0][0] if pfn else 0) >= (pfp[0][0] if pfp else 0):
        # FN first; FP then only matters where it reaches the FN maximum (ties go negative)
        fn_best, fn_r, fn_c = _masked_max(fn, clicked, 1, pfn)
        fp_best, fp_r, fp_c = _masked_max(fp, clicked, max(fn_best, 1), pfp)
        if fp_best == 0 and fn_best > 0:
            return Click(fn_c, fn_r, True)
        return Click(fp_c, fp_r, False)
    # FP first; FN then only matters where it is strictly larger
    fp_best, fp_r, fp_c = _masked_max(fp, clicked, 1, pfp)
    fn_best, fn_r, fn_c = _masked_max(fn, clicked, fp_best + 1, pfn)
    if fn_best > 0:
        return Click(fn_c, fn_r, True)
    # negative: the first row-major maximum of the FP map (which is (0, 0) when it is all zero)
    return Click(fp_c, fp_r, False)


def next_click_m2n2(gt: np.ndarray, pred: np.ndarray, clicked: np.ndarray | None = None) -> Click:
    """M2N2's clicker (methods.md §2.10): one transform over FP ∪ FN, label = gt at the click.

    Ignore pixels are treated as background (M2N2 sets ``treat_unassigned_as_background``). With no
    error the click goes to the innermost point of the object, as positive.
    """
    obj = gt == 1
    err = obj != pred.astype(bool, copy=False)
    best, r, c = _masked_max(err, clicked)
    if best == 0:
        best, r, c = _masked_max(obj, None)
        return Click(c, r, True)
    return Click(c, r, bool(obj[r, c]))


CLICKERS = {"ritm": next_click, "m2n2": next_click_m2n2}


def get_clicker(name: str):
    try:
        return CLICKERS[name]
    except KeyError:
        raise ValueError(f"unknown clicker {name!r}; expected one of {sorted(CLICKERS)}") from None


def training_clicks(
    gt: np.ndarray, prob: np.ndarray, rng: np.random.Generator, thresh: float = 0.49
) -> list[Click | None]:
    """Batched training-time clicker (protocol.md §C.5): half-max random rule.

    Args:
        gt: ``(B, H, W)`` targets (>0.5 object; ignore pixels count as background).
        prob: ``(B, H, W)`` current probabilities.
        rng: numpy random generator (seeded per step for reproducible training).

    Returns:
        One click per sample: positive if max DT(FN) > max DT(FP) (strict), placed uniformly at random
        among pixels whose distance exceeds half the larger maximum; ``None`` if the prediction is
        already perfect. The reference uses OpenCV's approximate 5x5 transform here; we use the exact
        one (the rule is random anyway, so this only changes which pixels are eligible at the edges).
    """
    out: list[Click | None] = []
    for g, p in zip(gt > 0.5, prob):
        fn = g & (p < thresh)
        fp = ~g & (p > thresh)
        dfn, ofn = error_sqdist(fn)
        dfp, ofp = error_sqdist(fp)
        mfn = int(dfn.max()) if dfn.size else 0
        mfp = int(dfp.max()) if dfp.size else 0
        if mfn == 0 and mfp == 0:
            out.append(None)
            continue
        positive = mfn > mfp
        sq, (r0, c0) = (dfn, ofn) if positive else (dfp, ofp)
        # DT > max/2  <=>  4 * sq > max_sq (squared distances, exact)
        rr, cc = np.nonzero(4 * sq > max(mfn, mfp))
        i = int(rng.integers(len(rr)))
        out.append(Click(int(c0 + cc[i]), int(r0 + rr[i]), positive))
    return out
