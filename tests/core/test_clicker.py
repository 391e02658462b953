import numpy as np
import pytest

from iis.core.clicker import error_sqdist, next_click, next_click_m2n2, training_clicks
from iis.core.types import Click


def _square(n=11, lo=2, hi=9):
    gt = np.zeros((n, n), np.int8)
    gt[lo:hi, lo:hi] = 1
    return gt


def test_first_click_centre_of_square():
    gt = _square()  # rows/cols 2..8, centre (5, 5)
    assert next_click(gt, np.zeros(gt.shape, bool)) == Click(5, 5, True)


def test_first_click_even_square_takes_first_rowmajor_max():
    gt = np.zeros((8, 8), np.int8)
    gt[2:6, 2:6] = 1  # the four centre pixels tie; row-major first is (r=3, c=3)
    assert next_click(gt, np.zeros(gt.shape, bool)) == Click(3, 3, True)


def test_image_border_counts_as_boundary():
    gt = np.ones((5, 9), np.int8)  # whole image is object: border pixels are at distance 1
    c = next_click(gt, np.zeros(gt.shape, bool))
    assert (c.y, c.x, c.positive) == (2, 2, True)  # first pixel at distance 3 (row 2 of 5, col 2..6)


def test_tie_goes_negative():
    gt = np.zeros((9, 20), np.int8)
    gt[2:7, 2:7] = 1  # FN: a 5x5 square (max distance 3)
    pred = np.zeros(gt.shape, bool)
    pred[2:7, 12:17] = True  # FP: an equal 5x5 square
    c = next_click(gt, pred)
    assert c == Click(14, 4, False)


def test_strictly_larger_fn_is_positive():
    gt = np.zeros((9, 20), np.int8)
    gt[1:8, 1:8] = 1
    pred = np.zeros(gt.shape, bool)
    pred[2:7, 12:17] = True
    assert next_click(gt, pred) == Click(4, 4, True)


def test_ignore_never_clicked():
    gt = np.full((15, 15), -1, np.int8)
    gt[4:11, 4:11] = 1  # object surrounded by a wide ignore band
    pred = np.ones(gt.shape, bool)  # predicts everything: FP only in ignore -> no FP at all
    pred[4:11, 4:11] = False
    c = next_click(gt, pred)
    assert gt[c.y, c.x] != -1 and c.positive
    gt2 = np.zeros((15, 15), np.int8)
    gt2[:, :7] = -1  # left half ignore, predicted object there must not attract clicks
    gt2[5:10, 10:14] = 1
    p2 = np.zeros(gt2.shape, bool)
    p2[:, :7] = True
    c2 = next_click(gt2, p2)
    assert gt2[c2.y, c2.x] == 1 and c2.positive


def test_repeated_pixel_excluded():
    gt = _square()
    pred = np.zeros(gt.shape, bool)
    clicked = np.zeros(gt.shape, bool)
    first = next_click(gt, pred, clicked)
    clicked[first.y, first.x] = True
    second = next_click(gt, pred, clicked)
    assert (second.x, second.y) != (first.x, first.y)
    assert second.positive


def test_no_error_gives_negative_at_origin():
    gt = _square()
    assert next_click(gt, gt == 1) == Click(0, 0, False)


def test_deterministic_on_many_ties(rng):
    # random blobs full of equal distances: repeated calls must agree exactly
    gt = (rng.random((120, 160)) > 0.3).astype(np.int8)
    pred = rng.random((120, 160)) > 0.6
    clicks = {next_click(gt, pred) for _ in range(20)}
    assert len(clicks) == 1


def test_cropped_transform_equals_full_transform(rng):
    from scipy import ndimage

    for _ in range(20):
        region = np.zeros((40, 50), bool)
        r0, c0 = rng.integers(0, 30), rng.integers(0, 40)
        region[r0:r0 + rng.integers(1, 15), c0:c0 + rng.integers(1, 15)] = rng.random() > 0.1
        region &= rng.random(region.shape) > 0.1
        sq, (r, c) = error_sqdist(region)
        padded = np.pad(region, 1)
        full = np.rint(ndimage.distance_transform_edt(padded)[1:-1, 1:-1] ** 2).astype(np.int64)
        if sq.size:
            np.testing.assert_array_equal(full[r:r + sq.shape[0], c:c + sq.shape[1]], sq)
            assert full.sum() == sq.sum()


def test_matches_opencv_reference_where_no_ties(rng):
    cv2 = pytest.importorskip("cv2")
    # a single disc: unique maximum, so OpenCV's float32 ULP noise cannot flip the choice
    yy, xx = np.mgrid[:61, :61]
    gt = (((yy - 27) ** 2 + (xx - 33.3) ** 2) < 200).astype(np.int8)
    dt = cv2.distanceTransform(np.pad(gt, 1).astype(np.uint8), cv2.DIST_L2, 0)[1:-1, 1:-1]
    r, c = np.argwhere(dt == dt.max())[0]
    assert next_click(gt, np.zeros(gt.shape, bool)) == Click(c, r, True)


def test_m2n2_clicker_labels_from_gt():
    gt = np.zeros((9, 20), np.int8)
    gt[2:7, 2:7] = 1
    pred = np.zeros(gt.shape, bool)
    pred[1:8, 11:18] = True  # larger FP region wins the single transform
    c = next_click_m2n2(gt, pred)
    assert c == Click(14, 4, False)
    assert next_click_m2n2(gt, gt == 1) == Click(4, 4, True)  # no error: GT centre


def test_training_clicks_half_max_rule(rng):
    gt = np.zeros((2, 30, 30), np.float32)
    gt[:, 5:25, 5:25] = 1
    prob = np.zeros_like(gt)
    prob[1] = gt[1]  # second sample already perfect
    out = training_clicks(gt, prob, rng)
    assert out[1] is None
    c = out[0]
    assert c.positive
    # distance > max/2 = 5 from the square's boundary: inside the central region
    assert 10 <= c.x <= 19 and 10 <= c.y <= 19
