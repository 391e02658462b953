"""The fast clicker (pieces, bounds, candidate rounding) against a straightforward implementation.

The reference below is the clicker as first written: exact integer squared distances of each whole
error region (``error_sqdist``, or SciPy's exact transform on the full padded image), clicked pixels
zeroed, the first row-major maximum, strict comparison FN > FP. The fast one must give the same
click everywhere, ties included, and the IoU the same value as the plain formula.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from iis.core import clicker as fast
from iis.core.clicker import error_sqdist
from iis.core.loop import run_instance
from iis.core.metrics import iou
from iis.core.protocol import EvalProtocol
from iis.core.types import Click
ROOT = Path(__file__).resolve().parents[2]


def _sq_scipy(region: np.ndarray) -> np.ndarray:
    return np.rint(ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1] ** 2).astype(np.int64)


def _sq_cropped(region: np.ndarray) -> np.ndarray:
    full = np.zeros(region.shape, np.int64)
    sq, (r0, c0) = error_sqdist(region)
    full[r0:r0 + sq.shape[0], c0:c0 + sq.shape[1]] = sq
    return full


def _ref_max(region, clicked, sqfn):
    sq = sqfn(region)
    if clicked is not None:
        sq[clicked] = 0
    k = int(np.argmax(sq))
    r, c = divmod(k, sq.shape[1])
    return (0, 0, 0) if sq[r, c] == 0 else (int(sq[r, c]), r, c)


def ref_click(gt, pred, clicked=None, sqfn=_sq_scipy):
    valid, obj = gt != -1, gt == 1
    fn = obj & ~pred & valid
    fp = ~obj & pred & valid
    b1, r1, c1 = _ref_max(fn, clicked, sqfn)
    b2, r2, c2 = _ref_max(fp, clicked, sqfn)
    return Click(c1, r1, True) if b1 > b2 else Click(c2, r2, False)


def ref_click_m2n2(gt, pred, clicked=None, sqfn=_sq_scipy):
    obj = gt == 1
    best, r, c = _ref_max(obj != pred, clicked, sqfn)
    if best == 0:
        _, r, c = _ref_max(obj, None, sqfn)
        return Click(c, r, True)
    return Click(c, r, bool(obj[r, c]))


def ref_iou(gt, pred, ignore_as_background=False):
    obj = gt == 1
    if ignore_as_background:
        inter, union = np.count_nonzero(obj & pred), np.count_nonzero(obj | pred)
    else:
        valid = gt != -1
        inter, union = np.count_nonzero(obj & pred & valid), np.count_nonzero((obj | pred) & valid)
    return inter / union if union else 1.0


def _check(gt, pred, clicked=None):
    assert fast.next_click(gt, pred, clicked) == ref_click(gt, pred, clicked)
    assert fast.next_click_m2n2(gt, pred, clicked) == ref_click_m2n2(gt, pred, clicked)
    for bg in (False, True):
        assert iou(gt, pred, bg) == ref_iou(gt, pred, bg)


def _blobs(rng, shape, n, rmax):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    m = np.zeros(shape, bool)
    for _ in range(n):
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(1, rmax)
        m |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    return m


def test_random_scenes_with_ignore_borders_and_clicks(rng):
    for trial in range(150):
        shape = (int(rng.integers(5, 70)), int(rng.integers(5, 90)))
        gt = np.where(_blobs(rng, shape, int(rng.integers(0, 5)), 20), 1, 0).astype(np.int8)
        if trial % 3 == 0:  # an ignore band around the object, or a random ignore patch
            band = ndimage.binary_dilation(gt == 1, iterations=2) & ~ndimage.binary_erosion(gt == 1, iterations=1)
            gt[band] = -1
        elif trial % 3 == 1:
            gt[_blobs(rng, shape, 2, 10)] = -1
        pred = _blobs(rng, shape, int(rng.integers(0, 8)), 15)
        if trial % 5 == 0:
            pred |= rng.random(shape) > 0.97  # speckles: many tiny pieces
        clicked = None
        if trial % 2:
            clicked = rng.random(shape) > 0.9
        _check(gt, pred, clicked)


def test_ties_across_pieces_and_regions():
    gt = np.zeros((30, 60), np.int8)
    gt[3:10, 40:47] = 1  # FN square, right, top
    gt[20:27, 5:12] = 1  # FN square, left, bottom (same depth, later row)
    pred = np.zeros(gt.shape, bool)
    pred[3:10, 20:27] = True  # FP square of the same depth: ties go negative
    pred[20:27, 45:52] = True
    _check(gt, pred)
    _check(gt, pred, np.zeros(gt.shape, bool))
    # ties inside one piece and between pieces of one region (row-major across boxes)
    gt2 = np.zeros((40, 40), np.int8)
    gt2[5:9, 30:34] = 1
    gt2[5:9, 2:6] = 1
    gt2[20:24, 2:6] = 1
    _check(gt2, np.zeros(gt2.shape, bool))
    assert fast.next_click(gt2, np.zeros(gt2.shape, bool)) == Click(3, 6, True)


def test_borders_and_empty_regions():
    for gt in (np.ones((7, 9), np.int8), np.zeros((7, 9), np.int8), np.full((7, 9), -1, np.int8)):
        for pred in (np.zeros(gt.shape, bool), np.ones(gt.shape, bool)):
            _check(gt, pred)
    gt = np.zeros((12, 12), np.int8)
    gt[:, :4] = 1  # object on the left border
    pred = np.zeros(gt.shape, bool)
    pred[-3:, -5:] = True  # FP in the bottom-right corner
    _check(gt, pred)
    _check(gt, gt == 1)  # no error: negative at (0, 0)
    assert fast.next_click(gt, gt == 1) == Click(0, 0, False)
    one = np.zeros((1, 1), np.int8)
    _check(one, np.ones((1, 1), bool))


def test_clicked_maximum_falls_back_exactly():
    gt = np.zeros((21, 21), np.int8)
    gt[2:19, 2:19] = 1
    pred = np.zeros(gt.shape, bool)
    clicked = np.zeros(gt.shape, bool)
    for _ in range(30):  # click the same region again and again: the top pixels are taken one by one
        c = fast.next_click(gt, pred, clicked)
        assert c == ref_click(gt, pred, clicked)
        clicked[c.y, c.x] = True
    clicked[2:19, 2:19] = True  # every FN pixel clicked: nothing is left, negative at (0, 0)
    _check(gt, pred, clicked)


def test_large_deep_region_beyond_uint8_bound():
    gt = np.ones((600, 620), np.int8)  # city-block depth > 255 saturates the uint8 bound
    pred = np.zeros(gt.shape, bool)
    pred[100:140, 100:140] = True
    gt[100:140, 100:140] = 0
    assert fast.next_click(gt, pred) == ref_click(gt, pred, sqfn=_sq_cropped)


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("clicker_speed", ROOT / "benchmarks" / "clicker_speed.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _RefClicker:
    """Swap the loop's clicker for the reference one for the duration of a run."""

    def __init__(self, monkeypatch):
        import iis.core.loop as loop

        self.loop, self.mp = loop, monkeypatch

    def __enter__(self):
        refs = {"ritm": lambda g, p, c: ref_click(g, p, c, _sq_cropped),
                "m2n2": lambda g, p, c: ref_click_m2n2(g, p, c, _sq_cropped)}
        self.mp.setattr(self.loop, "get_clicker", refs.__getitem__)
        self.mp.setattr(self.loop, "iou_fn", ref_iou)

    def __exit__(self, *exc):
        self.mp.undo()


@pytest.mark.parametrize("clicker", ["ritm", "m2n2"])
def test_real_grabcut_replay_same_clicks_and_ious(data_root, monkeypatch, clicker):
    from iis.data import get_dataset

    bench = _benchmark_module()
    ds = get_dataset("grabcut", str(data_root))
    proto = EvalProtocol(name="t", flip=False, zoom_in=None, target_iou=1.01, max_clicks=bench.MAX_CLICKS,
                         clicker=clicker, ignore_as_background=clicker == "m2n2")
    for i in range(0, len(ds), 3):
        s = ds[i]
        maps = bench.fake_predictions(s.gt, i)
        new = run_instance(bench.Replay(maps), s.image, s.gt, proto)
        with _RefClicker(monkeypatch):
            old = run_instance(bench.Replay(maps), s.image, s.gt, proto)
        assert new.clicks == old.clicks, i
        assert new.ious == old.ious, i
