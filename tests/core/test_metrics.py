import numpy as np
import pytest

from iis.core.metrics import iou, miou_curve, noc, noic, nof
from iis.core.types import Click


def test_iou_ignores_minus_one():
    gt = np.array([[1, 1, 0, -1]], np.int8)
    pred = np.array([[1, 0, 1, 1]], bool)
    assert iou(gt, pred) == pytest.approx(1 / 3)
    assert iou(gt, pred, ignore_as_background=True) == pytest.approx(1 / 4)


def test_noc_and_nof_rules():
    curves = [
        [0.5, 0.86, 0.91],  # NoC85 2, NoC90 3
        [0.9],  # 1 / 1
        [0.1] * 19 + [0.95],  # reaches at click 20: NoC 20, counted as failure (equality rule)
        [0.2] * 20,  # never: 20
    ]
    assert noc(curves, 0.85) == pytest.approx((2 + 1 + 20 + 20) / 4)
    assert noc(curves, 0.90) == pytest.approx((3 + 1 + 20 + 20) / 4)
    assert nof(curves, 0.85) == 2
    assert nof(curves, 0.85, max_clicks=100) == 1  # only the run that never reached 0.85


def test_miou_refuses_early_stopped_runs():
    assert miou_curve([[0.5, 0.9], [0.9]], 2) is None
    assert miou_curve([[0.5, 0.9], [0.7, 0.8]], 2) == pytest.approx([0.6, 0.85])


def test_noic_counts_misclassified_click_pixels():
    p1 = np.zeros((4, 4), bool)
    p2 = p1.copy()
    p2[1, 1] = True
    clicks = [Click(1, 1, True), Click(2, 2, False), Click(1, 1, True)]
    assert noic(clicks, [p1, p2, p2]) == 1  # only the first click's pixel stayed wrong
