"""The browser demo in a real headless Chromium (Debian's ``chromium``, driven by Playwright; skipped when
either is missing): load the page, click on the sample's object, wait for the overlay, check the mask the
page got covers the click, take a screenshot, add a negative click, undo, move the threshold slider and
upload an image."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import numpy as np
import pytest
from iis_serve_helpers import decode_png_b64
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra (fastapi, uvicorn) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")


@pytest.fixture(scope="module")
def server():
    import iis
    from iis.serve.app import BackgroundServer, create_app

    with BackgroundServer(create_app(iis.load("random_walker"))) as s:
        yield s


def test_demo_click_makes_a_mask(server, tmp_path):
    meta = json.loads(resources.files("iis.serve").joinpath("static", "sample.json").read_text())
    x, y = meta["target_click"]
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.goto(server.url + "/")
            page.wait_for_function("document.body.dataset.state === 'idle'", timeout=30_000)
            assert page.evaluate("[window.iisDemo.width, window.iisDemo.height]") == [meta["width"], meta["height"]]
            assert "random_walker" in page.inner_text("#method")

            box = page.locator("#overlay").bounding_box()
            sx, sy = box["width"] / meta["width"], box["height"] / meta["height"]
            page.mouse.click(box["x"] + (x + 0.5) * sx, box["y"] + (y + 0.5) * sy)
            page.wait_for_function("document.body.dataset.state === 'ready'", timeout=60_000)
            last = page.evaluate("window.iisDemo.last")
            mask = decode_png_b64(last["mask"]) > 0
            assert mask.shape == (meta["height"], meta["width"]) and mask[y, x]
            assert 0.5 * meta["target_area"] < mask.sum() < 2.0 * meta["target_area"]
            # the overlay is drawn: the pixel under the click is coloured, a far background corner is not
            alpha = page.evaluate(f"""(() => {{ const c = document.getElementById('overlay').getContext('2d');
                return [c.getImageData({x}, {y}, 1, 1).data[3], c.getImageData(2, 2, 1, 1).data[3]]; }})()""")
            assert alpha[0] > 0 and alpha[1] == 0
            assert page.get_attribute("#download", "href").startswith("data:image/png;base64,")
            page.screenshot(path=str(tmp_path / "demo.png"))

            # right click = a negative point; then undo takes it back (the mask of one click again)
            page.mouse.click(box["x"] + 4 * sx, box["y"] + 4 * sy, button="right")
            page.wait_for_function("document.body.dataset.state === 'ready' && window.iisDemo.clicks.length === 2",
                                   timeout=60_000)
            assert page.evaluate("window.iisDemo.clicks[1].positive") is False
            page.click("#undo")
            page.wait_for_function("document.body.dataset.state === 'ready' && window.iisDemo.clicks.length === 1",
                                   timeout=60_000)
            assert np.array_equal(decode_png_b64(page.evaluate("window.iisDemo.last.mask")) > 0, mask)

            # the threshold slider asks again on release; an uploaded image replaces the sample
            page.locator("#threshold").fill("0.8")
            page.wait_for_function("document.body.dataset.state === 'ready' && window.iisDemo.last.threshold === 0.8",
                                   timeout=60_000)
            Image.fromarray(np.full((48, 64, 3), 200, np.uint8)).save(tmp_path / "upload.png")
            page.set_input_files("#file", str(tmp_path / "upload.png"))
            page.wait_for_function("document.body.dataset.state === 'idle' && window.iisDemo.width === 64",
                                   timeout=30_000)
            assert page.evaluate("window.iisDemo.clicks.length") == 0
        finally:
            browser.close()
    assert not problems, problems
    print(f"screenshot: {tmp_path / 'demo.png'}")
