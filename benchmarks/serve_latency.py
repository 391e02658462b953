"""Per-request latency of ``iis-serve`` on real GrabCut images, side by side with the in-process API.

    python benchmarks/serve_latency.py --data-root ../shared/data --method random_walker --images 3 --clicks 4

For each image the protocol's clicker chooses ``--clicks`` clicks (recorded once from ``run_instance``);
request k sends the first k (stateless, as CVAT and Label Studio do). Every request goes to the three
endpoints in turn (``/predict``, ``/cvat``, ``/labelstudio/predict``) of a server started for real
(``python -m iis.cli.serve --port 0`` in a subprocess, HTTP over 127.0.0.1), two of them: with the
image-state cache off (``--cache-size 0``) and on (the default LRU), requests interleaved so that both see
the same machine load. Reported per endpoint: the client's wall time
per request (JSON + base64 upload, decode, predict, encode, answer), the server's own ``latency_ms``
(body parsed to answer built), and ``Segmenter.predict`` called in-process on the same image and clicks
with the same cache setting (the floor: what the server adds is the difference). /cvat answers the mask
as an H x W JSON list and /labelstudio as brush RLE; /predict as PNG + polygons + COCO RLE.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import http.client
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import iis  # noqa: E402
from iis.core.loop import run_instance  # noqa: E402
from iis.data import get_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LS_CONFIG = ('<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
             '<Label value="Object"/></BrushLabels><KeyPointLabels name="kp" toName="image" smart="true">'
             '<Label value="Object"/></KeyPointLabels></View>')


def _png_b64(image: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _clicks(seg, sample, n):
    proto = dataclasses.replace(seg.protocol, max_clicks=n, target_iou=1.01)
    if seg.is_model:
        from iis.core.predictor import ModelPredictor

        pred = ModelPredictor(seg._obj, proto, seg.device)
    else:
        pred = seg.session(sample.image)._p
    return run_instance(pred, sample.image, sample.gt, proto).clicks


def _payloads(b64: str, clicks, w: int, h: int) -> dict[str, dict]:
    pos = [[c.x, c.y] for c in clicks if c.positive]
    neg = [[c.x, c.y] for c in clicks if not c.positive]
    ctx = [{"type": "keypointlabels", "original_width": w, "original_height": h, "is_positive": bool(c.positive),
            "value": {"x": 100.0 * c.x / w, "y": 100.0 * c.y / h, "keypointlabels": ["Object"]}} for c in clicks]
    return {"/predict": {"image": b64, "clicks": [[c.x, c.y, bool(c.positive)] for c in clicks]},
            "/cvat": {"image": b64, "pos_points": pos, "neg_points": neg, "obj_bbox": None},
            "/labelstudio/predict": {"tasks": [{"data": {"image": "data:image/png;base64," + b64}}],
                                     "label_config": LS_CONFIG, "params": {"context": {"result": ctx}}}}


class _Server:
    def __init__(self, args: list[str]):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "iis.cli.serve", *args, "--port", "0",
                                      "--log-level", "warning"], stdout=subprocess.PIPE, env=env, cwd=str(ROOT))
        line: list[bytes] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(300)
        if not line or b"serving" not in line[0]:
            self.proc.kill()
            raise SystemExit(f"iis-serve did not start: {line!r}")
        self.port = int(line[0].decode().split("127.0.0.1:", 1)[1].split("/", 1)[0])

    def post(self, path: str, payload: dict) -> tuple[float, dict]:
        body = json.dumps(payload).encode()
        t0 = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        out = json.loads(resp.read())
        ms = 1e3 * (time.perf_counter() - t0)
        conn.close()
        if resp.status != 200:
            raise SystemExit(f"{path}: HTTP {resp.status}: {out}")
        return ms, out

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=os.environ.get("IIS_DATA_ROOT", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--method", default="random_walker")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--clicks", type=int, default=4)
    args = ap.parse_args(argv)

    ds = get_dataset("grabcut", args.data_root)
    samples = [ds[i] for i in range(min(args.images, len(ds)))]
    load_kw = {"weights": args.weights} if args.weights else {}
    probe = iis.load(args.method, **load_kw)
    jobs = []
    for s in samples:
        clicks = _clicks(probe, s, args.clicks)
        h, w = s.image.shape[:2]
        b64 = _png_b64(s.image)
        for k in range(1, len(clicks) + 1):
            jobs.append((s, clicks[:k], _payloads(b64, clicks[:k], w, h)))
    endpoints = ["/predict", "/cvat", "/labelstudio/predict"]
    configs = (("no image cache", 0), ("LRU (default)", 8))
    extra = ["--weights", args.weights] if args.weights else []
    segs = {label: iis.load(args.method, cache_size=cache, **load_kw) for label, cache in configs}
    servers = {label: _Server(["--method", args.method, "--cache-size", str(cache), *extra]) for label, cache in configs}
    api = {label: [] for label, _ in configs}
    res = {(label, e): [] for label, _ in configs for e in endpoints}
    try:  # interleaved: both configurations see the same machine load
        for s, clicks, payloads in jobs:
            for label, _ in configs:
                t0 = time.perf_counter()
                segs[label].predict(s.image, clicks)
                api[label].append(1e3 * (time.perf_counter() - t0))
                for e in endpoints:
                    ms, out = servers[label].post(e, payloads[e])
                    res[label, e].append((ms, out.get("latency_ms", float("nan"))))
    finally:
        for server in servers.values():
            server.stop()
    rows = []
    for label, _ in configs:
        for e in endpoints:
            client = [a for a, _ in res[label, e]]
            srv = [b for _, b in res[label, e]]
            rows.append((label, e, len(client), statistics.mean(client), statistics.median(client),
                         statistics.mean(srv), statistics.mean(api[label])))
    H, W = samples[0].image.shape[:2]
    print(f"{args.method}: {len(jobs)} requests per endpoint ({len(samples)} GrabCut images, k = 1..{args.clicks} "
          f"clicks; first image {W}x{H}); ms per request")
    print("| cache | endpoint | requests | client mean | client median | server latency_ms | in-process API |")
    print("|---|---|---|---|---|---|---|")
    for label, e, n, mean, med, srv, api in rows:
        print(f"| {label} | `{e}` | {n} | {mean:.0f} | {med:.0f} | {srv:.0f} | {api:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
