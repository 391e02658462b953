"""Classical training-free baselines: random walker, GrabCut, geodesic (iis.methods.classical)."""

from __future__ import annotations

import numpy as np
import pytest

from iis.core.types import Click
from iis.methods.classical import GeodesicPredictor, GrabCutPredictor, RandomWalkerPredictor
from iis.methods.classical.geodesic import colour_likelihood
from iis.methods.classical.seeds import BG, FG, border_band, seed_map
from iis.models.registry import create_predictor, list_predictors

METHODS = ("random_walker", "grabcut", "geodesic")


def _disk(shape, cy, cx, r):
    ys, xs = np.mgrid[:shape[0], :shape[1]]
    return (ys - cy) ** 2 + (xs - cx) ** 2 <= r * r


def _scene(rng, size=64, second=True, noise=6.0):
    """Dark noisy background, a bright greenish disk A (left) and optionally a reddish disk B (right)."""
    img = rng.normal(40, noise, (size, size, 3))
    a = _disk((size, size), size // 2, size // 3, size // 6)
    b = _disk((size, size), size // 2, 3 * size // 4, size // 8)
    img[a] = rng.normal((90, 220, 120), noise, (a.sum(), 3))
    if second:
        img[b] = rng.normal((230, 90, 80), noise, (b.sum(), 3))
    return np.clip(img, 0, 255).astype(np.uint8), a, b


def _iou(p, m):
    return (p & m).sum() / max((p | m).sum(), 1)


def test_registered():
    assert set(METHODS) <= set(list_predictors())


@pytest.mark.parametrize("method", METHODS)
def test_one_positive_click_finds_the_disk(method, rng):
    img, a, _ = _scene(rng, second=False)
    pred = create_predictor(method)
    pred.set_image(img)
    prob = pred.predict([Click(64 // 3, 32, True)])
    assert prob.shape == (64, 64) and prob.dtype == np.float32
    assert prob.min() >= 0.0 and prob.max() <= 1.0
    assert _iou(prob > 0.49, a) > 0.8


def test_random_walker_blur_copes_with_heavy_noise(rng):
    img, a, _ = _scene(rng, second=False, noise=12.0)
    ious = []
    for blur in (0.0, 1.0):
        pred = RandomWalkerPredictor(blur=blur)
        pred.set_image(img)
        ious.append(_iou(pred.predict([Click(21, 32, True)]) > 0.49, a))
    assert ious[1] > 0.8 and ious[1] > ious[0]


@pytest.mark.parametrize("method", METHODS)
def test_negative_click_keeps_the_other_object_out(method, rng):
    img, a, b = _scene(rng)
    pred = create_predictor(method)
    pred.set_image(img)
    prob = pred.predict([Click(21, 32, True), Click(48, 32, False)])
    assert prob[b].mean() < 0.3
    assert (prob[_disk((64, 64), 32, 48, 5)] == 0).all()  # the clicked disk itself is background
    assert _iou(prob > 0.49, a) > 0.8


@pytest.mark.parametrize("method", METHODS)
def test_deterministic(method, rng):
    img, _, _ = _scene(rng)
    clicks = [Click(21, 32, True), Click(5, 5, False), Click(30, 40, True)]
    p1, p2 = create_predictor(method), create_predictor(method)
    p1.set_image(img)
    p2.set_image(img)
    first = p1.predict(clicks)
    p1.predict(clicks[:1])  # an unrelated call in between must not leak state
    np.testing.assert_array_equal(first, p1.predict(clicks))
    np.testing.assert_array_equal(first, p2.predict(clicks))


@pytest.mark.parametrize("method", METHODS)
def test_no_clicks_or_only_negatives_give_empty(method, rng):
    img, _, _ = _scene(rng)
    pred = create_predictor(method)
    pred.set_image(img)
    assert not pred.predict([]).any()
    assert not (pred.predict([Click(5, 5, False)]) > 0.49).any()


@pytest.mark.parametrize("method", METHODS)
def test_downscaled_working_copy_returns_full_size(method, rng):
    img, a, _ = _scene(rng, size=96, second=False)
    pred = create_predictor(method, max_side=48)
    pred.set_image(img)
    prob = pred.predict([Click(32, 48, True)])
    assert prob.shape == (96, 96)
    assert _iou(prob > 0.49, a) > 0.75


@pytest.mark.parametrize("method", METHODS)
def test_bad_input(method, rng):
    img, _, _ = _scene(rng)
    pred = create_predictor(method)
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict([Click(1, 1, True)])
    with pytest.raises(ValueError, match="image"):
        pred.set_image(img.astype(np.float32))
    with pytest.raises(ValueError, match="image"):
        pred.set_image(img[..., 0])
    pred.set_image(img)
    with pytest.raises(ValueError, match=r"clicks\[1\]"):
        pred.predict([Click(1, 1, True), Click(64, 3, False)])
    with pytest.raises(TypeError, match="clicks"):
        pred.predict(Click(1, 1, True))  # a bare click, not a list
    with pytest.raises(ValueError, match="border"):
        create_predictor(method, border="nowhere")
    with pytest.raises(TypeError):
        create_predictor(method, not_an_option=1)


def test_option_validation():
    with pytest.raises(ValueError, match="beta"):
        RandomWalkerPredictor(beta=0)
    with pytest.raises(ValueError, match="mode"):
        RandomWalkerPredictor(mode="magic")
    with pytest.raises(ValueError, match="blur"):
        RandomWalkerPredictor(blur=-1)
    with pytest.raises(ValueError, match="iterations"):
        GrabCutPredictor(iterations=0)
    with pytest.raises(ValueError, match="init"):
        GrabCutPredictor(init="circle")
    with pytest.raises(ValueError, match="eps"):
        GeodesicPredictor(eps=0)
    with pytest.raises(ValueError, match="r > 0"):
        GeodesicPredictor(r=0)


def test_geodesic_likelihood_weights_change_the_map(rng):
    img, a, _ = _scene(rng)
    maps = []
    for q in (0.0, 1.0):
        pred = GeodesicPredictor(q=q)
        pred.set_image(img)
        maps.append(pred.predict([Click(21, 32, True), Click(48, 32, False)]))
    assert not np.array_equal(maps[0], maps[1])
    assert all(_iou(m > 0.49, a) > 0.8 for m in maps)


def test_seed_map_disks_and_precedence():
    s = seed_map([Click(10, 10, True), Click(13, 10, False)], (32, 32), radius=3)
    assert s[10, 10] == FG and s[10, 13] == BG  # each click keeps its own pixel
    assert s[10, 12] == BG  # the later (negative) disk wins where they overlap
    assert s[10, 7] == FG and s[10, 6] == 0 and s[14, 10] == 0
    assert (s == FG).sum() + (s == BG).sum() < 2 * 29  # two radius-3 disks (29 px each) overlapping
    # scaled: the click lands on the corresponding pixel centre of a half-size map
    half = seed_map([Click(21, 9, True)], (16, 16), radius=0, scale=0.5)
    assert np.argwhere(half == FG).tolist() == [[4, 10]]


def test_border_band():
    b = border_band((10, 12), 2)
    assert b[:2].all() and b[:, -2:].all() and not b[2:-2, 2:-2].any()
    assert border_band((3, 3), 5).all()


def test_colour_likelihood_separates_seed_colours():
    bins = np.array([[0, 0, 7, 7], [0, 0, 7, 7]])
    fg = np.zeros((2, 4), bool)
    fg[0, 0] = True
    bg = np.zeros((2, 4), bool)
    bg[0, 3] = True
    p = colour_likelihood(bins, fg, bg, n_bins=2, sigma=0)
    np.testing.assert_allclose(p, [[1, 1, 0, 0], [1, 1, 0, 0]])


def test_grabcut_trimap_frame_and_box(rng):
    img, _, _ = _scene(rng)
    g = GrabCutPredictor(init="box", box_pad=0.1, max_side=None)
    g.set_image(img)
    clicks = [Click(20, 30, True)]
    tri = g.trimap(clicks, seed_map(clicks, (64, 64), 5))
    assert tri[30, 20] == 1 and tri[0, 0] == 0  # definite FG at the click, definite BG on the border
    assert tri[30, 20 + 10] == 3 and tri[30, 20 + 20] == 2  # probable FG in the grown box only


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_real_grabcut_image_under_the_protocol(method, data_root):
    """Three clicks of the exact clicker on one real GrabCut image: valid maps and clearly better than empty."""
    import cv2

    from iis.core.loop import run_instance
    from iis.core.protocol import get_protocol

    bgr = cv2.imread(str(data_root / "GrabCut" / "data_GT" / "llama.bmp"))
    raw = cv2.imread(str(data_root / "GrabCut" / "boundary_GT" / "llama.bmp"), cv2.IMREAD_GRAYSCALE)
    gt = np.where(raw == 128, -1, raw > 128).astype(np.int8)
    proto = get_protocol("plain").with_options(max_clicks=3, target_iou=1.01)
    res = run_instance(create_predictor(method), bgr[..., ::-1].copy(), gt, proto, "llama")
    assert len(res.ious) == 3 and res.clicks[0].positive
    assert max(res.ious) > 0.5
