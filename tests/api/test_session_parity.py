"""A session gives iis-eval's masks click by click (same predictor code), undo restores state exactly,
stateless predict == session, set_mask seeds the previous mask and the zoom ROI. Real GrabCut images."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import iis
from iis.core.loop import run_instance
from iis.core.predictor import ModelPredictor
from iis.core.protocol import get_protocol
from iis.eval.loading import build_method

CLICKS = 4
# smaller zoom targets than the presets' 448 / 400 keep the CPU tests fast; the code path is the same
# (test_default_protocol_full_image runs the presets unchanged, marked slow)
FAST_ZOOM = {"simpleclick_vit_test": {"target_size": (128, 128)},
             "ritm_hrnet_test": {"target_size": 96, "min_crop_size": 40}}


def _eval_run(name, weights, sample, clicks=CLICKS, zoom=None):
    """What iis-eval does for one instance: build_method -> ModelPredictor(protocol for the dataset) -> run_instance."""
    built = build_method(name, weights=weights)
    proto = dataclasses.replace(get_protocol(built.default_protocol).for_dataset("grabcut"), max_clicks=clicks,
                                target_iou=1.01)
    if zoom:
        proto = dataclasses.replace(proto, zoom_in=dataclasses.replace(proto.zoom_in, **zoom))
    pred = ModelPredictor(built.obj, proto, "cpu") if built.is_model else built.obj
    return run_instance(pred, sample.image, sample.gt, proto, id=sample.id, keep_preds=True), proto


@pytest.fixture(scope="module", params=["simpleclick_vit_test", "ritm_hrnet_test"])
def model_case(request, grabcut_sample, simpleclick_weights, ritm_weights):
    name = request.param
    weights = simpleclick_weights if name == "simpleclick_vit_test" else ritm_weights
    res, proto = _eval_run(name, weights, grabcut_sample, zoom=FAST_ZOOM[name])
    seg = iis.load(name, weights=weights, dataset="grabcut", zoom_in=FAST_ZOOM[name])
    return name, weights, res, proto, seg


def test_session_equals_eval_click_by_click(model_case, grabcut_sample):
    name, _, res, proto, seg = model_case
    assert seg.protocol.threshold == proto.threshold and seg.protocol.zoom_in == proto.zoom_in
    sess = seg.session(grabcut_sample.image)
    areas = []
    for k, c in enumerate(res.clicks):
        pred = sess.click(c.x, c.y, c.positive)
        assert np.array_equal(pred.mask, res.preds[k]), f"{name}: click {k + 1} differs from run_instance"
        areas.append(pred.area)
    # the masks are partial and change with the clicks, so the zoom ROI is exercised
    assert 0 < min(areas) and max(areas) < pred.mask.size and len(set(areas)) > 1


def test_undo_restores_exact_state(model_case, grabcut_sample):
    name, _, res, _, seg = model_case
    sess = seg.session(grabcut_sample.image)
    for c in res.clicks:
        sess.click(*c)
    back = sess.undo()  # == a fresh replay of the first CLICKS-1 clicks (run_instance's prediction k-1)
    assert np.array_equal(back.mask, res.preds[-2]) and len(sess) == CLICKS - 1
    assert np.array_equal(sess.prediction.prob, back.prob)
    again = sess.click(*res.clicks[-1])  # the restored predictor state gives the same next prediction
    assert np.array_equal(again.mask, res.preds[-1])
    for _ in range(CLICKS):
        sess.undo()
    assert len(sess) == 0 and not sess.prediction.mask.any()
    with pytest.raises(iis.api.NothingToUndoError, match="no click"):
        sess.undo()
    first = sess.click(*res.clicks[0])
    assert np.array_equal(first.mask, res.preds[0])


def test_stateless_predict_equals_session(model_case, grabcut_sample):
    name, _, res, _, seg = model_case
    pred = seg.predict(grabcut_sample.image, res.clicks[:3])
    assert np.array_equal(pred.mask, res.preds[2])
    assert pred.clicks == tuple(res.clicks[:3])


def test_reset_and_set_mask(model_case, grabcut_sample):
    name, _, res, proto, seg = model_case
    img = grabcut_sample.image
    sess = seg.session(img)
    sess.click(*res.clicks[0])
    sess.click(*res.clicks[1])
    sess.reset()
    assert len(sess) == 0 and np.array_equal(sess.click(*res.clicks[0]).mask, res.preds[0])
    # set_mask(m) == the predictor having predicted m: compare with an eval predictor after 2 clicks,
    # whose previous mask and zoom ROI source are its own prediction
    ref = ModelPredictor(seg._obj, proto, "cpu")
    ref.set_image(img)
    ref.predict(res.clicks[:1])
    prob2 = ref.predict(res.clicks[:2])
    sess.set_mask(prob2)
    assert len(sess) == 0 and np.array_equal(sess.prediction.mask, prob2 > proto.threshold)
    got = sess.click(*res.clicks[2])
    ref2 = ModelPredictor(seg._obj, proto, "cpu")
    ref2.set_image(img)
    ref2.set_prev_mask(prob2)
    want = ref2.predict([res.clicks[2]]) > proto.threshold
    assert np.array_equal(got.mask, want)
    assert np.array_equal(sess.undo().mask, prob2 > proto.threshold)  # undo returns to the set mask
    # the same through stateless predict(init_mask=)
    assert np.array_equal(seg.predict(img, [res.clicks[2]], init_mask=prob2).mask, want)
    # a binary starting mask is accepted too
    assert np.array_equal(sess.set_mask(res.preds[0]).mask, res.preds[0])


@pytest.mark.parametrize("method", ["random_walker", "m2n2_affinity"])
def test_training_free_session_equals_eval(method, grabcut_sample):
    res, proto = _eval_run(method, None, grabcut_sample, clicks=3)
    seg = iis.load(method)
    assert seg.protocol.threshold == proto.threshold
    sess = seg.session(grabcut_sample.image)
    for k, c in enumerate(res.clicks):
        assert np.array_equal(sess.click(*c).mask, res.preds[k]), f"{method}: click {k + 1}"
    assert np.array_equal(sess.undo().mask, res.preds[-2])
    assert np.array_equal(seg.predict(grabcut_sample.image, res.clicks).mask, res.preds[-1])
    # a second session on the same image reuses the cached image state and gives the same masks
    info = seg.cache_info()
    assert info["hits"] >= 1 and info["size"] == 1
    s2 = seg.session(grabcut_sample.image.copy())
    if method.startswith("m2n2"):  # the attention matrix is computed once per image and shared
        assert s2._p._attn is sess._p._attn and s2._p._cache is not sess._p._cache
    assert np.array_equal(s2.click(*res.clicks[0]).mask, res.preds[0])
    # set_mask: the mask is the prediction until the next click, which ignores it
    m = np.zeros(sess.shape, bool)
    m[10:50, 20:90] = True
    assert np.array_equal(s2.set_mask(m).mask, m)
    assert np.array_equal(s2.click(*res.clicks[0]).mask, res.preds[0])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["simpleclick_vit_test", "ritm_hrnet_test"])
def test_default_protocol_full_image(name, grabcut_full, simpleclick_weights, ritm_weights):
    """The presets exactly as iis-eval applies them (448² squash / RITM zoom 400) on a full GrabCut image."""
    weights = simpleclick_weights if name == "simpleclick_vit_test" else ritm_weights
    res, proto = _eval_run(name, weights, grabcut_full, clicks=5)
    seg = iis.load(name, weights=weights, dataset="grabcut")
    assert seg.protocol == proto.with_options(max_clicks=20, target_iou=0.90)
    sess = seg.session(grabcut_full.image)
    for k, c in enumerate(res.clicks):
        assert np.array_equal(sess.click(*c).mask, res.preds[k])
    assert np.array_equal(sess.undo().mask, res.preds[-2])
