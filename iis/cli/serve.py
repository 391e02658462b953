"""``iis-serve``: serve a method over HTTP (demo at ``/``, ``/predict``, ``/cvat``, ``/labelstudio``), or write
the CVAT Nuclio function for it.

    iis-serve --method random_walker                      # demo on http://127.0.0.1:8000/
    iis-serve --method simpleclick_vit_base --weights w.pth --device cuda --host 0.0.0.0 --port 8000
    iis-serve --ckpt runs/x/checkpoints/last.ckpt --ls-root ~/label-studio-files
    iis-serve cvat-function --method ritm_hrnet18 --weights w.pth --out cvat-iis-ritm

Needs the ``serve`` extra (FastAPI, uvicorn) to serve; ``cvat-function`` needs only iis. Exit 2 with one
line on bad arguments (unknown method, missing file, port in use).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

__all__ = ["main", "build_parser", "build_function_parser"]

PROG = "iis-serve"


def _add_method_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--method", help="model or training-free method name (iis-eval --list), or an .onnx file")
    src.add_argument("--ckpt", help="checkpoint written by iis-train")
    p.add_argument("--weights", help="state dict for --method (as iis-eval --weights)")
    p.add_argument("--method-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="builder keyword argument (YAML value), repeatable (as iis-eval --method-arg)")
    p.add_argument("--threshold", type=float, default=None,
                   help="probability threshold of the masks (default: the method's protocol threshold)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog=f"{PROG} cvat-function --help: write the CVAT Nuclio function instead",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_method_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = any free port, printed)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--protocol", default=None, help="protocol preset (default: the method's own)")
    p.add_argument("--cache-size", type=int, default=8,
                   help="images whose image-only state is kept (LRU; default 8)")
    p.add_argument("--cache-mb", type=float, default=1024.0,
                   help="and at most this many MiB of it (default 1024)")
    p.add_argument("--max-clicks", type=int, default=100, help="most clicks per request (default 100)")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                   help="largest image, width x height (default 16777216 = 4096^2)")
    p.add_argument("--max-body-mb", type=float, default=32.0, help="largest request body, MiB (default 32)")
    p.add_argument("--max-queue", type=int, default=32, help="requests in progress at once; more get 503 (default 32)")
    p.add_argument("--ls-root", default=None,
                   help="folder Label Studio task images are read from (local-files document root, or Label "
                        "Studio's data folder for uploads); default: only data: URLs")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def build_function_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} cvat-function",
                                description="Write a CVAT interactor Nuclio function (function.yaml, "
                                            "function-gpu.yaml, main.py) that runs iis with one method.")
    _add_method_args(p)
    p.add_argument("--out", required=True, help="folder to write the function into (created)")
    p.add_argument("--pip-spec", default="iis",
                   help="what `pip install` installs iis from in the image build (default 'iis', a marked "
                        "placeholder: iis is not on PyPI yet; e.g. a wheel path or your repository's pip URL)")
    p.add_argument("--timeout", type=int, default=60, help="Nuclio eventTimeout, seconds (default 60)")
    return p


def _parse_kv(items: Sequence[str]) -> dict:
    import yaml

    out = {}
    for it in items:
        if "=" not in it:
            raise ValueError(f"--method-arg {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _function(argv: Sequence[str]) -> int:
    args = build_function_parser().parse_args(argv)
    from ..serve.nuclio import write_cvat_function

    if args.ckpt and args.weights:
        raise ValueError("--weights: only with --method (a checkpoint carries its own weights)")
    if args.timeout < 1:
        raise ValueError(f"--timeout {args.timeout}: expected >= 1 second")
    files = write_cvat_function(args.out, args.method or args.ckpt, weights=args.weights, threshold=args.threshold,
                                kwargs=_parse_kv(args.method_arg), pip_spec=args.pip_spec, timeout_s=args.timeout)
    for f in files:
        print(f"wrote {f}")
    print(f"deploy: nuctl deploy --project-name cvat --path {args.out} --file {args.out}/function.yaml --platform local"
          f"  (GPU: --file {args.out}/function-gpu.yaml)")
    if "iis" == args.pip_spec:
        print("note: the build installs `pip install iis` (a placeholder: iis is not on PyPI yet); edit it or pass "
              "--pip-spec", file=sys.stderr)
    return 0


def _serve(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.ckpt and args.weights:
        raise ValueError("--weights: only with --method (a checkpoint carries its own weights)")
    for name in ("cache_size", "max_clicks", "max_image_pixels", "max_queue"):
        if getattr(args, name) < (0 if name == "cache_size" else 1):
            raise ValueError(f"--{name.replace('_', '-')} {getattr(args, name)}: expected a positive number")
    if args.max_body_mb <= 0 or args.cache_mb < 0:
        raise ValueError("--max-body-mb / --cache-mb: expected positive sizes")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: expected 0..65535")
    try:
        import uvicorn  # noqa: F401
        import fastapi  # noqa: F401
    except ImportError as e:
        raise ValueError(f"serving needs the serve extra: pip install 'iis[serve]' ({e.name} is missing)") from None

    from pathlib import Path

    import iis

    from ..serve.app import bind_socket, create_app
    from ..serve.config import ServeConfig

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    cfg = ServeConfig(max_body_bytes=int(args.max_body_mb * 1024 * 1024), max_image_pixels=args.max_image_pixels,
                      max_clicks=args.max_clicks, max_queue=args.max_queue,
                      ls_root=Path(args.ls_root).expanduser() if args.ls_root else None)
    sock = bind_socket(args.host, args.port)  # before loading: a port in use fails in a second, not a minute
    seg = iis.load(args.method or args.ckpt, weights=args.weights, device=args.device, protocol=args.protocol,
                   threshold=args.threshold, kwargs=_parse_kv(args.method_arg), cache_size=args.cache_size,
                   cache_bytes=int(args.cache_mb * 1024 * 1024))
    if seg.note:
        print(f"{PROG}: note: {seg.note}", file=sys.stderr)
    app = create_app(seg, cfg)
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"{PROG}: serving {seg.name} on http://{shown}:{port}/ (demo at /, POST /predict, POST /cvat, "
          f"/labelstudio); Ctrl+C stops", flush=True)
    config = uvicorn.Config(app, log_level=args.log_level, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "cvat-function":
            return _function(argv[1:])
        return _serve(argv)
    except (ValueError, FileNotFoundError, FileExistsError, OSError) as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
