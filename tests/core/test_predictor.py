import numpy as np
import pytest
import torch

from iis.core.loop import run_instance
from iis.core.predictor import ModelPredictor, ZoomState, _expand_box
from iis.core.protocol import EvalProtocol, ZoomIn, get_protocol
from iis.core.types import Click
from iis.models.base import disk_maps


class DiskModel(torch.nn.Module):
    """Logits +10 inside radius-r disks of positive clicks, -10 elsewhere; records its input sizes."""

    def __init__(self, r=8.0):
        super().__init__()
        self.r = r
        self.sizes = []
        self.clicks = []

    def forward(self, image, clicks, prev_mask=None):
        self.sizes.append(tuple(image.shape[-2:]))
        self.clicks.append(clicks.clone())
        return 20 * disk_maps(clicks, image.shape[-2:], self.r)[:, :1] - 10


class RampModel(torch.nn.Module):
    def forward(self, image, clicks, prev_mask=None):
        w = image.shape[-1]
        return torch.arange(w, dtype=torch.float32).expand(image.shape[0], 1, image.shape[-2], w).clone()


def _image(h=120, w=200):
    return np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_flip_averages_logits_before_sigmoid():
    proto = EvalProtocol(name="t", flip=True, zoom_in=None)
    p = ModelPredictor(RampModel(), proto)
    p.set_image(_image(10, 7))
    out = p.predict([Click(3, 3, True)])
    np.testing.assert_allclose(out, 1 / (1 + np.exp(-3.0)), rtol=1e-6)  # (W-1)/2 = 3 everywhere


def test_simpleclick_squashes_whole_image_on_first_click():
    m = DiskModel()
    p = ModelPredictor(m, get_protocol("simpleclick"))
    p.set_image(_image())
    p.predict([Click(100, 60, True)])
    assert m.sizes == [(448, 448)] and m.clicks[0].shape[0] == 2  # one call, flip doubles the batch
    x, y = m.clicks[0][0, 0, :2].tolist()
    assert x == pytest.approx(448 * 100 / 200) and y == pytest.approx(448 * 60 / 120)
    # flipped branch mirrors x in the 448-wide input
    assert m.clicks[0][1, 0, 0].item() == pytest.approx(447 - 448 * 100 / 200)


def test_ritm_zoom_skips_first_click_then_crops_with_longer_side_400():
    m = DiskModel(r=10)
    p = ModelPredictor(m, get_protocol("ritm").with_options(flip=False))
    img = _image(300, 500)
    p.set_image(img)
    prob1 = p.predict([Click(250, 150, True)])
    assert m.sizes[0] == (300, 500)
    assert prob1[150, 250] > 0.5 and prob1[0, 0] < 0.5
    p.predict([Click(250, 150, True), Click(20, 20, False)])
    # ROI: disk box (21x21) x1.4 -> min crop 200 -> 201x201 box -> resized to 400x400
    assert m.sizes[1] == (400, 400)


def test_zoom_roi_rules():
    z = ZoomState(ZoomIn(skip_clicks=-1, target_size=(64, 64)))
    x = torch.zeros(1, 4, 100, 100)
    crop, clicks = z.transform(x, [Click(50, 50, True)])
    assert z.roi == (0, 99, 0, 99) and crop.shape[-2:] == (64, 64)  # no prev map: whole image
    z.prev_probs = np.zeros((100, 100), np.float32)
    z.prev_probs[40:60, 40:60] = 1
    z.transform(x, [Click(50, 50, True)])
    # box IoU of the new ROI with the whole image is < 0.5, so the ROI is replaced
    assert z.roi == _clamp(_expand_box((40, 59, 40, 59), 1.4, 200), 100)


def _clamp(box, n):
    return tuple(min(max(v, 0), n - 1) for v in box)


def test_expand_box_uses_half_to_even_rounding():
    assert _expand_box((0, 9, 0, 9), 1.0, None) == (round(-0.5), round(9.5), round(-0.5), round(9.5))
    assert _expand_box((0, 9, 0, 9), 1.0, None) == (0, 10, 0, 10)


def test_paste_back_zero_canvas_outside_roi():
    m = DiskModel(r=6)
    proto = EvalProtocol(name="t", flip=False, zoom_in=ZoomIn(skip_clicks=-1, target_size=(96, 96), min_crop_size=40))
    p = ModelPredictor(m, proto)
    p.set_image(_image(200, 200))
    p.predict([Click(100, 100, True)])
    out = p.predict([Click(100, 100, True)])
    roi = p._zoom.roi
    assert roi != (0, 199, 0, 199)
    outside = np.ones_like(out, bool)
    outside[roi[0]:roi[1] + 1, roi[2]:roi[3] + 1] = False
    assert out[outside].max() == 0.0


def test_run_instance_early_stop_and_budget():
    gt = np.zeros((60, 80), np.int8)
    yy, xx = np.mgrid[:60, :80]
    gt[(yy - 30) ** 2 + (xx - 40) ** 2 <= 64] = 1  # radius-8 disk, DiskModel predicts it exactly

    proto = EvalProtocol(name="t", flip=False, zoom_in=None)
    res = run_instance(ModelPredictor(DiskModel(8), proto), _image(60, 80), gt, proto)
    assert res.ious == [1.0] and res.clicks == [Click(40, 30, True)]
    never = EvalProtocol(name="t", flip=False, zoom_in=None, target_iou=1.01, max_clicks=5)
    res = run_instance(ModelPredictor(DiskModel(3), never), _image(60, 80), gt, never)
    assert len(res.ious) == 5 and len(res.clicks) == 5
    assert len({(c.x, c.y) for c in res.clicks}) == 5  # no pixel clicked twice


def test_protocol_roundtrip_and_dataset_override():
    p = get_protocol("simpleclick")
    assert p.for_dataset("DAVIS").zoom_in.target_size == (672, 672)
    assert p.for_dataset("grabcut").zoom_in.target_size == (448, 448)
    assert EvalProtocol.from_dict(p.to_dict()) == p
    import json

    assert EvalProtocol.from_dict(json.loads(json.dumps(p.to_dict()))) == p
    assert get_protocol("gpcis").for_dataset("sbd").infer_size == 256
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("nope")


def test_importing_iis_makes_cpu_gemm_rows_independent_of_the_row_count():
    """On MKL's AVX2 code path (forced here, as on AMD CPUs) a Linear's row results depend on how many rows share
    the call unless iis's MKL_CBWR setting (made at import, before any MKL call) is in force; batched
    evaluation's CPU exactness (docs/protocol.md §A.12) relies on it."""
    import os
    import subprocess
    import sys

    probe = ("import sys, torch\n"
             "if sys.argv[1] == '1': import iis\n"
             "torch.set_num_threads(1); torch.manual_seed(0)\n"
             "lin = torch.nn.Linear(128, 32); x = torch.randn(16 * 46, 128)\n"
             "a = lin(x[:92])\n"
             "print(sum(not torch.equal(a, lin(x[:46 * m])[:92]) for m in (3, 8, 16)))\n")
    env = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    env.update(MKL_ENABLE_INSTRUCTIONS="AVX2")
    with_iis, without = (subprocess.run([sys.executable, "-c", probe, flag], env=env, capture_output=True, text=True,
                                        check=True).stdout.strip() for flag in ("1", "0"))
    assert with_iis == "0", f"{with_iis} of 3 row counts changed the first rows' results"
    # the probe is sensitive where MKL has row-count-dependent kernels (it is on the machines this was written on)
    print(f"without the setting: {without} of 3 row counts changed them")
