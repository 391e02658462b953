"""Helpers of the server tests: real HTTP (http.client) against servers on 127.0.0.1, a server subprocess,
image codecs, and a decoder of Label Studio's brush RLE written from the format description."""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


class Http:
    """A tiny client: ``request(method, path, json=..., body=..., headers=...) -> (status, parsed body)``."""

    def __init__(self, url: str):
        assert url.startswith("http://")
        host, port = url[len("http://"):].split(":")
        self.url, self.host, self.port = url, host, int(port)

    def request(self, method: str, path: str, json_body: Any = None, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 120.0) -> tuple[int, Any]:
        h = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type", "")
        finally:
            conn.close()
        if ctype.startswith("application/json"):
            return resp.status, json.loads(raw)
        return resp.status, raw

    def post(self, path: str, payload: Any, **kw) -> tuple[int, Any]:
        return self.request("POST", path, json_body=payload, **kw)

    def get(self, path: str, **kw) -> tuple[int, Any]:
        return self.request("GET", path, **kw)


def png_b64(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_png_b64(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of ``mask`` farthest from its boundary."""
    from scipy import ndimage

    dt = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dt)), dt.shape)
    return int(x), int(y)


class ServerProcess:
    """``python -m iis.cli.serve ... --port 0`` in a subprocess; the port is read from its first line."""

    def __init__(self, args: list[str], log_path: Path, timeout: float = 180.0):
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "iis.cli.serve", *args, "--host", "127.0.0.1",
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=self._log, env=env,
                                     cwd=str(ROOT))
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if not line or b"serving" not in line[0]:
            self.stop()
            raise RuntimeError(f"iis-serve did not start: {line!r}; log: {log_path.read_text()[-2000:]}")
        url = line[0].decode().split(" on ", 1)[1].split("/ ", 1)[0]
        self.http = Http(url)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self._log.close()


def wait_until(pred, timeout: float = 30.0, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return False


class _Bits:
    """MSB-first bit reader over bytes."""

    def __init__(self, data: list[int]):
        self.data, self.pos = bytes(data), 0

    def read(self, n: int) -> int:
        v = 0
        for _ in range(n):
            byte = self.data[self.pos >> 3]
            v = (v << 1) | ((byte >> (7 - (self.pos & 7))) & 1)
            self.pos += 1
        return v


def ls_rle_decode(rle: list[int]) -> tuple[np.ndarray, dict]:
    """Decode Label Studio's brush RLE (the rle-pack format: 32-bit count, 5-bit word size - 1, four 4-bit
    run-class widths - 1; then chunks of a repeat flag bit, a 2-bit class, (count - 1) in that class's width,
    and one word (repeat) or count words (literal)). Returns the values and the header."""
    b = _Bits(rle)
    n = b.read(32)
    word = b.read(5) + 1
    sizes = [b.read(4) + 1 for _ in range(4)]
    out = np.zeros(n, np.uint32)
    i = 0
    while i < n:
        repeat = b.read(1)
        cls = b.read(2)
        j = i + 1 + b.read(sizes[cls])
        if repeat:
            out[i:j] = b.read(word)
        else:
            for k in range(i, j):
                out[k] = b.read(word)
        i = j
    return out, {"n": n, "word_size": word, "rle_sizes": sizes, "bits_used": b.pos, "bytes": len(rle)}


def ls_brush_mask(rle: list[int], width: int, height: int) -> np.ndarray:
    """A brush region's mask: the decoded RGBA image's alpha channel > 0."""
    values, head = ls_rle_decode(rle)
    assert head["n"] == width * height * 4, head
    return values.reshape(height, width, 4)[..., 3] > 0
