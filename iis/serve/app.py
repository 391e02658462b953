"""The FastAPI application (``iis[serve]`` extra) and a background-thread runner.

Each POST endpoint reads the body itself (refusing a wrong content type with 415 and more than
``max_body_bytes`` with 413 before parsing), then parses, decodes and predicts in a worker thread, so
the event loop keeps serving (health, the demo's files, other requests decoding) while a prediction
runs; the Segmenter's lock serialises the predictor calls themselves. At most ``max_queue`` requests
are admitted at once (503 beyond). Every refusal is ``{"error": "<one line>"}``; an exception inside a
method is logged with its traceback and answered 500 with one line, and the server keeps serving.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from importlib import resources
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__
from ..api import Segmenter
from .config import ServeConfig
from .cvat import handle_cvat
from .errors import RequestError, bad_request, too_large, unsupported
from .labelstudio import handle_ls_predict, handle_ls_setup
from .predict import handle_predict

__all__ = ["create_app", "BackgroundServer", "STATIC_FILES"]

log = logging.getLogger("iis.serve")

# the demo's files (package data in iis/serve/static), served by name only: no path is ever joined
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8", "sample.png": "image/png",
                "sample.json": "application/json"}


def _static(name: str) -> bytes:
    return resources.files("iis.serve").joinpath("static", name).read_bytes()


def _error(status: int, msg: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(msg).split())}, status_code=status)


class _Admission:
    """Counts requests in flight; refuses beyond ``limit`` (503) instead of queueing without bound."""

    def __init__(self, limit: int):
        self.limit, self.n, self._lock = limit, 0, threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.n >= self.limit:
                return False
            self.n += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.n -= 1


def create_app(seg: Segmenter, cfg: ServeConfig | None = None) -> FastAPI:
    """The server for one loaded Segmenter (see :mod:`iis.serve` for the endpoints)."""
    cfg = cfg or ServeConfig()
    app = FastAPI(title="iis-serve", version=__version__, docs_url=None, redoc_url=None, openapi_url=None)
    admission = _Admission(cfg.max_queue)
    app.state.segmenter, app.state.config = seg, cfg

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 405:
            detail = f"{request.method} {request.url.path}: method not allowed"
        elif exc.status_code == 404:
            detail = f"{request.url.path}: no such endpoint (see GET /health)"
        return _error(exc.status_code, detail)

    async def read_json_body(request: Request) -> bytes:
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise unsupported(f"Content-Type {ctype or '(none)'!r}; expected application/json")
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                raise bad_request(f"Content-Length {declared!r}: not a number") from None
            if n > cfg.max_body_bytes:
                raise too_large(f"request body of {n} bytes; the limit is {cfg.max_body_bytes} "
                                "(iis-serve --max-body-mb)")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cfg.max_body_bytes:
                raise too_large(f"request body over {cfg.max_body_bytes} bytes (iis-serve --max-body-mb)")
            chunks.append(chunk)
        return b"".join(chunks)

    def parse(body: bytes) -> Any:
        if not body:
            raise bad_request("request body: empty; expected a JSON object")
        try:
            return json.loads(body)
        except UnicodeDecodeError:
            raise bad_request("request body: not UTF-8 text; expected a JSON object") from None
        except json.JSONDecodeError as e:
            raise bad_request(f"request body: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None

    async def serve_json(request: Request, handler: Callable[[Segmenter, Any, ServeConfig], dict]) -> Response:
        t0 = time.perf_counter()
        status, admitted = 200, False
        try:
            body = await read_json_body(request)
            if not admission.enter():
                status = 503
                return _error(503, f"server busy: {cfg.max_queue} requests in progress (iis-serve --max-queue); retry")
            admitted = True
            out = await run_in_threadpool(lambda: handler(seg, parse(body), cfg))
            return JSONResponse(out)
        except RequestError as e:
            status = e.status
            return _error(e.status, str(e))
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer
            status = 499
            return Response(status_code=400)
        except Exception as e:  # noqa: BLE001 - a method failing on one request must not stop the server
            status = 500
            log.exception("%s %s: %s failed", request.method, request.url.path, seg.name)
            first = str(e).splitlines()[0][:300] if str(e) else ""
            return _error(500, f"{seg.name} failed on this request ({type(e).__name__}: {first}); see the server log")
        finally:
            if admitted:
                admission.leave()
            log.info("%s %s -> %d in %.1f ms", request.method, request.url.path, status,
                     (time.perf_counter() - t0) * 1000.0)

    def health() -> dict[str, Any]:
        return {"status": "ok", "method": seg.name, "is_model": seg.is_model, "note": seg.note,
                "protocol": seg.protocol.name, "threshold": seg.protocol.threshold, "device": str(seg.device),
                "cache": seg.cache_info(), "iis": __version__,
                "limits": {"max_body_bytes": cfg.max_body_bytes, "max_image_pixels": cfg.max_image_pixels,
                           "max_clicks": cfg.max_clicks, "max_queue": cfg.max_queue},
                "labelstudio_root": cfg.ls_root is not None}

    @app.get("/health")
    async def _health():
        return health()

    @app.post("/predict")
    async def _predict(request: Request):
        return await serve_json(request, handle_predict)

    @app.post("/cvat")
    async def _cvat(request: Request):
        return await serve_json(request, handle_cvat)

    @app.get("/labelstudio/health")
    @app.get("/labelstudio/")
    @app.get("/labelstudio")
    async def _ls_health():
        return {"status": "UP", "model_class": f"iis:{seg.name}"}

    @app.post("/labelstudio/setup")
    async def _ls_setup(request: Request):
        return await serve_json(request, handle_ls_setup)

    @app.post("/labelstudio/predict")
    async def _ls_predict(request: Request):
        return await serve_json(request, handle_ls_predict)

    @app.post("/labelstudio/webhook")
    async def _ls_webhook():  # training events: iis does not train from Label Studio annotations
        return {"status": "ignored: iis-serve does not train from Label Studio annotations"}

    @app.get("/")
    async def _index():
        return Response(_static("index.html"), media_type=STATIC_FILES["index.html"])

    @app.get("/static/{name}")
    async def _files(name: str):
        if name not in STATIC_FILES:
            return _error(404, f"/static/{name}: no such file")
        return Response(_static(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    return app


class BackgroundServer:
    """Run an app with uvicorn in a daemon thread on ``host:port`` (port 0 = a free one), e.g. in tests,
    benchmarks and notebooks. ``url`` is ``http://host:port``; ``stop()`` shuts it down."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.sock = bind_socket(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name=f"iis-serve:{self.port}")
        self.thread.start()
        deadline = time.monotonic() + 30.0
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"iis-serve: the server on {self.url} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10.0)
        self.sock.close()

    def __enter__(self) -> "BackgroundServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port``, or one line saying why not (address in use, bad host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"--host {host!r}: cannot be resolved ({e.strerror})") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"--host {host} --port {port}: cannot listen ({e.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
