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


def _masked_max(region: np.ndarray, clicked: np.ndarray | None) -> tuple[int, int, int]:
    """(max squared distance, row, col) of the first row-major maximum; (0, 0, 0) if none."""
    sq, (r0, c0) = error_sqdist(region)
    if sq.size == 0:
        return 0, 0, 0
    if clicked is not None:
        sq[clicked[r0:r0 + sq.shape[0], c0:c0 + sq.shape[1]]] = 0
    flat = int(np.argmax(sq))  # argmax returns the first maximum in row-major order
    r, c = divmod(flat, sq.shape[1])
    best = int(sq[r, c])
    if best == 0:
        return 0, 0, 0
    return best, r0 + r, c0 + c


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
    valid = gt != -1
    obj = gt == 1
    pred = pred.astype(bool, copy=False)
    fn = obj & ~pred & valid
    fp = ~obj & pred & valid
    fn_best, fn_r, fn_c = _masked_max(fn, clicked)
    fp_best, fp_r, fp_c = _masked_max(fp, clicked)
    if fn_best > fp_best:
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
