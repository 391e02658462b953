"""The server for real: ``python -m iis.cli.serve`` on 127.0.0.1 (random_walker) and uvicorn in a thread
(``simpleclick_vit_test``), driven with HTTP requests; real GrabCut images; answers checked against the
API called in-process and decoded with independent decoders."""

from __future__ import annotations

import base64
import io
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
from iis_serve_helpers import (Http, ServerProcess, decode_png_b64, interior_point, jpeg_bytes, ls_brush_mask,
                               png_b64)
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
pytest.importorskip("uvicorn", reason="the serve extra (fastapi, uvicorn) is not installed")

import iis  # noqa: E402

MAX_CLICKS, MAX_PIXELS, MAX_BODY_MB = 20, 1_000_000, 4

LS_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Object" background="#3d8bfd"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="image" smart="true">
    <Label value="Object" smart="true" background="#2ecc71" showInline="true"/>
  </KeyPointLabels>
</View>"""


@pytest.fixture(scope="module")
def ls_root(tmp_path_factory):
    return tmp_path_factory.mktemp("ls_root")


@pytest.fixture(scope="module")
def rw(tmp_path_factory, ls_root):
    """random_walker behind the real console entry point, small limits so the refusals are cheap to test."""
    log = tmp_path_factory.mktemp("rw_server") / "server.log"
    server = ServerProcess(["--method", "random_walker", "--max-clicks", str(MAX_CLICKS), "--max-image-pixels",
                            str(MAX_PIXELS), "--max-body-mb", str(MAX_BODY_MB), "--ls-root", str(ls_root),
                            "--log-level", "warning"], log)
    yield server.http
    server.stop()


@pytest.fixture(scope="module")
def rw_api():
    return iis.load("random_walker")


class Flaky:
    """A Segmenter that fails on 77-pixel-wide images (a method crashing on one request)."""

    def __init__(self, seg):
        self._seg = seg

    def __getattr__(self, name):
        return getattr(self._seg, name)

    def predict(self, image, clicks, init_mask=None):
        if image.shape[1] == 77:
            raise RuntimeError("injected failure\nsecond line")
        return self._seg.predict(image, clicks, init_mask=init_mask)


@pytest.fixture(scope="module")
def model():
    """simpleclick_vit_test (random weights) in a uvicorn thread of this process."""
    from iis.serve import ServeConfig
    from iis.serve.app import BackgroundServer, create_app

    seg = iis.load("simpleclick_vit_test")
    with BackgroundServer(create_app(Flaky(seg), ServeConfig(max_clicks=MAX_CLICKS))) as server:
        yield Http(server.url), seg


def _clicks(gt):
    """A positive click deep inside the object and a negative one deep in the background."""
    return [(*interior_point(gt == 1), True), (*interior_point(gt == 0), False)]


def _assert_one_line_error(status, body, expected_status, fragment):
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert "\n" not in body["error"] and fragment.lower() in body["error"].lower(), body["error"]


# ------------------------------------------------------------------------------------------------ /predict
def test_health(rw):
    status, h = rw.get("/health")
    assert status == 200 and h["status"] == "ok" and h["method"] == "random_walker" and not h["is_model"]
    assert h["limits"]["max_clicks"] == MAX_CLICKS and h["limits"]["max_image_pixels"] == MAX_PIXELS


def test_predict_on_grabcut(rw, rw_api, grabcut_samples):
    from pycocotools import mask as mask_utils

    s = grabcut_samples[0]
    clicks = _clicks(s.gt)
    status, out = rw.post("/predict", {"image": png_b64(s.image), "clicks": [list(c) for c in clicks],
                                       "return_prob": True})
    assert status == 200, out
    H, W = s.gt.shape
    mask = decode_png_b64(out["mask"])
    assert mask.shape == (H, W) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
    m = mask > 0
    (px, py, _), (nx, ny, _) = clicks
    assert m[py, px] and not m[ny, nx]  # covers the positive click, not the negative one
    # the server is a thin adapter: exactly the API's answer for the same image and clicks
    ref = rw_api.predict(s.image, [iis.Click(*c) for c in clicks])
    assert np.array_equal(m, ref.mask)
    assert out["area"] == ref.area and out["threshold"] == ref.threshold and out["clicks"] == 2
    assert out["width"] == W and out["height"] == H and out["latency_ms"] > 0
    rle = dict(out["rle"], counts=out["rle"]["counts"].encode())
    assert np.array_equal(mask_utils.decode(rle).astype(bool), m)
    filled = np.zeros((H, W), np.uint8)
    for poly in out["polygons"]:
        cv2.fillPoly(filled, [np.array(poly["exterior"], np.int32)], 1)
        for hole in poly["holes"]:
            cv2.fillPoly(filled, [np.array(hole, np.int32)], 0)
    assert (filled.astype(bool) == m).mean() > 0.99  # polygons give the mask back up to simplification
    prob = decode_png_b64(out["prob"])
    assert prob.shape == (H, W) and np.array_equal(prob, np.rint(ref.prob * 255).astype(np.uint8))


def test_predict_jpeg_mask_and_threshold(rw, rw_api, grabcut_samples):
    s = grabcut_samples[1]
    jpg = jpeg_bytes(s.image)
    decoded = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
    clicks = _clicks(s.gt)[:1]
    init = np.zeros(s.gt.shape, np.uint8)
    init[s.gt == 1] = 255
    payload = {"image": "data:image/jpeg;base64," + base64.b64encode(jpg).decode(), "clicks": [list(clicks[0])],
               "mask": png_b64(init), "threshold": 0.3}
    status, out = rw.post("/predict", payload)
    assert status == 200, out
    ref = rw_api.predict(decoded, [iis.Click(*clicks[0])], init_mask=init > 0)
    assert np.array_equal(decode_png_b64(out["mask"]) > 0, ref.prob > 0.3) and out["threshold"] == 0.3
    status, empty = rw.post("/predict", {"image": png_b64(s.image), "clicks": []})
    assert status == 200 and empty["area"] == 0 and empty["polygons"] == []


# ------------------------------------------------------------------------------------------------ CVAT
def test_cvat_payload(rw, rw_api, grabcut_samples):
    s = grabcut_samples[0]
    (px, py, _), (nx, ny, _) = _clicks(s.gt)
    jpg = jpeg_bytes(s.image, 95)  # CVAT sends its frames as JPEG (or PNG for original quality)
    decoded = np.asarray(Image.open(io.BytesIO(jpg)).convert("RGB"))
    payload = {"image": base64.b64encode(jpg).decode(), "pos_points": [[px + 0.5, py + 0.25]],
               "neg_points": [[nx, ny]], "obj_bbox": None}  # what the lambda manager sends, floats included
    status, out = rw.post("/cvat", payload)
    assert status == 200, out
    mask = np.array(out["mask"])
    assert mask.shape == s.gt.shape and set(np.unique(mask)) <= {0, 1} and mask[py, px] == 1 and mask[ny, nx] == 0
    ref = rw_api.predict(decoded, [iis.Click(px + 0.5, py + 0.25, True), iis.Click(nx, ny, False)])
    assert np.array_equal(mask.astype(bool), ref.mask)
    poly = np.array(out["points"], np.float32)
    assert poly.ndim == 2 and poly.shape[1] == 2 and len(poly) >= 3
    assert cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(px), float(py)), False) >= 0
    # threshold (CVAT sends it when set) re-thresholds; stateless: the same call gives the same answer
    status, again = rw.post("/cvat", payload)
    assert status == 200 and again["mask"] == out["mask"] and again["points"] == out["points"]
    status, thr = rw.post("/cvat", dict(payload, threshold=0.9))
    assert status == 200 and np.array_equal(np.array(thr["mask"]).astype(bool), ref.prob > 0.9)


# ------------------------------------------------------------------------------------------------ Label Studio
def _ls_request(image_ref, points, width, height):
    ctx = [{"original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100.0 * x / width, "y": 100.0 * y / height, "width": 0.5, "keypointlabels": ["Object"]},
            "is_positive": pos, "id": f"k{i}", "from_name": "kp", "to_name": "image", "type": "keypointlabels",
            "origin": "manual"} for i, (x, y, pos) in enumerate(points)]
    return {"tasks": [{"id": 1, "data": {"image": image_ref}}], "model_version": None, "project": "1.1700000000",
            "label_config": LS_CONFIG, "params": {"login": None, "password": None, "context": {"result": ctx}}}


def test_labelstudio_contract(rw, rw_api, grabcut_samples, ls_root):
    s = grabcut_samples[0]
    H, W = s.gt.shape
    status, h = rw.get("/labelstudio/health")
    assert status == 200 and h["status"] == "UP"
    status, setup = rw.post("/labelstudio/setup", {"project": "1.1700000000", "schema": LS_CONFIG,
                                                    "hostname": "http://localhost:8080", "access_token": "x"})
    assert status == 200 and setup["model_version"] == "iis-random_walker"
    status, bad = rw.post("/labelstudio/setup", {"project": "1", "schema": "<View><Image name='i' value='$i'/></View>"})
    _assert_one_line_error(status, bad, 422, "BrushLabels")

    pts = _clicks(s.gt)
    req = _ls_request("data:image/png;base64," + png_b64(s.image), pts, W, H)
    status, out = rw.post("/labelstudio/predict", req)
    assert status == 200, out
    (pred,) = out["results"]
    (region,) = pred["result"]
    assert region["type"] == "brushlabels" and region["from_name"] == "tag" and region["to_name"] == "image"
    assert region["original_width"] == W and region["original_height"] == H
    assert region["value"]["format"] == "rle" and region["value"]["brushlabels"] == ["Object"]
    m = ls_brush_mask(region["value"]["rle"], W, H)
    ref = rw_api.predict(s.image, iis.clicks_from_percent(
        [{"x": 100.0 * x / W, "y": 100.0 * y / H, "positive": p} for x, y, p in pts], W, H))
    assert np.array_equal(m, ref.mask) and m[pts[0][1], pts[0][0]] and not m[pts[1][1], pts[1][0]]
    assert pred["model_version"] == "iis-random_walker"

    # a local-files URL and an upload URL resolve under --ls-root
    Image.fromarray(s.image).save(ls_root / "img.png")
    (ls_root / "media" / "upload" / "3").mkdir(parents=True, exist_ok=True)
    Image.fromarray(s.image).save(ls_root / "media" / "upload" / "3" / "a b.png")
    for ref_url in ("/data/local-files/?d=img.png", "/data/upload/3/a%20b.png", "img.png",
                    "http://localhost:8080/data/local-files/?d=img.png"):  # Label Studio's host: path only
        status, out2 = rw.post("/labelstudio/predict", _ls_request(ref_url, pts, W, H))
        assert status == 200, (ref_url, out2)
        assert out2["results"][0]["result"][0]["value"]["rle"] == region["value"]["rle"]
    # no keypoints: a non-interactive call gets no prediction
    status, none = rw.post("/labelstudio/predict", dict(req, params={"context": None}))
    assert status == 200 and none["results"] == []
    # refused: URLs (nothing is fetched), paths outside the root, missing files
    for ref_url, frag in (("http://example.com/a.jpg", "fetches nothing"), ("s3://bucket/a.jpg", "fetches nothing"),
                          ("/data/local-files/?d=../../etc/passwd", "outside"), ("../x.png", "outside"),
                          ("nope.png", "no such file")):
        status, err = rw.post("/labelstudio/predict", _ls_request(ref_url, pts, W, H))
        _assert_one_line_error(status, err, 422, frag)


# ------------------------------------------------------------------------------------------------ concurrency
def test_parallel_requests_equal_sequential(rw):
    from iis.serve.sample import make_sample

    image, _, (x, y) = make_sample()
    image, x, y = image[::2, ::2].copy(), x // 2, y // 2  # a quarter of the pixels: the test stays fast
    b64 = png_b64(image)
    jobs = [("/predict", {"image": b64, "clicks": [[x, y, True]]}),
            ("/cvat", {"image": b64, "pos_points": [[x, y]], "neg_points": [[5, 5]]}),
            ("/predict", {"image": b64, "clicks": [[x, y, True], [10, 10, False]]})]
    key = {"/predict": lambda o: (o["mask"], json.dumps(o["rle"])), "/cvat": lambda o: json.dumps(o["mask"])}
    before = rw.get("/health")[1]["cache"]
    sequential = []
    for path, body in jobs:
        status, out = rw.post(path, body)
        assert status == 200, out
        sequential.append(key[path](out))
    work = [jobs[i % len(jobs)] for i in range(8)]
    with ThreadPoolExecutor(8) as ex:
        answers = list(ex.map(lambda job: rw.post(*job), work))
    for i, (status, out) in enumerate(answers):
        assert status == 200, out
        assert key[work[i][0]](out) == sequential[i % len(jobs)], f"request {i} differs from its sequential twin"
    after = rw.get("/health")[1]["cache"]
    assert after["hits"] - before["hits"] >= 8 + 2  # repeated images reuse the prepared image state
    assert after["size"] <= after["maxsize"] and after["nbytes"] <= after["max_bytes"]


# ------------------------------------------------------------------------------------------------ bad input
def _tiny():
    return png_b64(np.full((40, 50, 3), 128, np.uint8))


BAD = [
    ("wrong content type", dict(body=b'{"image": "", "clicks": []}', headers={"Content-Type": "text/plain"}), 415,
     "expected application/json"),
    ("no content type", dict(body=b"{}"), 415, "content-type"),
    ("not JSON", dict(body=b"{image:", headers={"Content-Type": "application/json"}), 400, "not valid JSON"),
    ("empty body", dict(body=b"", headers={"Content-Type": "application/json"}), 400, "empty"),
    ("JSON array", dict(json_body=[1, 2]), 422, "expected a JSON object"),
    ("missing image", dict(json_body={"clicks": []}), 422, "missing field 'image'"),
    ("missing clicks", dict(json_body={"image": _tiny()}), 422, "missing field 'clicks'"),
    ("unknown field", dict(json_body={"image": _tiny(), "clicks": [], "click": 1}), 422, "unknown fields"),
    ("malformed base64", dict(json_body={"image": "iVBOR%%w0K", "clicks": []}), 400, "not valid base64"),
    ("image not a string", dict(json_body={"image": 5, "clicks": []}), 422, "expected a base64 string"),
    ("not an image", dict(json_body={"image": base64.b64encode(b"hello world").decode(), "clicks": []}), 400,
     "not an image"),
    ("click outside", dict(json_body={"image": _tiny(), "clicks": [[50, 10, True]]}), 422, "outside the 50x40"),
    ("negative click", dict(json_body={"image": _tiny(), "clicks": [[-1, 10, True]]}), 422, "outside"),
    ("click not numbers", dict(json_body={"image": _tiny(), "clicks": [["a", 1, True]]}), 422, "expected a number"),
    ("click malformed", dict(json_body={"image": _tiny(), "clicks": [[1]]}), 422, "expected [x, y, positive]"),
    ("clicks not a list", dict(json_body={"image": _tiny(), "clicks": "1,2"}), 422, "expected a list"),
    ("too many clicks", dict(json_body={"image": _tiny(), "clicks": [[1, 1, True]] * (MAX_CLICKS + 1)}), 422,
     f"the limit is {MAX_CLICKS}"),
    ("threshold out of range", dict(json_body={"image": _tiny(), "clicks": [], "threshold": 1.5}), 422, "[0, 1)"),
    ("mask of another size", dict(json_body={"image": _tiny(), "clicks": [], "mask": png_b64(np.zeros((4, 4), np.uint8))}),
     422, "expected the image's 50x40"),
    ("GET on a POST endpoint", dict(method="GET"), 405, "method not allowed"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_one_line_4xx(rw, case):
    _, kw, expected, fragment = case
    kw = dict(kw)
    method = kw.pop("method", "POST")
    status, body = rw.request(method, "/predict", **kw)
    _assert_one_line_error(status, body, expected, fragment)


def test_bad_input_limits_and_other_endpoints(rw):
    big = np.zeros((1000, 1001, 3), np.uint8)  # 1001000 pixels > 1000000, a small PNG
    status, body = rw.post("/predict", {"image": png_b64(big), "clicks": []})
    _assert_one_line_error(status, body, 413, "the limit is 1000000")
    huge = b'{"image": "' + b"A" * (MAX_BODY_MB * 1024 * 1024 + 10) + b'", "clicks": []}'
    status, body = rw.request("POST", "/predict", body=huge, headers={"Content-Type": "application/json"})
    _assert_one_line_error(status, body, 413, "request body")
    for payload, frag in (({"image": _tiny(), "pos_points": [], "neg_points": []}, "at least 1 positive"),
                          ({"image": _tiny(), "neg_points": []}, "missing field 'pos_points'"),
                          ({"image": _tiny(), "pos_points": [[60, 1]], "neg_points": []}, "outside the 50x40"),
                          ({"image": _tiny(), "pos_points": [[1, 1, 1]]}, "expected [x, y]")):
        status, body = rw.post("/cvat", payload)
        _assert_one_line_error(status, body, 422, frag)
    status, body = rw.post("/labelstudio/predict", {"tasks": []})
    _assert_one_line_error(status, body, 422, "tasks")
    status, body = rw.get("/nope")
    _assert_one_line_error(status, body, 404, "no such endpoint")
    status, h = rw.get("/health")  # and the server is still serving
    assert status == 200 and h["status"] == "ok"


# ------------------------------------------------------------------------------------------------ a model
def test_model_server_formats(model, grabcut_samples):
    http, seg = model
    s = grabcut_samples[0]
    H, W = s.gt.shape
    pts = _clicks(s.gt)
    status, out = http.post("/predict", {"image": png_b64(s.image), "clicks": [list(c) for c in pts]})
    assert status == 200, out
    # random weights: the mask's content means nothing, its format and the replay do
    mask = decode_png_b64(out["mask"])
    assert mask.shape == (H, W) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, seg.predict(s.image, [iis.Click(*c) for c in pts]).mask)
    status, cv = http.post("/cvat", {"image": png_b64(s.image), "pos_points": [list(pts[0][:2])], "neg_points": []})
    assert status == 200 and np.array(cv["mask"]).shape == (H, W) and isinstance(cv["points"], list)
    status, ls = http.post("/labelstudio/predict", _ls_request("data:image/png;base64," + png_b64(s.image), pts, W, H))
    assert status == 200
    assert ls_brush_mask(ls["results"][0]["result"][0]["value"]["rle"], W, H).shape == (H, W)


def test_method_failure_is_500_and_the_server_keeps_serving(model, caplog):
    http, _ = model
    img77 = png_b64(np.full((30, 77, 3), 90, np.uint8))
    with caplog.at_level("ERROR", logger="iis.serve"):
        status, body = http.post("/predict", {"image": img77, "clicks": [[3, 3, True]]})
    _assert_one_line_error(status, body, 500, "injected failure")
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)  # logged with its traceback
    status, body = http.post("/cvat", {"image": img77, "pos_points": [[3, 3]], "neg_points": []})
    assert status == 500
    status, ok = http.post("/predict", {"image": png_b64(np.full((30, 78, 3), 90, np.uint8)), "clicks": [[3, 3, True]]})
    assert status == 200 and ok["width"] == 78


# ------------------------------------------------------------------------------------------------ the CLI
def test_cli_errors_are_one_line(capsys):
    from iis.cli.serve import main

    assert main(["--method", "random_walkr"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iis-serve: error: ") and "did you mean 'random_walker'" in err and "\n" not in err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        assert main(["--method", "random_walker", "--port", str(busy.getsockname()[1])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("iis-serve: error: ") and "cannot listen" in err and "\n" not in err
    assert main(["--method", "random_walker", "--ls-root", "/no/such/folder"]) == 2
    assert "ls_root" in capsys.readouterr().err
