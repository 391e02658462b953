"""Interactive-segmentation metrics on per-instance IoU curves (protocol.md §A.6-A.8)."""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .types import Click

__all__ = ["iou", "noc", "nof", "miou_curve", "invalid_click", "noic", "NOC_THRESHOLDS", "summarize"]

NOC_THRESHOLDS = (0.80, 0.85, 0.90, 0.95)


def iou(gt: np.ndarray, pred: np.ndarray, ignore_as_background: bool = False) -> float:
    """IoU of a boolean prediction with an int8 mask; pixels labelled -1 are left out.

    With ``ignore_as_background`` (M2N2's evaluation) the -1 pixels count as background instead.
    A prediction and GT that are both empty give IoU 1.
    """
    obj = gt == 1
    pred = pred.astype(bool, copy=False)
    inter = np.count_nonzero(np.logical_and(obj, pred))  # object pixels are never ignore pixels
    if ignore_as_background:
        union = np.count_nonzero(obj) + np.count_nonzero(pred) - inter
    else:  # (obj | pred) & valid splits into obj and the predicted background pixels
        union = np.count_nonzero(obj) + np.count_nonzero(np.logical_and(gt == 0, pred))
    return inter / union if union else 1.0


def _noc_one(ious: Sequence[float], thr: float, max_clicks: int) -> int:
    for k, v in enumerate(ious):
        if v >= thr:
            return k + 1
    return max_clicks


def noc(all_ious: Iterable[Sequence[float]], thr: float, max_clicks: int = 20) -> float:
    """Mean over instances of the first click reaching ``thr`` (``max_clicks`` if never)."""
    values = [_noc_one(x, thr, max_clicks) for x in all_ious]
    return float(np.mean(values)) if values else float("nan")


def nof(all_ious: Iterable[Sequence[float]], thr: float, max_clicks: int = 20) -> int:
    """Number of failures with the reference rule: instances whose NoC@thr *equals* ``max_clicks``.

    This counts an instance that first reaches ``thr`` exactly at the last click as a failure, as
    RITM's ``compute_noc_metric`` does (protocol.md §A.7).
    """
    return int(sum(_noc_one(x, thr, max_clicks) == max_clicks for x in all_ious))


def miou_curve(all_ious: Sequence[Sequence[float]], max_clicks: int) -> list[float] | None:
    """mIoU after click k (k = 1..max_clicks), or None if any run stopped early.

    The reference silently truncates to the shortest curve; we refuse instead, since a curve built
    from early-stopped runs is biased.
    """
    if not all_ious or any(len(x) < max_clicks for x in all_ious):
        return None
    return [float(v) for v in np.asarray([list(x)[:max_clicks] for x in all_ious], np.float64).mean(0)]


def invalid_click(click: Click, pred_after: np.ndarray) -> bool:
    """GPCIS §5.1: a click is invalid when the prediction that followed it misclassifies its own pixel."""
    return bool(pred_after[int(click.y), int(click.x)]) != bool(click.positive)


def noic(clicks: Sequence[Click], preds_after: Sequence[np.ndarray]) -> int:
    """Number of invalid clicks (:func:`invalid_click`); ``preds_after[k]`` is the binary mask produced
    after click ``k``."""
    return sum(invalid_click(c, p) for c, p in zip(clicks, preds_after))


def summarize(all_ious: Sequence[Sequence[float]], max_clicks: int, total_clicks: int | None = None,
              elapsed: float | None = None, latency: float | None = None) -> dict:
    """Dataset-level numbers in the shape of ``results.json``."""
    n_clicks = total_clicks if total_clicks is not None else sum(len(x) for x in all_ious)
    out = {
        "num_instances": len(all_ious),
        "noc": {f"{round(t * 100)}": noc(all_ious, t, max_clicks) for t in NOC_THRESHOLDS},
        "nof": {f"{round(t * 100)}": nof(all_ious, t, max_clicks) for t in NOC_THRESHOLDS},
        "miou": miou_curve(all_ious, max_clicks),
        "num_clicks": n_clicks,
    }
    if elapsed is not None:
        out["time"] = elapsed
        out["spc"] = elapsed / n_clicks if n_clicks else float("nan")
    if latency is not None:
        out["latency_per_click"] = latency / n_clicks if n_clicks else float("nan")
    return out
