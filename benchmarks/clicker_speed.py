"""Per-click overhead of the evaluation protocol itself (model excluded), exact vs RITM-style.

For every real GrabCut instance a fixed sequence of 20 imperfect predictions is generated (the GT
grown/shrunk by a shrinking margin plus false-positive blobs), then both clickers replay it:

* ``iis``: ``iis.core.loop.run_instance`` with a predictor that returns the precomputed maps: the
  exact clicker (bounding-box-cropped exact EDT), IoU and all bookkeeping of the real loop;
* ``ritm-style``: the reference's way: two OpenCV ``DIST_L2`` precise transforms of the full
  zero-padded FN/FP images per click, mask multiply, ``np.where`` for the first maximum, and IoU.

Usage: python benchmarks/clicker_speed.py --data-root ../shared/data [--repeats 3]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from iis.core.loop import run_instance
from iis.core.metrics import iou
from iis.core.protocol import EvalProtocol
from iis.data import get_dataset

MAX_CLICKS = 20


def fake_predictions(gt: np.ndarray, seed: int) -> list[np.ndarray]:
    """20 probability maps with decreasing error, deterministic per instance."""
    rng = np.random.default_rng(seed)
    obj = (gt == 1).astype(np.uint8)
    h, w = gt.shape
    out = []
    for k in range(MAX_CLICKS):
        m = max(1, 12 - k // 2)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1, 2 * m + 1))
        p = cv2.dilate(obj, kernel) if k % 2 else cv2.erode(obj, kernel)
        for _ in range(max(0, 3 - k // 5)):  # a few false-positive blobs early on
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(5, 25)
            cv2.circle(p, (int(cx), int(cy)), int(r), 1, -1)
        out.append(p.astype(np.float32))
    return out


class Replay:
    def __init__(self, maps):
        self.maps = maps

    def set_image(self, image):
        self.k = 0

    def predict(self, clicks):
        self.k += 1
        return self.maps[self.k - 1]


def ritm_style(gt: np.ndarray, maps: list[np.ndarray]) -> None:
    """The reference loop's CPU work per click (clicker.py + get_iou), on the same predictions."""
    obj, valid = gt == 1, gt != -1
    not_clicked = np.ones(gt.shape, bool)
    pred = np.zeros(gt.shape, bool)
    for k in range(MAX_CLICKS):
        fn = np.logical_and(np.logical_and(obj, ~pred), valid)
        fp = np.logical_and(np.logical_and(~obj, pred), valid)
        fn_dt = cv2.distanceTransform(np.pad(fn, 1).astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]
        fp_dt = cv2.distanceTransform(np.pad(fp, 1).astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]
        fn_dt = fn_dt * not_clicked
        fp_dt = fp_dt * not_clicked
        fn_max, fp_max = np.max(fn_dt), np.max(fp_dt)
        dt = fn_dt if fn_max > fp_max else fp_dt
        coords = np.where(dt == max(fn_max, fp_max))
        y, x = coords[0][0], coords[1][0]
        not_clicked[y, x] = False
        pred = maps[k] > 0.49
        inter = np.logical_and(np.logical_and(pred, obj), valid).sum()
        union = np.logical_and(np.logical_or(pred, obj), valid).sum()
        _ = inter / union


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--dataset", default="grabcut")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    ds = get_dataset(args.dataset, args.data_root)
    samples = [ds[i] for i in range(len(ds))]
    preds = [fake_predictions(s.gt, i) for i, s in enumerate(samples)]
    proto = EvalProtocol(name="bench", flip=False, zoom_in=None, target_iou=1.01, max_clicks=MAX_CLICKS)
    n_clicks = len(samples) * MAX_CLICKS
    best = {"iis": float("inf"), "ritm-style": float("inf")}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for s, m in zip(samples, preds):
            run_instance(Replay(m), s.image, s.gt, proto)
        best["iis"] = min(best["iis"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        for s, m in zip(samples, preds):
            ritm_style(s.gt, m)
        best["ritm-style"] = min(best["ritm-style"], time.perf_counter() - t0)
    print(f"{args.dataset}: {len(samples)} instances x {MAX_CLICKS} clicks, best of {args.repeats}, "
          f"opencv {cv2.__version__}")
    for k, v in best.items():
        print(f"  {k:11s} {1e3 * v / n_clicks:7.3f} ms/click")
    print(f"  ratio iis / ritm-style = {best['iis'] / best['ritm-style']:.2f}")


if __name__ == "__main__":
    main()
