"""Errors (one line, session unchanged), outputs (polygons, RLE, PNG), coordinate helpers, load options."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import iis
from iis.api import (InvalidClickError, InvalidImageError, InvalidMaskError, NothingToUndoError,
                     ProtocolOptionError, UnknownMethodError, WeightsMismatchError)
from iis.core.errors import IISError


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and len(msg) < 1000, msg
    return msg


def _snapshot(sess):
    return (sess.clicks, sess.prediction.mask.copy(), sess.prediction.prob.copy(), len(sess._history),
            sess._p.get_state() if sess._seg.is_model else None)


def _same(a, b) -> bool:
    same = a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2]) and a[3] == b[3]
    if a[4] is not None:
        same = same and a[4].prev is b[4].prev and (a[4].zoom is None or (
            a[4].zoom.roi == b[4].zoom.roi and a[4].zoom.prev_probs is b[4].zoom.prev_probs))
    return same


@pytest.fixture(scope="module")
def seg():
    return iis.load("simpleclick_vit_test", zoom_in={"target_size": (64, 64)})


def test_refused_calls_leave_session_unchanged(seg, small_image):
    sess = seg.session(small_image)
    sess.click(30, 20)
    sess.click(5, 5, positive=False)
    before = _snapshot(sess)
    bad = [
        (lambda: sess.click(64, 10), InvalidClickError, "outside the 64x48 image"),
        (lambda: sess.click(-1, 10), InvalidClickError, "0 <= x < 64"),
        (lambda: sess.click(10, float("nan")), InvalidClickError, "finite"),
        (lambda: sess.click("a", 3), InvalidClickError, "expected a number"),
        (lambda: sess.extend([(1, 1, True), (1, 99, True)]), InvalidClickError, "click 1"),
        (lambda: sess.set_mask(np.zeros((10, 10), bool)), InvalidMaskError, "expected the image's (48, 64)"),
        (lambda: sess.set_mask(np.full((48, 64), 255, np.uint8)), InvalidMaskError, "mask > 127"),
        (lambda: sess.set_mask([[0]]), InvalidMaskError, "numpy array"),
    ]
    for call, kind, text in bad:
        with pytest.raises(kind) as e:
            call()
        assert text in _one_line(e.value) and isinstance(e.value, (IISError, ValueError))
        assert _same(before, _snapshot(sess)), f"{text}: the session changed"
    # the session still works and matches a fresh replay
    pred = sess.click(40, 30)
    assert np.array_equal(pred.mask, seg.predict(small_image, [(30, 20, True), (5, 5, False), (40, 30, True)]).mask)


def test_undo_with_no_clicks(seg, small_image):
    sess = seg.session(small_image)
    with pytest.raises(NothingToUndoError) as e:
        sess.undo()
    assert "0 clicks" in _one_line(e.value)
    sess.set_mask(np.ones((48, 64), bool))
    before = _snapshot(sess)
    with pytest.raises(NothingToUndoError):
        sess.undo()
    assert _same(before, _snapshot(sess))


@pytest.mark.parametrize("image, text", [
    (np.zeros((8, 8, 3), np.float32), "dtype float32; expected uint8"),
    (np.zeros((8, 8), np.uint8), "2-D array"),
    (np.zeros((8, 8, 4), np.uint8), "RGBA"),
    (np.zeros((8, 8, 1), np.uint8), "expected (H, W, 3)"),
    (np.zeros((0, 8, 3), np.uint8), "empty"),
    ([[1, 2, 3]], "numpy uint8 array"),
])
def test_bad_images(seg, image, text):
    for call in (lambda: seg.session(image), lambda: seg.predict(image, [(1, 1, True)])):
        with pytest.raises(InvalidImageError) as e:
            call()
        assert text in _one_line(e.value)


def test_load_errors(tmp_path):
    with pytest.raises(UnknownMethodError) as e:
        iis.load("simpleclik_vit_base")
    assert "did you mean 'simpleclick_vit_base'" in _one_line(e.value) and "random_walker" in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        iis.load("simpleclick_vit_test", weights=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="no such file"):
        iis.load(str(tmp_path / "run" / "last.ckpt"))
    # weights of another model: one line with what differs
    w = tmp_path / "ritm.pth"
    torch.save(iis.create_model("ritm_hrnet_test").state_dict(), w)
    with pytest.raises(WeightsMismatchError) as e:
        iis.load("simpleclick_vit_test", weights=w)
    msg = _one_line(e.value)
    assert "does not fit model 'simpleclick_vit_test'" in msg and "missing" in msg and "unexpected" in msg
    # same keys, another shape (a different variant)
    w2 = tmp_path / "cplot.pth"
    torch.save(iis.create_model("simpleclick_vit_test", img_size=128).state_dict(), w2)
    with pytest.raises(WeightsMismatchError, match="of another shape"):
        iis.load("simpleclick_vit_test", weights=w2)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(IISError, match="not a readable torch checkpoint"):
        iis.load("simpleclick_vit_test", weights=junk)
    with pytest.raises(ProtocolOptionError, match="training-free"):
        iis.load("random_walker", flip=True)
    with pytest.raises(ProtocolOptionError, match="without weights"):
        iis.load("random_walker", weights=w)
    with pytest.raises(ProtocolOptionError, match="threshold"):
        iis.load("simpleclick_vit_test", threshold=1.5)
    with pytest.raises(ProtocolOptionError, match="protocol='nope'"):
        iis.load("simpleclick_vit_test", protocol="nope")


def test_protocol_overrides():
    s = iis.load("simpleclick_vit_test")
    assert s.protocol.name == "simpleclick" and s.protocol.zoom_in.target_size == (448, 448) and s.protocol.flip
    assert s.note and "random" in s.note
    d = iis.load("simpleclick_vit_test", dataset="davis", threshold=0.6, flip=False)
    assert d.protocol.zoom_in.target_size == (672, 672) and d.protocol.threshold == 0.6 and not d.protocol.flip
    assert iis.load("simpleclick_vit_test", zoom_in=False).protocol.zoom_in is None
    assert iis.load("ritm_hrnet_test", protocol="gpcis").protocol.infer_size == 384
    assert iis.load("random_walker", threshold=0.3).protocol.threshold == 0.3


def test_checkpoint_path_loads(tmp_path):
    torch.manual_seed(0)
    m = iis.create_model("simpleclick_vit_test")
    ck = tmp_path / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in m.state_dict().items()},
                "iis": {"model": {"name": "simpleclick_vit_test", "kwargs": {}}, "protocol": "plain"}}, ck)
    seg = iis.load(ck)
    assert seg.is_model and seg.protocol.name == "plain" and seg.name == "simpleclick_vit_test"


def test_outputs(tmp_path):
    mask = np.zeros((40, 60), bool)
    mask[5:30, 5:40] = True
    mask[10:20, 10:20] = False  # a hole
    mask[33:37, 50:55] = True  # a second object
    pred = iis.Prediction.from_prob(mask.astype(np.float32), [iis.Click(20, 25, True)], 0.5)
    assert pred.mask.dtype == bool and pred.prob.dtype == np.float32 and np.array_equal(pred.mask, mask)
    polys = pred.to_polygons(tolerance=0.0)
    assert len(polys) == 2
    big = max(polys, key=lambda p: len(p.exterior))
    assert len(big.holes) == 1 and big.exterior.shape[1] == 2
    # (x, y): the exterior spans columns 5..39 and rows 5..29
    assert big.exterior[:, 0].min() == 5 and big.exterior[:, 0].max() == 39
    assert big.exterior[:, 1].min() == 5 and big.exterior[:, 1].max() == 29
    import cv2

    canvas = np.zeros(mask.shape, np.uint8)
    for p in polys:
        cv2.fillPoly(canvas, [p.exterior.round().astype(np.int32)], 1)
        for h in p.holes:
            cv2.fillPoly(canvas, [h.round().astype(np.int32)], 0)
    # the boundary pixels of holes belong to the object; everything else is reproduced exactly
    assert (canvas.astype(bool) != mask).sum() <= 4 * 10
    simple = pred.to_polygons(tolerance=2.0)
    assert sum(len(p.exterior) for p in simple) < sum(len(p.exterior) for p in polys)
    with pytest.raises(ValueError, match="tolerance"):
        pred.to_polygons(tolerance=-1)
    assert iis.Prediction.from_prob(np.zeros((4, 4), np.float32), (), 0.5).to_polygons() == []

    from pycocotools import mask as mask_utils

    rle = pred.to_rle()
    assert rle["size"] == [40, 60] and isinstance(rle["counts"], str)
    assert np.array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool), mask)

    out = pred.to_png(tmp_path / "m.png")
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back.ndim == 2 and np.array_equal(back == 255, mask)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]  # no temporary left behind
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pred.to_png(tmp_path / "nope" / "m.png")
    # predictions are read-only copies: editing them cannot touch a session's state
    with pytest.raises(ValueError):
        pred.prob[0, 0] = 1.0


def test_coordinate_helpers():
    from iis.api import clicks_from_percent, clicks_from_yx

    class IsegmClick:  # isegm's Click(is_positive, coords=(y, x))
        def __init__(self, is_positive, coords):
            self.is_positive, self.coords = is_positive, coords

    assert clicks_from_yx([(80, 120, True), IsegmClick(False, (60, 40))]) == [
        iis.Click(120.0, 80.0, True), iis.Click(40.0, 60.0, False)]
    ls = [{"x": 50.0, "y": 25.0, "keypointlabels": ["Object"]}, {"x": 100, "y": 0, "keypointlabels": ["Negative"]},
          (10, 10, True)]
    assert clicks_from_percent(ls, width=200, height=100) == [
        iis.Click(100.0, 25.0, True), iis.Click(199.0, 0.0, False), iis.Click(20.0, 10.0, True)]
    with pytest.raises(InvalidClickError, match=r"\[0, 100\]"):
        clicks_from_percent([{"x": 120, "y": 3}], 10, 10)
    with pytest.raises(InvalidClickError, match="click 0"):
        clicks_from_yx([(1, 2)])


def test_image_is_copied(seg, small_image):
    img = small_image.copy()
    sess = seg.session(img)
    p1 = sess.click(30, 20)
    img[:] = 0  # the caller edits its array: the session is unaffected
    assert np.array_equal(seg.session(small_image).click(30, 20).mask, p1.mask)
    assert not sess.image.flags.writeable
